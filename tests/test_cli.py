"""The command line: replay, search, stats, show, demo; bad files refused by line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from context_distill.cli import main


def write_session(path: Path, turns: int = 60) -> Path:
    lines = [
        {"role": "system", "content": "You are a travel agent."},
        {"role": "user", "content": "Plan a week in Lisbon under 900 EUR."},
    ]
    for i in range(turns):
        lines.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{i}",
                        "type": "function",
                        "function": {"name": "search_hotels", "arguments": json.dumps({"page": i})},
                    }
                ],
            }
        )
        hotel = {
            "hotel": f"Casa {i}",
            "price_eur": 80 + i,
            "ref": f"HX-{5000 + i}",
            "notes": "ok " * 60,
        }
        lines.append({"role": "tool", "tool_call_id": f"call_{i}", "content": json.dumps(hotel)})
    # LangChain message dicts may be mixed in, detected per line
    lines.append({"type": "ai", "data": {"content": "Casa 3 is the best value.", "type": "ai"}})
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return path


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(args), out=out)
    return code, out.getvalue()


def test_replay_json(tmp_path: Path) -> None:
    session = write_session(tmp_path / "s.jsonl")
    db = tmp_path / "a.db"
    code, out = run("replay", str(session), "--budget", "1500", "--db", str(db), "--json")
    assert code == 0
    payload = json.loads(out)
    stats = payload["stats"]
    keys = "messages tokens_in tokens_view peak_view_tokens distillations facts seconds"
    assert set(stats) == set(keys.split())
    assert stats["messages"] == 123 and stats["distillations"] > 0
    assert stats["tokens_view"] <= 1500 < stats["tokens_in"]
    context = payload["context"]
    assert context[0]["role"] == "system" and context[1]["content"].startswith("Plan a week")
    assert context[-1]["content"] == "Casa 3 is the best value."

    code, out = run("search", str(db), "HX-5000", "--json")
    hits = json.loads(out)
    assert code == 0 and any(h["kind"] == "message" and "HX-5000" in h["text"] for h in hits)

    code, out = run("stats", str(db), "--json")
    assert code == 0 and json.loads(out)["facts"] == stats["facts"]

    code, out = run("show", str(db), "--thread", "session")
    assert code == 0 and "distillations:" in out and "search_hotels" in out


def test_replay_text_report(tmp_path: Path) -> None:
    session = write_session(tmp_path / "s.jsonl", turns=20)
    code, out = run("replay", str(session), "--budget", "800")
    assert code == 0 and "tokens: history" in out and "distillations" in out


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"role": "user", "content": "hi"}\n{not json}\n', "line 2: malformed JSON"),
        (
            b'{"role": "user", "content": "hi"}\n{"role": "robot", "content": "x"}\n',
            "line 2: unknown role",
        ),
        (b'{"role": "user", "content": "hi"}\n\xff\xfe\n', "line 2: not valid UTF-8"),
        (
            b'{"role": "user", "content": "hi"}\n'
            b'{"role": "tool", "tool_call_id": "zz", "content": "x"}\n',
            "line 2:",
        ),
        (b'{"role": "user", "content": 5}\n', "line 1: content is a int"),
        (b"[1, 2]\n", "line 1: expected a JSON object"),
    ],
)
def test_bad_files_are_refused_by_line_and_nothing_is_written(
    tmp_path: Path, content: bytes, expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    session = tmp_path / "bad.jsonl"
    session.write_bytes(content)
    db = tmp_path / "never.db"
    code, _ = run("replay", str(session), "--budget", "100", "--db", str(db))
    assert code == 2
    assert expected in capsys.readouterr().err
    assert not db.exists()


def test_read_commands_do_not_create_archives(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    code, _ = run("stats", str(missing))
    assert code == 2 and not missing.exists()


def test_demo_runs_offline_and_recalls_an_early_detail() -> None:
    code, out = run("demo")
    assert code == 0
    assert "peak tokens of one call" in out and "KV cache" in out
    assert "word for word:" in out and "discount_pct" in out.split("recall:")[1]
