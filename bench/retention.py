"""Retention against compression: every memory system on the same sessions and budgets.

Each session is replayed through each system under a budget of a share (default
10%, 25%, 50%) of its own tokens, and the final view is scored:

- LoCoMo: the answer score per question category, loose (every content word of
  the gold answer is in the view) and strict (in one line together with a word
  of the question); category 5 left out;
- tau-bench airline: each trajectory cut just before its last write action; the
  share of the gold write actions' argument values that appeared earlier in it
  (ids, names, dates, flight numbers, amounts) still verbatim in the view;
- BFCL memory: a scenario's prerequisite conversations fed in order; the share of
  its questions whose gold answer (any alternative) is verbatim in the view.

Compression is the session's tokens over the view's (o200k_base, a system
prompt that every system keeps left out of both); time is the seconds a system
spent on the replay (model loading apart). Systems: bench/peers.py.

The model-backed systems run SmolLM2-135M on the CPU, and every distillation or
summary costs seconds of generation, so by default every system runs on a quick
subset: the first LoCoMo conversation cut after its 3rd session (the questions
whose evidence lies in sessions 1-3), the first tau-bench trajectory, and the
BFCL notetaker scenario; the model-free systems then run again on all of the data.
Flags take more (``--locomo 3 --locomo-sessions 0 --tau 6 --bfcl finance,...``);
``--all-data`` runs everything on everything (many hours on a CPU).

    python -m bench.retention [--budgets 0.1,0.25,0.5] [--systems full,extractive,...]
        [--datasets locomo,tau,bfcl] [--locomo N] [--tau N] [--bfcl a,b] [--all-data]
        [--no-wide] [--summary-max-tokens 128] [--json PATH] [--plot PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages

from bench.datasets import (
    BFCL_MEMORY_DIR,
    BFCL_SCENARIOS,
    LOCOMO_CATEGORIES,
    LOCOMO_PATH,
    TAU_AIRLINE_PATH,
    Replay,
    load_bfcl_memory,
    load_locomo,
    load_tau_airline,
)
from bench.peers import (
    MODEL_FREE,
    SUMMARY_MAX_TOKENS,
    Case,
    Outcome,
    System,
    is_summary_message,
    make_systems,
    tokens_of,
)
from bench.scoring import (
    QAResult,
    answer_retention,
    retained_values,
    score_questions,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "bench" / "out"
DATASETS = ("locomo", "tau", "bfcl")
DATASET_TITLES = {
    "locomo": "LoCoMo answer score (loose)",
    "tau": "tau-bench airline: gold values kept",
    "bfcl": "BFCL memory: gold answers kept",
}
DEFAULT_BUDGETS = (0.10, 0.25, 0.50)
QUICK_LOCOMO = 1
QUICK_TAU = 1
QUICK_LOCOMO_SESSIONS = 3
QUICK_BFCL = ("notetaker",)


# ------------------------------------------------------------------ sessions


@dataclass
class Session:
    """A replay of a data set and the case the systems see."""

    dataset: str
    replay: Replay
    case: Case


def to_messages(replay: Replay) -> list[BaseMessage]:
    return list(convert_to_messages(replay.messages))


def session(dataset: str, replay: Replay) -> Session:
    return Session(dataset, replay, Case.build(dataset, replay.id, to_messages(replay)))


_SESSION_HEADER = re.compile(r"Session (\d+) — ")
_EVIDENCE = re.compile(r"D(\d+)")


def locomo_evidence(path: str | Path = LOCOMO_PATH) -> dict[str, list[int]]:
    """Question id -> the session numbers its evidence lies in (empty when unparsable)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    evidence = {}
    for sample in data:
        for index, qa in enumerate(sample["qa"]):
            sessions = []
            for item in qa.get("evidence") or []:
                match = _EVIDENCE.match(str(item).strip())
                if match:
                    sessions.append(int(match.group(1)))
            evidence[f"{sample['sample_id']}/q{index}"] = sessions
    return evidence


def first_sessions(replay: Replay, sessions: int, evidence: dict[str, list[int]]) -> Replay:
    """A LoCoMo replay cut after its first ``sessions`` sessions, keeping the questions
    whose evidence lies entirely in them."""
    end = len(replay.messages)
    for index, message in enumerate(replay.messages):
        match = _SESSION_HEADER.match(str(message.get("content", "")))
        if message.get("role") == "user" and match and int(match.group(1)) > sessions:
            end = index
            break
    questions = [
        q for q in replay.questions if evidence.get(q.id) and max(evidence[q.id]) <= sessions
    ]
    return Replay(
        id=f"{replay.id}[s1-{sessions}]",
        messages=replay.messages[:end],
        questions=questions,
        gold_values=list(replay.gold_values),
        meta={**replay.meta, "sessions": sessions},
    )


