"""Tool-calling trajectories replayed through every memory: what the next commands need.

SWE agent (bench/swe_agent.py): mini-swe-agent runs cut at 80% at an assistant turn;
the score is the share of gold identifiers (paths, names with underscores, numbers
of 3+ digits the commands after the cut use, seen only in early tool output) that
the final view holds word for word. The django runs are the development set; runs
of any other repository in the given files are held out and reported apart.

tau-bench airline: trajectories cut before the last write action; the score is the
share of the gold write arguments seen before the cut that the view holds.

Budgets are the system prompt plus a share of the rest; compression is the
conversation's tokens over the view's (the system prompt left out of both); prefix
reuse is the share of each model call's tokens that repeat the previous call's
prefix, in tokens (the JSON also holds it counted in whole leading messages).
Systems: bench/step_systems.py. The model-backed summariser runs
on the first ``--model-limit`` sessions of each set only (SmolLM2 on a CPU is slow).

    python -m bench.trajectories [--swe PATH ...] [--tau PATH] [--datasets swe,tau]
        [--budgets 0.1,0.25,0.5] [--systems full,truncation,...] [--limit N]
        [--model-limit 2] [--counter chars4] [--json PATH] [--plot PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langchain_core.messages import BaseMessage, convert_to_messages

from bench.datasets import TAU_AIRLINE_PATH, Replay, load_tau_airline
from bench.locomo_engine import engine_options
from bench.scoring import contains_value, is_memory_message, message_text
from bench.step_systems import (
    MODEL_FREE,
    Distill,
    Session,
    StepSystem,
    Trace,
    make_systems,
    text_counter,
)
from bench.swe_agent import SWE_AGENT_PATH, holds, load_swe_agent, split
from bench.tiered_proto import TieredProto

DEFAULT_BUDGETS = (0.10, 0.25, 0.50)
_REFS = re.compile(r"^#[\d,-]+ ", re.M)


def scored_text(view: Sequence[BaseMessage]) -> str:
    """What the model reads, memory blocks without their archive numbers (``#123``
    would otherwise count as a kept number)."""
    parts = []
    for message in view:
        text = message_text(message)
        parts.append(_REFS.sub("", text) if is_memory_message(message) else text)
    return "\n".join(parts)


def kept(dataset: str, text: str, gold: Sequence[str]) -> list[bool]:
    """Which gold items ``text`` holds (identifiers case-sensitive, tau values not)."""
    if dataset == "tau":
        return [contains_value(text, value) for value in gold]
    return [holds(text, ident) for ident in gold]


@dataclass
class Cell:
    """One system on one set at one budget, pooled over sessions."""

    system: str
    group: str
    fraction: float
    found: int = 0
    total: int = 0
    history_tokens: int = 0
    view_tokens: int = 0
    call_tokens: int = 0
    reused_tokens: int = 0
    reused_message_tokens: int = 0
    seconds: float = 0.0
    sessions: int = 0
    notes: Counter[str] = field(default_factory=Counter)
    where: Counter[str] = field(default_factory=Counter)  # distill: where each gold item is
    memory_shares: list[float] = field(default_factory=list)
    memory_tokens: list[int] = field(default_factory=list)

    @property
    def score(self) -> float:
        return self.found / self.total if self.total else float("nan")

    @property
    def compression(self) -> float:
        return self.history_tokens / self.view_tokens if self.view_tokens else float("nan")

    @property
    def reuse(self) -> float:
        return self.reused_tokens / self.call_tokens if self.call_tokens else float("nan")

    def add(self, session: Session, trace: Trace) -> None:
        text = scored_text(trace.view)
        hits = kept(session.dataset, text, session.gold)
        self.found += sum(hits)
        self.total += len(hits)
        self.history_tokens += session.tokens
        self.view_tokens += max(session.tokens_of(trace.view) - session.pinned_tokens, 0)
        self.call_tokens += trace.call_tokens
        self.reused_tokens += trace.reused_tokens
        self.reused_message_tokens += trace.reused_message_tokens
        self.seconds += trace.seconds
        self.sessions += 1
        self.notes.update(trace.notes)
        if "facts" in trace.extra:
            self._locate(session, trace, hits)

    def _locate(self, session: Session, trace: Trace, hits: list[bool]) -> None:
        """Where the distiller's gold items are: shown, stored but hidden, or lost."""
        memory = [m for m in trace.view if is_memory_message(m)]
        rest = [m for m in trace.view if not is_memory_message(m)]
        facts = "\n".join(trace.extra["facts"])
        memory_text = scored_text(memory)
        verbatim = scored_text(rest)
        for item, hit in zip(session.gold, hits, strict=True):
            in_facts = kept(session.dataset, facts, [item])[0]
            if hit and kept(session.dataset, verbatim, [item])[0]:
                self.where["in recent turns"] += 1
            elif hit and kept(session.dataset, memory_text, [item])[0]:
                self.where["in the memory block"] += 1
            elif in_facts:
                self.where["stored, not shown"] += 1
            else:
                self.where["not in any fact"] += 1
        tokens = session.tokens_of(trace.view) - session.pinned_tokens
        self.memory_tokens.append(session.tokens_of(memory))
        self.memory_shares.append(self.memory_tokens[-1] / tokens if tokens > 0 else 0.0)

    def cell_text(self) -> str:
        return f"{self.score:.3f} · {self.compression:.1f}x · {self.reuse:.0%}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "set": self.group,
            "budget": self.fraction,
            "score": self.score,
            "found": self.found,
            "total": self.total,
            "compression": self.compression,
            "prefix_reuse": self.reuse,
            "prefix_reuse_whole_messages": (
                self.reused_message_tokens / self.call_tokens if self.call_tokens else None
            ),
            "history_tokens": self.history_tokens,
            "view_tokens": self.view_tokens,
            "seconds": self.seconds,
            "sessions": self.sessions,
            "notes": dict(self.notes),
            "where": dict(self.where),
        }


