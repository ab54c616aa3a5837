"""Distillers side by side on LoCoMo: answer score at a budget, compression, speed.

For each distiller the first conversations of LoCoMo are replayed through the
engine (bench/locomo_engine.py) under a budget of a share (default 25%) of each
conversation's tokens; the final view is scored loose and strict
(bench/scoring.py). Speed is the history tokens handed to the distiller per
second spent inside it (wall clock), and per CPU-second the process spent meanwhile
(steadier on a shared machine). Facts are audited independently of the grounding check:
every number and every mid-sentence capitalised word must occur in the source
(or in the date the source's relative dates resolve to).

Where CUDA is present it also sweeps batch sizes: generated tokens per second of
the generative distiller's decoder, and scored tokens per second of the lingua
scorer (against a plain forward pass with a full log-softmax).

    python -m bench.distillers [--limit 3] [--budget 0.25]
        [--distillers extractive,lingua,generative,chat_model] [--device auto]
        [--dtype auto] [--llmlingua] [--sweep] [--scorer-only]
"""

from __future__ import annotations

import os

# On a shared 2-core machine OpenMP threads that spin while waiting lose most of
# their time to other processes; waiting passively measured 4x faster here. Set
# before torch loads (the LLMLingua subprocess inherits it too).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, convert_to_messages
from langchain_core.outputs import ChatGeneration, ChatResult

from bench.datasets import LOCOMO_PATH, REPO_ROOT, load_locomo
from bench.locomo_engine import is_memory, replay_conversation
from bench.scoring import QAResult, score_questions
from context_distill.dates import resolve_relative
from context_distill.distillers import Distiller, resolve_distiller
from context_distill.messages import chat_role, text_of
from context_distill.tokens import count_message, encoding_counter
from context_distill.types import Group, GroupFacts

# ------------------------------------------------------------ measuring wrapper

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_CAPITAL = re.compile(r"(?<=[a-z,;] )[A-Z][a-zA-Z]+")
# A digit in a fact is supported by the same cardinal spelled out in the source
# ("two kids" -> "kids: 2"); "a", "an" or "couple" are not cardinals here.
_SPELLED = {
    word: float(value)
    for value, word in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen"
        " fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": 30.0, "forty": 40.0, "fifty": 50.0, "hundred": 100.0, "thousand": 1000.0}


def _audit(fact: str, group: Group) -> bool:
    """True when the fact's numbers and mid-sentence names all occur in its source."""
    source = "\n".join(text_of(m) for m in group.messages)
    source += "\n" + resolve_relative(source, group.anchor)
    if group.anchor is not None:
        source += f"\n{group.anchor:%d %B %Y} {group.anchor.day} {group.anchor.year}"
    lower = source.lower()
    stated = {float(n) for n in _NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3})", "", source))}
    stated |= {_SPELLED[w] for w in re.findall(r"[a-z]+", lower) if w in _SPELLED}
    numbers_ok = all(
        float(n) in stated for n in _NUMBER.findall(re.sub(r"(?<=\d),(?=\d{3})", "", fact))
    )
    names_ok = all(name.lower() in lower for name in _CAPITAL.findall(fact))
    return numbers_ok and names_ok


@dataclass
class Measured(Distiller):
    """Wraps a distiller; counts time, tokens, facts, drops, fallbacks, audit failures."""

    inner: Distiller
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # of the whole process, every thread, while distilling
    tokens: int = 0
    groups: int = 0
    facts: int = 0
    dropped: int = 0
    fallbacks: int = 0
    unsupported: int = 0
    examples: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.inner.name

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        started, cpu = time.perf_counter(), time.process_time()
        results = self.inner.distill(groups)
        self.seconds += time.perf_counter() - started
        self.cpu_seconds += time.process_time() - cpu
        self.tokens += sum(g.tokens for g in groups)
        self.groups += len(groups)
        for group, result in zip(groups, results, strict=True):
            self.dropped += result.dropped
            self.fallbacks += result.fallback is not None
            for fact in result.facts:
                self.facts += 1
                if not _audit(fact.text, group):
                    self.unsupported += 1
                    if len(self.examples) < 3:
                        self.examples.append(fact.text[:120])
        return results


# ------------------------------------------------------------ a local chat model


