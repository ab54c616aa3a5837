"""Runs LLMLingua jobs for bench/retention.py inside the LLMLingua venv.

Reads one JSON request on stdin, ``{"model": folder, "jobs": [{"contexts": [str],
"fraction": float}]}``, loads the compressor once (bench/llmlingua_ref.py) and
writes one JSON line per job, in order: ``{"compressed_prompt", "seconds"}`` or
``{"error"}``. Only the standard library and llmlingua's own venv are needed.

    .venv-llmlingua/bin/python -m bench.llmlingua_worker < request.json
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any


def main() -> None:
    request: dict[str, Any] = json.loads(sys.stdin.read())
    try:
        threads = int(os.environ.get("OMP_NUM_THREADS", "0"))
        if threads > 0:
            import torch

            torch.set_num_threads(threads)
        from bench.llmlingua_ref import compress, make_compressor

        compressor = make_compressor(request["model"], keep_split=True)
    except Exception as exc:
        failure = f"llmlingua did not load: {type(exc).__name__}: {exc}"
        for _ in request["jobs"]:
            print(json.dumps({"error": failure}), flush=True)
        traceback.print_exc()
        return
    for job in request["jobs"]:
        started = time.perf_counter()
        try:
            out = compress(compressor, job["contexts"], float(job["fraction"]))
            answer = {
                "compressed_prompt": out["compressed_prompt"],
                "seconds": time.perf_counter() - started,
            }
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