def sessions_of(
    replays: Sequence[Replay], dataset: str, count: Any, keep_empty: bool
) -> list[Session]:
    return [
        Session(
            dataset, r.id, list(convert_to_messages(r.messages)), list(r.gold_values), count, r.meta
        )
        for r in replays
        if keep_empty or r.gold_values
    ]


def load_groups(args: argparse.Namespace) -> dict[str, list[Session]]:
    """The sets to report, by title: SWE dev, SWE held-out, tau-bench."""
    count = text_counter(args.counter)
    groups: dict[str, list[Session]] = {}
    if "swe" in args.datasets:
        parts = split(load_swe_agent(args.swe))
        for name, replays in parts.items():
            chosen = sessions_of(replays, "swe", count, args.all_runs)[: args.limit]
            groups[f"swe {name} ({'django' if name == 'dev' else 'other repositories'})"] = chosen
    if "tau" in args.datasets:
        tau = sessions_of(load_tau_airline(args.tau), "tau", count, False)
        groups["tau-bench airline"] = tau[: args.limit]
    return groups


def run_all(
    groups: dict[str, list[Session]],
    systems: Sequence[StepSystem],
    budgets: Sequence[float],
    model_limit: int,
    progress: Any = None,
) -> list[Cell]:
    cells = []
    for group, sessions in groups.items():
        for system in systems:
            chosen = sessions[:model_limit] if system.needs_model else sessions
            for fraction in budgets:
                cell = Cell(system.name, group, fraction)
                for session in chosen:
                    cell.add(session, system.run(session, fraction))
                cells.append(cell)
                if progress is not None:
                    print(
                        f"  {group} · {system.name} · {fraction:.0%}: {cell.cell_text()} "
                        f"({cell.seconds:.1f} s)",
                        file=progress,
                        flush=True,
                    )
    return cells