class LocalChatModel(BaseChatModel):
    """A LangChain chat model over a local transformers model (the decoder of this
    package), so the chat-model distiller can be measured offline; ``batch``
    generates all prompts in one batched pass."""

    loaded: Any
    max_new_tokens: int = 96

    @property
    def _llm_type(self) -> str:
        return "context-distill-local"

    def _prompts(self, inputs: Sequence[Any]) -> list[list[int]]:
        tokenizer = self.loaded.tokenizer
        out = []
        for messages in inputs:
            chat = [
                {
                    "role": chat_role(m),
                    "content": m.content,
                }
                for m in convert_to_messages(messages)
            ]
            text = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            out.append(tokenizer(text, add_special_tokens=False).input_ids)
        return out

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **_: Any
    ) -> ChatResult:
        [text] = self._answers([messages])
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    def _answers(self, inputs: Sequence[Any]) -> list[str]:
        from context_distill.models.decoding import greedy_generate

        prompts = self._prompts(inputs)
        return greedy_generate(self.loaded, prompts, [self.max_new_tokens] * len(prompts))

    def batch(
        self, inputs: Any, config: Any = None, *, return_exceptions: bool = False, **_: Any
    ) -> Any:
        return [AIMessage(content=text) for text in self._answers(inputs)]


def make_distiller(name: str, device: str, dtype: str) -> Distiller:
    if name == "extractive":
        return resolve_distiller("extractive")
    if name == "lingua":
        from context_distill.distillers.lingua import LinguaDistiller

        return LinguaDistiller(device=device, dtype=dtype)
    if name == "generative":
        from context_distill.distillers.generative import GenerativeDistiller

        return GenerativeDistiller(device=device, dtype=dtype)
    if name == "chat_model":
        from context_distill.distillers.chat_model import ChatModelDistiller
        from context_distill.models.loading import load_model

        return ChatModelDistiller(
            LocalChatModel(loaded=load_model(None, device=device, dtype=dtype))
        )
    raise SystemExit(f"unknown distiller {name!r}")


# ------------------------------------------------------------ LoCoMo


def locomo(args: argparse.Namespace) -> None:
    count = encoding_counter("o200k_base")
    replays = load_locomo(args.data, args.limit)
    threads = ""
    if "torch" in sys.modules:
        threads = f", {sys.modules['torch'].get_num_threads()} CPU thread(s)"
    print(
        f"LoCoMo, first {len(replays)} conversations, budget {args.budget:.0%}, "
        f"device {args.device}, dtype {args.dtype}{threads}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'distiller':<11} {'loose':>6} {'strict':>7} {'compr.':>7} {'tok/s':>8} {'tok/CPU-s':>9} "
        f"{'groups':>7} {'facts':>6} {'dropped':>8} {'fallback':>9} {'unsupp.':>8}"
    )
    for name in args.distillers.split(","):
        distiller = make_distiller(name.strip(), args.device, args.dtype)
        # Load the model and build its tables before the clock starts.
        first = convert_to_messages(replays[0].messages[1:2])
        distiller.distill([Group("warm-up", tuple(first), ("w",), 20, None, 8)])
        measured = Measured(distiller)
        pooled = QAResult()
        tokens_in = tokens_view = 0
        for replay in replays:
            messages = convert_to_messages(replay.messages)
            budget = int(sum(count_message(m, count) for m in messages) * args.budget)
            # No timeout: on a busy CPU a slow batch would otherwise be retried.
            view, _, stats = replay_conversation(messages, budget, measured, distill_timeout_s=None)
            pooled = pooled.merge(score_questions(view, replay.questions, is_memory))
            tokens_in += stats.tokens_in
            tokens_view += stats.tokens_view
        rate = measured.tokens / max(measured.seconds, 1e-9)
        cpu_rate = measured.tokens / max(measured.cpu_seconds, 1e-9)
        print(
            f"{measured.name:<11} {pooled.total.loose_score:6.3f} {pooled.total.strict_score:7.3f} "
            f"{tokens_in / max(tokens_view, 1):6.2f}x {rate:8.0f} {cpu_rate:9.0f} "
            f"{measured.groups:7d} {measured.facts:6d} {measured.dropped:8d} "
            f"{measured.fallbacks:9d} {measured.unsupported:8d}",
            flush=True,
        )
        for example in measured.examples:
            print(f"    unsupported by audit: {example}")


def llmlingua(args: argparse.Namespace) -> None:
    python = REPO_ROOT / ".venv-llmlingua" / "bin" / "python"
    if not python.exists():
        print("\nLLMLingua reference: run `bash bench/setup_llmlingua.sh` first; skipped")
        return
    print("\nLLMLingua reference (bench/llmlingua_ref.py, its own venv):", flush=True)
    command = [str(python), "-m", "bench.llmlingua_ref", "--limit", str(args.limit)]
    command += ["--budget", str(args.budget), "--data", str(args.data)]
    subprocess.run(command, cwd=REPO_ROOT, check=False)


# ------------------------------------------------------------ raw throughput