def spaced(items: Sequence[Any], n: int | None) -> list[Any]:
    """``n`` items evenly spaced over ``items`` (all of them when n is None or too big)."""
    if n is None or n >= len(items):
        return list(items)
    if n <= 0:
        return []
    return [items[(i * len(items)) // n] for i in range(n)]


def load_sessions(
    datasets: Iterable[str],
    locomo: int | None,
    tau: int | None,
    bfcl: Sequence[str] | None,
    data: dict[str, Path] | None = None,
    locomo_sessions: int | None = None,
) -> list[Session]:
    """Sessions of the chosen data sets; ``None`` sizes mean all of that data set.

    ``locomo_sessions`` cuts each LoCoMo conversation after that many of its
    sessions (questions whose evidence lies beyond are left out)."""
    paths = {"locomo": LOCOMO_PATH, "tau": TAU_AIRLINE_PATH, "bfcl": BFCL_MEMORY_DIR}
    paths.update(data or {})
    sessions: list[Session] = []
    for dataset in datasets:
        if not Path(paths[dataset]).exists():
            raise SystemExit(f"{dataset}: no data at {paths[dataset]} (see ../shared/data)")
        if dataset == "locomo":
            replays = load_locomo(paths["locomo"], locomo)
            if locomo_sessions is not None:
                evidence = locomo_evidence(paths["locomo"])
                replays = [first_sessions(r, locomo_sessions, evidence) for r in replays]
        elif dataset == "tau":
            replays = spaced(load_tau_airline(paths["tau"]), tau)
        elif dataset == "bfcl":
            wanted = set(bfcl) if bfcl is not None else set(BFCL_SCENARIOS)
            replays = [r for r in load_bfcl_memory(paths["bfcl"]) if r.id in wanted]
        else:
            raise SystemExit(f"unknown data set {dataset!r}; known: {', '.join(DATASETS)}")
        sessions.extend(session(dataset, r) for r in replays)
    return sessions


# ------------------------------------------------------------------ scores


@dataclass
class Cell:
    """One system on one data set at one budget, pooled over sessions."""

    system: str
    dataset: str
    fraction: float
    qa: QAResult = field(default_factory=QAResult)
    found: int = 0  # tau: gold values kept; bfcl: questions whose answer is kept
    total: int = 0
    history_tokens: int = 0
    view_tokens: int = 0
    seconds: float = 0.0
    sessions: int = 0
    notes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    @property
    def compression(self) -> float:
        return self.history_tokens / self.view_tokens if self.view_tokens > 0 else float("nan")

    @property
    def score(self) -> float:
        """The data set's headline: LoCoMo loose, tau values kept, BFCL answers kept."""
        if self.dataset == "locomo":
            return self.qa.total.loose_score
        return self.found / self.total if self.total else float("nan")

    @property
    def ok(self) -> bool:
        return self.sessions > 0 and not self.errors

    def add(self, item: Session, outcome: Outcome) -> None:
        if outcome.error is not None:
            self.errors.append(f"{item.replay.id}: {outcome.error}")
            return
        qa, found, total = score_view(item, outcome.view)
        self.qa = self.qa.merge(qa)
        self.found += found
        self.total += total
        self.history_tokens += item.case.tokens
        self.view_tokens += max(tokens_of(outcome.view) - item.case.pinned_tokens, 0)
        self.seconds += outcome.seconds
        self.sessions += 1
        self.notes.update(outcome.notes)

    def as_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "dataset": self.dataset,
            "budget": self.fraction,
            "score": self.score,
            "loose": self.qa.total.loose_score if self.qa.total.n else None,
            "strict": self.qa.total.strict_score if self.qa.total.n else None,
            "questions": self.qa.total.n,
            "by_category": {
                c: {"loose": t.loose_score, "strict": t.strict_score, "n": t.n}
                for c, t in sorted(self.qa.by_category.items())
            },
            "found": self.found,
            "total": self.total,
            "history_tokens": self.history_tokens,
            "view_tokens": self.view_tokens,
            "compression": self.compression,
            "seconds": self.seconds,
            "sessions": self.sessions,
            "notes": dict(self.notes),
            "errors": self.errors,
        }


def score_view(item: Session, view: Sequence[BaseMessage]) -> tuple[QAResult, int, int]:
    """(LoCoMo/BFCL question tallies, found, total) of one final view."""
    replay = item.replay
    if item.dataset == "tau":
        found, total = retained_values(view, replay.gold_values)
        return QAResult(), found, total
    qa = score_questions(view, replay.questions, is_summary_message)
    if item.dataset == "bfcl":
        found, total = answer_retention(view, replay.questions)
        return qa, found, total
    return qa, 0, 0


# ------------------------------------------------------------------ running


@dataclass
class Run:
    """Every cell of one evaluation, plus what could not run."""

    cells: dict[tuple[str, str, float], Cell] = field(default_factory=dict)
    not_run: dict[str, str] = field(default_factory=dict)
    setup_seconds: dict[str, float] = field(default_factory=dict)
    sessions: dict[str, list[str]] = field(default_factory=dict)
    questions: dict[str, int] = field(default_factory=dict)

    def cell(self, system: str, dataset: str, fraction: float) -> Cell | None:
        return self.cells.get((system, dataset, fraction))


def budget_of(case: Case, fraction: float) -> int:
    return max(1, int(case.tokens * fraction))


def evaluate(
    systems: Sequence[System],
    sessions: Sequence[Session],
    budgets: Sequence[float],
    log: Any = None,
) -> Run:
    """Replay every session through every system at every budget."""
    run = Run()
    for item in sessions:
        run.sessions.setdefault(item.dataset, []).append(item.replay.id)
        run.questions[item.dataset] = (
            run.questions.get(item.dataset, 0)
            + sum(q.scored for q in item.replay.questions)
            + (len(item.replay.gold_values) if item.dataset == "tau" else 0)
        )
    datasets = list(dict.fromkeys(s.dataset for s in sessions))
    for system in systems:
        reason = system.available()
        if reason is not None:
            run.not_run[system.name] = reason
            _say(log, f"{system.name}: not run: {reason}")
            continue
        started = time.perf_counter()
        try:
            system.setup()
        except Exception as exc:
            run.not_run[system.name] = f"setup failed: {type(exc).__name__}: {exc}"
            _say(log, f"{system.name}: not run: {run.not_run[system.name]}")
            continue
        run.setup_seconds[system.name] = time.perf_counter() - started
        for dataset in datasets:
            items = [s for s in sessions if s.dataset == dataset]
            jobs = [(s, f) for f in budgets for s in items]
            outcomes = _run_jobs(system, [(s.case, budget_of(s.case, f)) for s, f in jobs])
            for (item, fraction), outcome in zip(jobs, outcomes, strict=True):
                key = (system.name, dataset, fraction)
                cell = run.cells.setdefault(key, Cell(system.name, dataset, fraction))
                cell.add(item, outcome)
            for fraction in budgets:
                cell = run.cells[(system.name, dataset, fraction)]
                _say(log, progress_line(cell))
    return run


@dataclass(frozen=True)
class Plan:
    """What a run covers, in a form a worker process can rebuild it from."""

    datasets: tuple[str, ...]
    budgets: tuple[float, ...]
    locomo: int | None = QUICK_LOCOMO
    tau: int | None = QUICK_TAU
    bfcl: tuple[str, ...] | None = QUICK_BFCL
    locomo_sessions: int | None = QUICK_LOCOMO_SESSIONS
    summary_max_tokens: int = SUMMARY_MAX_TOKENS
    threads: int = 1

    def sessions(self) -> list[Session]:
        return load_sessions(
            self.datasets, self.locomo, self.tau, self.bfcl, None, self.locomo_sessions
        )


#: The costliest first, so that parallel workers finish together.
COST_ORDER = (
    "summarization_mw",
    "chat_model",
    "generative",
    "llmlingua",
    "langmem",
    "lingua",
)


def _evaluate_one(plan: Plan, name: str) -> Run:
    """A worker process: one system over the plan's sessions."""
    os.environ["OMP_NUM_THREADS"] = str(plan.threads)
    _set_threads(plan.threads)
    system = make_systems(plan.summary_max_tokens)[name]
    return evaluate([system], plan.sessions(), plan.budgets, log=sys.stdout)


def merge(runs: Iterable[Run]) -> Run:
    merged = Run()
    for run in runs:
        merged.cells.update(run.cells)
        merged.not_run.update(run.not_run)
        merged.setup_seconds.update(run.setup_seconds)
        if run.sessions and not merged.sessions:
            merged.sessions, merged.questions = run.sessions, run.questions
    return merged


def evaluate_parallel(plan: Plan, names: Sequence[str], jobs: int) -> Run:
    """``evaluate`` with one process per system, ``jobs`` at a time, costliest first."""
    if jobs <= 1:
        catalogue = make_systems(plan.summary_max_tokens)
        return evaluate([catalogue[n] for n in names], plan.sessions(), plan.budgets, sys.stdout)
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    order = sorted(names, key=lambda n: COST_ORDER.index(n) if n in COST_ORDER else len(COST_ORDER))
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {name: pool.submit(_evaluate_one, plan, name) for name in order}
        runs = {name: future.result() for name, future in futures.items()}
    return merge(runs[name] for name in names)


def _run_jobs(system: System, jobs: list[tuple[Case, int]]) -> list[Outcome]:
    try:
        return system.run_many(jobs)
    except Exception as exc:  # one system failing must not sink the others
        error = f"{type(exc).__name__}: {exc}"
        return [Outcome(view=list(case.messages), seconds=0.0, error=error) for case, _ in jobs]


def _say(log: Any, text: str) -> None:
    if log is not None:
        print(text, file=log, flush=True)


def progress_line(cell: Cell) -> str:
    if not cell.ok:
        return (
            f"{cell.system:<17} {cell.dataset:<7} {cell.fraction:>4.0%}  FAILED: {cell.errors[:1]}"
        )
    extra = ""
    if cell.dataset == "locomo":
        extra = f" strict {cell.qa.total.strict_score:.3f}"
    return (
        f"{cell.system:<17} {cell.dataset:<7} {cell.fraction:>4.0%}  score {cell.score:.3f}"
        f"{extra}  {cell.compression:5.2f}x  {cell.seconds:7.1f} s"
    )


# ------------------------------------------------------------------ reports


def _cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    if not cell.ok:
        return "failed"
    if cell.dataset == "locomo":
        score = f"{cell.qa.total.loose_score:.3f} / {cell.qa.total.strict_score:.3f}"
    else:
        score = f"{cell.score:.3f}"
    return f"{score} · {cell.compression:.1f}x · {_seconds(cell.seconds)}"


def _seconds(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def results_tables(
    run: Run, systems: Sequence[System], budgets: Sequence[float], title_suffix: str = ""
) -> str:
    """One markdown table per data set: rows are systems, columns budgets."""
    out = []
    datasets = [d for d in DATASETS if d in run.sessions]
    for dataset in datasets:
        ids = run.sessions[dataset]
        what = {
            "locomo": f"loose / strict over {run.questions[dataset]} questions",
            "tau": f"share of {run.questions[dataset]} gold values kept",
            "bfcl": f"share of {run.questions[dataset]} questions whose answer is kept",
        }[dataset]
        shown = ", ".join(ids) if len(ids) <= 6 else f"{len(ids)} sessions"
        out.append(
            f"**{DATASET_TITLES[dataset].split(':')[0].split(' answer')[0]}** "
            f"({shown}; {what}){title_suffix}; each cell: score · compression · time"
        )
        out.append("")
        header = "| system | " + " | ".join(f"budget {f:.0%}" for f in budgets) + " |"
        out.append(header)
        out.append("| --- " * (len(budgets) + 1) + "|")
        for system in systems:
            if system.name in run.not_run:
                out.append(f"| {system.label} | " + " | ".join("not run" for _ in budgets) + " |")
                continue
            cells = [run.cell(system.name, dataset, f) for f in budgets]
            if all(c is None for c in cells):
                continue
            out.append(f"| {system.label} | " + " | ".join(_cell_text(c) for c in cells) + " |")
        out.append("")
    return "\n".join(out)


def category_table(run: Run, systems: Sequence[System], fraction: float) -> str:
    """LoCoMo per question category at one budget, loose / strict."""
    cells = [(s, run.cell(s.name, "locomo", fraction)) for s in systems]
    cells = [(s, c) for s, c in cells if c is not None and c.ok]
    if not cells:
        return ""
    categories = sorted({k for _, c in cells for k in c.qa.by_category}, key=int)
    names = [LOCOMO_CATEGORIES.get(int(k), k) for k in categories]
    counts = [cells[0][1].qa.by_category[k].n for k in categories]
    lines = [
        f"LoCoMo per category at budget {fraction:.0%}, loose / strict "
        f"(questions: {', '.join(f'{n} {c}' for n, c in zip(names, counts, strict=True))})",
        "",
        "| system | " + " | ".join(names) + " |",
        "| --- " * (len(names) + 1) + "|",
    ]
    for system, cell in cells:
        row = [
            f"{cell.qa.by_category[k].loose_score:.3f} / {cell.qa.by_category[k].strict_score:.3f}"
            if k in cell.qa.by_category
            else "–"
            for k in categories
        ]
        lines.append(f"| {system.label} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def notes_lines(run: Run, systems: Sequence[System]) -> str:
    """What happened inside the systems: distillations, summaries, failures, overflows."""
    lines = []
    for system in systems:
        for (name, dataset, fraction), cell in sorted(run.cells.items()):
            if name != system.name:
                continue
            if cell.errors:
                lines.append(f"- {name} {dataset} {fraction:.0%}: errors: {cell.errors[0]}")
            shown = {k: v for k, v in sorted(cell.notes.items()) if v}
            if shown:
                text = ", ".join(f"{k} {v}" for k, v in shown.items())
                lines.append(f"- {name} {dataset} {fraction:.0%}: {text}")
    for name, reason in run.not_run.items():
        lines.append(f"- {name}: not run: {reason}")
    return "\n".join(lines)


def _panel_title(run: Run, dataset: str) -> str:
    ids = run.sessions.get(dataset, [])
    shown = ids[0] if len(ids) == 1 else f"{len(ids)} sessions"
    return f"{DATASET_TITLES[dataset]}\n{shown}, {run.questions.get(dataset, 0)} items"


def plot(
    rows: Sequence[tuple[str, Run, Sequence[System]]],
    path: Path,
    title: str,
) -> Path:
    """Retention against compression, one line per system across budgets.

    One row of panels (one per data set) for each (row title, run, systems);
    a system keeps its colour and marker in every row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DATASETS if any(d in run.sessions for _, run, _ in rows)]
    fig, axes = plt.subplots(
        len(rows),
        len(datasets),
        figsize=(4.3 * len(datasets), 3.5 * len(rows) + 0.9),
        squeeze=False,
    )
    markers = "os^vD<>pPX*h"
    style: dict[str, tuple[str, str]] = {}
    for _, _, systems in rows:
        for system in systems:
            index = len(style)
            style.setdefault(system.name, (markers[index % len(markers)], f"C{index % 10}"))
    handles: dict[str, Any] = {}
    for row, (row_title, run, systems) in enumerate(rows):
        for ax, dataset in zip(axes[row], datasets, strict=True):
            for system in systems:
                cells = [
                    c
                    for (name, d, _), c in run.cells.items()
                    if name == system.name and d == dataset and c.ok
                ]
                if not cells:
                    continue
                cells.sort(key=lambda c: c.compression)
                xs = [c.compression for c in cells]
                ys = [c.score for c in cells]
                full = system.name == "full"
                marker, colour = style[system.name]
                (line,) = ax.plot(
                    xs[:1] if full else xs,
                    ys[:1] if full else ys,
                    marker=marker,
                    linestyle="none" if full else "-",
                    markersize=9 if full else 5,
                    linewidth=2.2 if system.name == "extractive" else 1.2,
                    label=system.label,
                    color=colour,
                )
                handles.setdefault(system.label, line)
            ax.set_xscale("log")
            ax.set_ylim(0, 1.02)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{row_title}: {_panel_title(run, dataset)}", fontsize=8.5)
            if row == len(rows) - 1:
                ax.set_xlabel("compression (history tokens / view tokens)", fontsize=8.5)
            if dataset == datasets[0]:
                ax.set_ylabel("retention", fontsize=8.5)
            ax.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=10)
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="lower center",
        ncol=min(5, len(handles)),
        fontsize=8,
        frameon=False,
    )
    fig.tight_layout(rect=(0, 0.9 / (3.5 * len(rows) + 0.9), 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=72)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ command line


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budgets", default=",".join(str(b) for b in DEFAULT_BUDGETS))
    parser.add_argument("--systems", default=None, help="comma-separated; default: all")
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--locomo", type=int, default=QUICK_LOCOMO, help="first N conversations")
    parser.add_argument(
        "--locomo-sessions",
        type=int,
        default=QUICK_LOCOMO_SESSIONS,
        help="cut each conversation after its first K sessions (0: whole conversations)",
    )
    parser.add_argument("--tau", type=int, default=QUICK_TAU, help="N evenly spaced trajectories")
    parser.add_argument("--bfcl", default=",".join(QUICK_BFCL), help="scenarios")
    parser.add_argument("--all-data", action="store_true", help="every system on all data")
    parser.add_argument(
        "--no-wide",
        action="store_true",
        help="skip the second pass of the model-free systems over all data",
    )
    parser.add_argument("--summary-max-tokens", type=int, default=SUMMARY_MAX_TOKENS)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on a busy 2-core machine two threads decoded 5x slower)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="systems run in this many processes at once (one torch thread each)",
    )
    parser.add_argument("--json", default=str(OUT_DIR / "retention.json"))
    parser.add_argument("--plot", default=str(OUT_DIR / "retention.png"))
    return parser.parse_args(argv)


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def _set_threads(threads: int) -> None:
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(max(1, threads))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    _set_threads(args.threads)
    started = time.perf_counter()
    budgets = [float(b) for b in _csv(args.budgets)]
    catalogue = make_systems(args.summary_max_tokens)
    names = _csv(args.systems) if args.systems else list(catalogue)
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        raise SystemExit(f"unknown systems {unknown}; known: {', '.join(catalogue)}")
    systems = [catalogue[n] for n in names]
    datasets = tuple(_csv(args.datasets))
    if args.all_data:
        plan = Plan(datasets, tuple(budgets), None, None, None, None)
    else:
        plan = Plan(
            datasets,
            tuple(budgets),
            args.locomo,
            args.tau,
            tuple(_csv(args.bfcl)),
            args.locomo_sessions or None,
        )
    plan = replace(plan, summary_max_tokens=args.summary_max_tokens, threads=args.threads)
    sessions = plan.sessions()
    print(
        f"retention: {len(systems)} systems, budgets {', '.join(f'{b:.0%}' for b in budgets)}, "
        f"{len(sessions)} sessions ({', '.join(datasets)}), {args.jobs} worker(s); "
        f"load average {_load()}",
        flush=True,
    )
    run = evaluate_parallel(plan, names, args.jobs)
    wide: Run | None = None
    wide_systems = [s for s in systems if s.name in MODEL_FREE]
    if not args.all_data and not args.no_wide and wide_systems:
        print("\nmodel-free systems on all data:", flush=True)
        everything = load_sessions(datasets, None, None, None)
        wide = evaluate(wide_systems, everything, budgets, log=sys.stdout)
    elapsed = time.perf_counter() - started

    report = [
        "",
        results_tables(run, systems, budgets),
        category_table(run, systems, 0.25 if 0.25 in budgets else budgets[0]),
    ]
    if wide is not None:
        report += [
            "Model-free systems on all of the data:",
            "",
            results_tables(wide, wide_systems, budgets),
            category_table(wide, wide_systems, 0.25 if 0.25 in budgets else budgets[0]),
        ]
    report += ["What happened inside the systems:", "", notes_lines(run, systems)]
    setup = ", ".join(f"{k} {v:.1f} s" for k, v in run.setup_seconds.items() if v >= 0.05)
    report.append(
        f"\nmodel loading: {setup or 'none'}; wall time {elapsed / 60:.1f} min; "
        f"load average at the end {_load()} ({os.cpu_count()} cores)"
    )
    text = "\n".join(report)
    print(text, flush=True)

    rows: list[tuple[str, Run, Sequence[System]]] = [
        ("all data" if args.all_data else "quick subset", run, systems)
    ]
    if wide is not None:
        rows.append(("all data", wide, wide_systems))
    plot_path = plot(
        rows,
        Path(args.plot),
        "retention against compression, budgets " + ", ".join(f"{b:.0%}" for b in budgets),
    )
    print(f"plot: {plot_path}")
    payload = {
        "argv": list(argv) if argv is not None else sys.argv[1:],
        "jobs": args.jobs,
        "threads": args.threads,
        "budgets": budgets,
        "sessions": run.sessions,
        "wall_seconds": elapsed,
        "setup_seconds": run.setup_seconds,
        "not_run": run.not_run,
        "cells": [c.as_dict() for c in run.cells.values()],
        "wide_cells": [c.as_dict() for c in wide.cells.values()] if wide else [],
    }
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, indent=1, default=float), encoding="utf-8")
    print(f"json: {json_path}")


if __name__ == "__main__":
    main()