def report(cells: Sequence[Cell], systems: Sequence[StepSystem], budgets: Sequence[float]) -> str:
    """Markdown tables: score · compression · prefix reuse per system and budget."""
    labels = {s.name: s.label for s in systems}
    out: list[str] = []
    for group in dict.fromkeys(c.group for c in cells):
        mine = [c for c in cells if c.group == group]
        if not any(c.sessions for c in mine):
            out.append(f"\n**{group}**: no sessions in the given files")
            continue
        totals = {c.system: (c.total, c.sessions) for c in mine}
        out.append(f"\n**{group}** (score · compression · prefix reuse)\n")
        columns = " | ".join(f"{b:.0%}" for b in budgets)
        out.append(f"| system | sessions | items | {columns} |")
        out.append("| --- | --- | --- |" + " --- |" * len(budgets))
        for name in dict.fromkeys(c.system for c in mine):
            row = {c.fraction: c for c in mine if c.system == name}
            total, n = totals[name]
            values = " | ".join(row[b].cell_text() if b in row else "-" for b in budgets)
            out.append(f"| {labels.get(name, name)} | {n} | {total} | {values} |")
        for cell in mine:
            if cell.where:
                shares = sorted(cell.memory_shares)
                median = shares[len(shares) // 2] if shares else 0.0
                where = ", ".join(f"{k} {v}" for k, v in cell.where.most_common())
                starved = sum(tokens < 200 for tokens in cell.memory_tokens)
                out.append(
                    f"\n{cell.system} at {cell.fraction:.0%}: gold items {where}; memory block "
                    f"median {median:.0%} of the view, under 200 tokens in {starved} of "
                    f"{len(cell.memory_tokens)} final views; notes {dict(cell.notes)}"
                )
    return "\n".join(out)


def plot(cells: Sequence[Cell], systems: Sequence[StepSystem], path: Path) -> Path:
    """Score against compression, one panel per set, one line per system across budgets;
    each point labelled with its prefix reuse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        g
        for g in dict.fromkeys(c.group for c in cells)
        if any(c.sessions for c in cells if c.group == g)
    ]
    fig, axes = plt.subplots(1, len(groups), figsize=(5.2 * len(groups), 4.2), squeeze=False)
    labels = {s.name: s.label for s in systems}
    for ax, group in zip(axes[0], groups, strict=True):
        for index, name in enumerate(dict.fromkeys(c.system for c in cells)):
            mine = sorted(
                (c for c in cells if c.group == group and c.system == name and c.sessions),
                key=lambda c: c.compression,
            )
            if not mine:
                continue
            xs, ys = [c.compression for c in mine], [c.score for c in mine]
            ax.plot(xs, ys, marker="os^vD<>pPX"[index % 10], label=labels.get(name, name))
            for point in {
                (round(c.compression, 2), round(c.score, 3), f"{c.reuse:.0%}") for c in mine
            }:
                ax.annotate(point[2], point[:2], fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("compression (history / view tokens)")
        ax.set_ylabel("gold items kept")
        ax.set_title(group, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower left")
    fig.suptitle("What the next steps need, kept at 10/25/50% budgets (labels: prefix reuse)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def distill_with(options: Sequence[str]) -> Distill:
    """The distill system with engine options from the command line (for sweeps)."""
    parsed = engine_options(options, "--distill-option")
    shares = {k: v for k, v in parsed.items() if k.endswith("_tokens") and v < 1}
    plain = {k: v for k, v in parsed.items() if k not in shares}
    label = "context-distill (" + ", ".join(options) + ")"
    return Distill("distill", label, shares=shares, **plain)


def main(argv: Sequence[str] | None = None) -> list[Cell]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--swe", nargs="+", default=[str(SWE_AGENT_PATH)])
    parser.add_argument("--tau", default=str(TAU_AIRLINE_PATH))
    parser.add_argument("--datasets", default="swe,tau")
    parser.add_argument("--budgets", default=",".join(str(b) for b in DEFAULT_BUDGETS))
    parser.add_argument("--systems", default=",".join(MODEL_FREE))
    parser.add_argument("--limit", type=int, default=None, help="sessions per set")
    parser.add_argument("--model-limit", type=int, default=2, help="sessions for model systems")
    parser.add_argument("--counter", default="chars4", help="chars4 or a tiktoken encoding")
    parser.add_argument("--all-runs", action="store_true", help="runs without gold items too")
    parser.add_argument("--json", default=None)
    parser.add_argument("--plot", default=None, help="write a PNG of score against compression")
    parser.add_argument("--proto-memory-share", type=float, default=0.3)
    parser.add_argument("--proto-target-share", type=float, default=0.6)
    parser.add_argument("--proto-memory-yields", action="store_true")
    parser.add_argument(
        "--distill-option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an engine option for the distill system; a *_tokens value below 1 is a share "
        "of the budget (repeatable)",
    )
    args = parser.parse_args(argv)
    args.datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    budgets = [float(b) for b in args.budgets.split(",")]
    known = make_systems()
    known["tiered_proto"] = TieredProto(
        args.proto_memory_share, args.proto_target_share, memory_yields=args.proto_memory_yields
    )
    if args.distill_option:
        known["distill"] = distill_with(args.distill_option)
    systems = []
    for name in args.systems.split(","):
        system = known.get(name.strip())
        if system is None:
            raise SystemExit(f"unknown system {name!r}; known: {', '.join(known)}")
        reason = system.available()
        if reason:
            print(f"skipping {name}: {reason}", file=sys.stderr)
            continue
        systems.append(system)
    groups = load_groups(args)
    for group, sessions in groups.items():
        items = sum(len(s.gold) for s in sessions)
        print(f"{group}: {len(sessions)} sessions, {items} gold items", file=sys.stderr)
    cells = run_all(groups, systems, budgets, args.model_limit, progress=sys.stderr)
    print(report(cells, systems, budgets))
    if args.json:
        Path(args.json).write_text(json.dumps([c.as_dict() for c in cells], indent=1) + "\n")
    if args.plot:
        plot(cells, systems, Path(args.plot))
    return cells


if __name__ == "__main__":
    main()