def scorer_throughput(args: argparse.Namespace) -> None:
    """Scored tokens/s of the lingua scorer and of a plain forward + full log-softmax."""
    import torch

    from context_distill.models.loading import load_model
    from context_distill.models.surprisal import surprisal

    loaded = load_model(None, device=args.device, dtype=args.dtype)
    device = loaded.device
    vocab = int(loaded.model.config.vocab_size)
    length = args.seq_len
    batches = [int(b) for b in args.scorer_batches.split(",")]
    print(f"\nlingua scorer, {device} {loaded.dtype}, sequences of {length} tokens")
    print(f"{'batch':>6} {'scorer tok/s':>13} {'plain tok/s':>12}")
    generator = torch.Generator().manual_seed(0)
    for batch in batches:
        seqs = torch.randint(100, vocab - 100, (batch, length), generator=generator).tolist()
        budget = batch * length

        def ours(seqs: list[list[int]] = seqs, budget: int = budget) -> None:
            surprisal(loaded, seqs, max_batch_tokens=budget)

        def plain(seqs: list[list[int]] = seqs) -> None:
            with torch.inference_mode():
                ids = torch.tensor(seqs, device=device)
                logits = loaded.model(input_ids=ids).logits
                logp = torch.log_softmax(logits.float(), dim=-1)
                logp[:, :-1].gather(-1, ids[:, 1:, None]).cpu()

        rates = []
        for fn in (ours, plain):
            try:
                fn()  # warm up
                _sync(device)
                started = time.perf_counter()
                for _ in range(args.repeats):
                    fn()
                _sync(device)
                rates.append(batch * length * args.repeats / (time.perf_counter() - started))
            except torch.OutOfMemoryError:
                rates.append(float("nan"))
                torch.cuda.empty_cache()
        print(f"{batch:6d} {rates[0]:13,.0f} {rates[1]:12,.0f}", flush=True)


def decoder_throughput(args: argparse.Namespace) -> None:
    """Generated tokens/s of the generative decoder at each batch size (no early stops)."""
    import torch

    from context_distill.models.decoding import is_supported, stop_tables
    from context_distill.models.fast_decoder import FastDecoder
    from context_distill.models.loading import load_model

    loaded = load_model(None, device=args.device, dtype=args.dtype)
    tables = stop_tables(loaded, int(loaded.model.get_output_embeddings().weight.shape[0]))
    off = torch.zeros_like(tables.stop)
    tables = type(tables)(off, off, off, off, tables.content, tables.texts)  # never stop early
    texts = [
        f"Summarise: Caroline told Melanie about support group number {i} and her plans."
        for i in range(max(int(b) for b in args.gen_batches.split(",")))
    ]
    prompts = [loaded.tokenizer(t).input_ids for t in texts]
    steps = args.gen_tokens
    print(
        f"\ngenerative decoder, {loaded.device} {loaded.dtype}, {steps} new tokens a row, "
        f"fast path: {is_supported(loaded.model)}"
    )
    print(f"{'batch':>6} {'tokens/s':>10} {'plain generate tok/s':>21}")
    for batch in (int(b) for b in args.gen_batches.split(",")):
        rows = prompts[:batch]
        decoder = FastDecoder(loaded, tables)
        decoder.run(rows, [steps] * batch, cuda_graphs=True)  # warm up
        _sync(loaded.device)
        started = time.perf_counter()
        decoder.run(rows, [steps] * batch, cuda_graphs=True)
        _sync(loaded.device)
        ours = batch * steps / (time.perf_counter() - started)
        plain = float("nan")
        if args.plain_generate:
            loaded.tokenizer.padding_side = "left"
            enc = loaded.tokenizer(texts[:batch], return_tensors="pt", padding=True).to(
                loaded.device
            )
            started = time.perf_counter()
            with torch.inference_mode():
                loaded.model.generate(
                    **enc,
                    max_new_tokens=steps,
                    min_new_tokens=steps,
                    do_sample=False,
                    pad_token_id=loaded.tokenizer.pad_token_id,
                )
            _sync(loaded.device)
            plain = batch * steps / (time.perf_counter() - started)
        print(f"{batch:6d} {ours:10,.0f} {plain:21,.0f}", flush=True)


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(LOCOMO_PATH))
    parser.add_argument("--limit", type=int, default=3, help="first N LoCoMo conversations")
    parser.add_argument("--budget", type=float, default=0.25)
    parser.add_argument("--distillers", default="extractive,lingua,generative,chat_model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--llmlingua", action="store_true", help="run the LLMLingua reference")
    parser.add_argument("--sweep", action="store_true", help="throughput by batch size")
    parser.add_argument("--scorer-only", action="store_true", help="skip the LoCoMo replay")
    parser.add_argument("--scorer-batches", default="1,8,64,256")
    parser.add_argument("--gen-batches", default="1,2,4,8,16,32,64")
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plain-generate", action="store_true", help="also time generate()")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    if not args.scorer_only:
        locomo(args)
        if args.llmlingua:
            llmlingua(args)
    import torch

    if args.sweep or args.scorer_only or torch.cuda.is_available():
        scorer_throughput(args)
        decoder_throughput(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
