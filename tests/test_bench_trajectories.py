"""bench/trajectories.py and its parts on synthetic trajectories: no data set, no model."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ is not installed

from bench import step_systems, swe_agent, trajectories
from bench.step_systems import PrefixMeter, Session, chars4
from bench.tiered_proto import TieredProto


def turn(thought: str, command: str) -> dict[str, str]:
    return {"role": "assistant", "content": f"THOUGHT: {thought}\n\n```bash\n{command}\n```"}


def output(text: str, code: int = 0) -> dict[str, str]:
    return {
        "role": "user",
        "content": f"<returncode>{code}</returncode>\n<output>\n{text}\n</output>",
    }


def run(instance: str, turns: int = 12, filler: int = 400) -> dict[str, Any]:
    """A run whose early outputs name ``early_name_<i>`` and whose last commands use them."""
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are a shell agent. One bash block per answer."},
        {
            "role": "user",
            "content": "<pr_description>Fix the parser in app/core.py</pr_description>",
        },
    ]
    for i in range(turns):
        body = f"def early_name_{i}(x):\n    return x\n" + "pad line words\n" * (filler // 15)
        messages.append(turn(f"look at part {i}", f"cat app/part_{i}.py"))
        messages.append(output(body))
    messages.append(turn("use what I saw", "python -c 'import early_name_0, early_name_1'"))
    messages.append(output("done"))
    return {"instance_id": instance, "exit_status": "Submitted", "messages": messages}


def write_runs(path: Path, runs: list[dict[str, Any]]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for item in runs:
            handle.write(json.dumps(item) + "\n")
    return path


# ------------------------------------------------------------------ identifiers and gold


def test_identifiers_are_paths_names_with_underscores_and_long_numbers() -> None:
    found = swe_agent.identifiers(
        "head -n 2050 django/contrib/admin/options.py | tail -n 1960 "
        "&& grep has_add_permission x.py 42"
    )
    assert {
        "1960",
        "2050",
        "django/contrib/admin/options.py",
        "has_add_permission",
        "x.py",
    } <= found
    assert "42" not in found and "grep" not in found


def test_holds_matches_whole_identifiers_only() -> None:
    assert swe_agent.holds("see options.py:463", "463")
    assert not swe_agent.holds("line 14630", "463")
    assert not swe_agent.holds("my_parse_date_x", "parse_date")


def test_bash_blocks_become_tool_calls_and_their_outputs_tool_results() -> None:
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "task"},
        turn("list", "ls"),
        output("a.py"),
        {"role": "assistant", "content": "```bash\nls\n```\n```bash\npwd\n```"},
        {"role": "user", "content": "Please always provide EXACTLY ONE action"},
    ]
    converted = swe_agent.to_tool_calls(messages, "r")
    assert [m["role"] for m in converted] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    call = converted[2]["tool_calls"][0]
    assert call["function"]["name"] == "bash"
    assert json.loads(call["function"]["arguments"]) == {"command": "ls"}
    assert converted[2]["content"] == "THOUGHT: list"
    assert converted[3]["tool_call_id"] == call["id"]


def test_gold_is_what_later_commands_use_and_only_early_output_showed() -> None:
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "fix task_name_in_task"},
        turn("a", "cat a.py"),
        output("early_only_name task_name_in_task repeated_name"),
        turn("b", "cat b.py"),
        output("nothing"),
        turn("c", "cat c.py"),
        output("nothing"),
        turn("d", "cat d.py"),
        output("repeated_name late_only_name"),
        turn("e", "echo early_only_name task_name_in_task repeated_name late_only_name"),
        output("ok"),
        turn("f", "ls"),
    ]
    cut = swe_agent.cut_index(messages)
    assert cut == 10
    assert swe_agent.gold_identifiers(messages, cut) == ["early_only_name"]


def test_runs_load_cut_with_gold_and_split_by_repository(tmp_path: Path) -> None:
    path = write_runs(
        tmp_path / "runs.jsonl.gz",
        [run("django__django-1"), run("psf__requests-2"), run("django__django-3")],
    )
    replays = swe_agent.load_swe_agent([path])
    assert [r.meta["repo"] for r in replays] == ["django", "requests", "django"]
    assert all(r.gold_values == ["early_name_0", "early_name_1"] for r in replays)
    parts = swe_agent.split(replays)
    assert [r.id for r in parts["dev"]] == ["django__django-1", "django__django-3"]
    assert [r.id for r in parts["held-out"]] == ["psf__requests-2"]


# ------------------------------------------------------------------ systems


def session_of(item: dict[str, Any]) -> Session:
    from langchain_core.messages import convert_to_messages

    (replay,) = [r for r in swe_agent.load_swe_agent_runs([item])]
    return Session(
        "swe", replay.id, list(convert_to_messages(replay.messages)), replay.gold_values, chars4
    )


def test_prefix_reuse_counts_the_leading_messages_the_previous_call_had() -> None:
    meter = PrefixMeter(lambda m: len(str(m.content)))
    a, b, c = HumanMessage("aaaa"), AIMessage("bb"), HumanMessage("cccc")
    meter.observe([a])
    meter.observe([a, b])  # grew at its end: 4 of 6 reused
    meter.observe([c, b])  # changed at its start: nothing reused
    assert (meter.calls, meter.tokens, meter.reused) == (3, 12, 4)


def test_masking_is_langchains_middleware_clearing_all_but_the_newest_three() -> None:
    session = session_of(run("django__django-1"))
    trace = step_systems.Masking().run(session, 0.25)
    results = [m for m in trace.view if isinstance(m, ToolMessage)]
    cleared = [m for m in results if m.content == "[cleared]"]
    assert len(results) - len(cleared) == 3
    assert [m.content for m in results[-3:]] != ["[cleared]"] * 3
    assert isinstance(trace.view[0], SystemMessage)
    assert 0 < trace.reuse < 1


def test_masking_to_the_budget_fits_it() -> None:
    session = session_of(run("django__django-1"))
    trace = step_systems.Masking(fit=True).run(session, 0.25)
    assert session.tokens_of(trace.view) <= session.pinned_tokens + session.budget(0.25)


def test_the_engine_replay_fits_the_budget_and_keeps_what_it_distilled() -> None:
    session = session_of(run("django__django-1", turns=16))
    trace = step_systems.Distill().run(session, 0.25)
    assert session.tokens_of(trace.view) <= session.pinned_tokens + session.budget(0.25)
    assert trace.notes["distillations"] > 0
    assert any("early_name_0" in fact for fact in trace.extra["facts"])


def test_the_tiered_prototype_reduces_old_results_before_distilling_groups() -> None:
    session = session_of(run("django__django-1", turns=12, filler=1500))
    views: list[list[Any]] = []

    class Recorded(TieredProto):
        def view(self, state: Any, session: Session, end: int, budget: int) -> list[Any]:
            views.append(super().view(state, session, end, budget))
            return views[-1]

    trace = Recorded(memory_share=0.1, keep_results=1).run(session, 0.4)
    reduced = [
        view
        for view in views
        if any(isinstance(m, ToolMessage) and str(m.content).startswith("[facts]") for m in view)
    ]
    assert reduced  # a crossing reduced older results and kept their calls
    first = reduced[0]  # the view of the first crossing: only the newest result verbatim
    verbatim = [m for m in first if isinstance(m, ToolMessage) and "[facts]" not in str(m.content)]
    assert len(verbatim) == 1
    for index, message in enumerate(first):  # every reduced result still follows its call
        if isinstance(message, ToolMessage):
            call = first[index - 1]
            assert isinstance(call, AIMessage) and call.tool_calls[0]["id"] == message.tool_call_id
    assert trace.notes["crossings"] > 0


def test_scored_text_leaves_out_the_memory_blocks_archive_numbers() -> None:
    memory = HumanMessage(
        "[Memory] header\n#463 bash(command=ls) → a.py",
        additional_kwargs={"context_distill": "memory"},
    )
    text = trajectories.scored_text([memory])
    assert not swe_agent.holds(text, "463") and swe_agent.holds(text, "a.py")


# ------------------------------------------------------------------ the report


def test_main_reports_the_dev_and_held_out_sets_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_runs(tmp_path / "runs.jsonl.gz", [run("django__django-1"), run("psf__requests-2")])
    out = tmp_path / "cells.json"
    cells = trajectories.main(
        [
            "--swe",
            str(path),
            "--datasets",
            "swe",
            "--budgets",
            "0.25,0.5",
            "--systems",
            "full,truncation,masking,distill",
            "--json",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert "**swe dev (django)**" in printed and "**swe held-out (other repositories)**" in printed
    full = [c for c in cells if c.system == "full"]
    assert all(c.score == 1.0 and c.compression == 1.0 for c in full)
    truncation = [c for c in cells if c.system == "truncation" and c.fraction == 0.25]
    assert all(c.score == 0.0 for c in truncation)  # the early outputs are gone
    saved = json.loads(out.read_text())
    assert {row["set"] for row in saved} == {
        "swe dev (django)",
        "swe held-out (other repositories)",
    }
