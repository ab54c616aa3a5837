"""LLMLingua 0.2.2 as a reference compressor on the LoCoMo replay.

Runs the published ``llmlingua`` package on SmolLM2-135M-Instruct (the model
the project's own distillers use) at the same budget and on the same data as
the baselines, so the project's numbers can be set beside a known method. It
needs the venv that bench/setup_llmlingua.sh makes:

    bash bench/setup_llmlingua.sh
    .venv-llmlingua/bin/python -m bench.llmlingua_ref [--limit 3] [--budget 0.25]

Each conversation's messages are LLMLingua's contexts (one per message), in
order, with no question (a memory cannot know the question in advance). The
compressed prompt is one message of the view; for the strict score its lines
count as separate lines, like a memory block's facts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.baselines import history_tokens, install_offline_encoding, truncate
from bench.datasets import LOCOMO_PATH, REPO_ROOT, load_locomo
from bench.scoring import QAResult, message_text, score_questions

DEFAULT_MODEL = REPO_ROOT / ".venv-llmlingua" / "models" / "SmolLM2-135M-Instruct"


def make_compressor(model_dir: str | Path, keep_split: bool) -> Any:
    """A PromptCompressor on CPU whose separator tokens are the model's own.

    LLMLingua hard-codes Llama-2's newline id (13) as the separator that
    ``keep_split`` protects; for SmolLM2 that id is ``<jupyter_code>``, so the
    newline id of the loaded tokenizer is passed instead.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # PromptCompressor counts tokens with tiktoken's gpt-3.5-turbo encoding.
    install_offline_encoding("cl100k_base")
    from llmlingua import PromptCompressor

    class _Compressor(PromptCompressor):  # type: ignore[misc]
        def iterative_compress_prompt(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("split_token_id", self.newline_id)
            return super().iterative_compress_prompt(*args, **kwargs)

    compressor = _Compressor(model_name=str(model_dir), device_map="cpu")
    newline = compressor.tokenizer("\n", add_special_tokens=False).input_ids
    compressor.newline_id = newline[-1]
    compressor.keep_split = keep_split
    return compressor


def compress(compressor: Any, contexts: list[str], fraction: float) -> dict[str, Any]:
    """LLMLingua at ``fraction`` of the contexts' tokens in its own model's units."""
    own_tokens = sum(compressor.get_token_length(c) for c in contexts)
    result: dict[str, Any] = compressor.compress_prompt(
        contexts,
        target_token=int(own_tokens * fraction),
        keep_split=compressor.keep_split,
    )
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(LOCOMO_PATH), help="path to locomo10.json")
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="SmolLM2 HF folder")
    parser.add_argument("--budget", type=float, default=0.25, help="budget, share of history")
    parser.add_argument("--limit", type=int, default=3, help="first N conversations")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: on a shared 2-core machine two threads spin-wait "
        "on each other; measured 66 vs 18 tokens/s under load)",
    )
    parser.add_argument(
        "--no-keep-split",
        action="store_true",
        help="let LLMLingua prune the blank lines between messages too",
    )
    args = parser.parse_args(argv)
    if not Path(args.model, "config.json").exists():
        sys.exit(f"no model at {args.model}: run bash bench/setup_llmlingua.sh first")

    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    compressor = make_compressor(args.model, keep_split=not args.no_keep_split)
    load_s = time.perf_counter() - started
    lingua, trunc = QAResult(), QAResult()
    hist_total = lingua_total = trunc_total = oai_origin = oai_compressed = 0
    compress_s = cpu_s = 0.0
    print(
        f"LLMLingua reference: {args.model}, budget {args.budget:.0%}, "
        f"{args.threads} thread(s), model load {load_s:.1f}s, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'conv':<8} {'tokens':>7} {'loose':>6} {'strict':>7} {'compr.':>7} {'tok/s':>6}")
    for replay in load_locomo(args.data, args.limit):
        hist = history_tokens(replay.messages)
        budget = int(hist * args.budget)
        contexts = [message_text(m) for m in replay.messages]
        t0, cpu0 = time.perf_counter(), time.process_time()
        out = compress(compressor, contexts, args.budget)
        seconds = time.perf_counter() - t0
        cpu_s += time.process_time() - cpu0
        # One message holding the compressed prompt; its lines are scored as facts.
        view = [{"role": "user", "content": out["compressed_prompt"], "memory": True}]
        result = score_questions(view, replay.questions)
        kept = history_tokens(view)
        lingua = lingua.merge(result)
        trunc_view = truncate(replay.messages, budget)
        trunc = trunc.merge(score_questions(trunc_view, replay.questions))
        hist_total += hist
        lingua_total += kept
        trunc_total += history_tokens(trunc_view)
        oai_origin += out["origin_tokens"]
        oai_compressed += out["compressed_tokens"]
        compress_s += seconds
        print(
            f"{replay.id:<8} {hist:7d} {result.total.loose_score:6.3f} "
            f"{result.total.strict_score:7.3f} {hist / max(kept, 1):6.2f}x {hist / seconds:6.0f}"
        )
        sys.stdout.flush()

    n = lingua.total.n
    print(f"\npooled over {n} questions (category 5 out), o200k tokens with message overhead:")
    print(f"{'system':<11} {'loose':>6} {'strict':>7} {'compr.':>7}")
    print(
        f"{'llmlingua':<11} {lingua.total.loose_score:6.3f} {lingua.total.strict_score:7.3f} "
        f"{hist_total / max(lingua_total, 1):6.2f}x"
    )
    print(
        f"{'truncation':<11} {trunc.total.loose_score:6.3f} {trunc.total.strict_score:7.3f} "
        f"{hist_total / max(trunc_total, 1):6.2f}x"
    )
    print(f"llmlingua's own ratio (cl100k, text only): {oai_origin / max(oai_compressed, 1):.2f}x")
    # Wall-clock speed depends on what else runs; CPU time per thread does not.
    print(
        f"speed: {hist_total / compress_s:.0f} history tokens/s wall clock "
        f"({compress_s:.0f}s for {hist_total} tokens, load average now {os.getloadavg()[0]:.1f}); "
        f"{hist_total / cpu_s * args.threads:.0f} tokens per CPU-second per thread"
    )


if __name__ == "__main__":
    main()
