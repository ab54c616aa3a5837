"""The command line: replay, search, stats, show, demo; bad files refused by line."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
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
    assert set(keys.split()) <= set(stats)
    assert stats["messages"] == 123 and stats["distillations"] > 0
    assert stats["tokens_view"] <= 1500 < stats["tokens_in"]
    context = payload["context"]
    assert context[0]["role"] == "system" and context[1]["content"].startswith("Plan a week")
    assert context[-1]["content"] == "Casa 3 is the best value."

    code, out = run("search", str(db), "HX-5000", "--json")
    hits = json.loads(out)
    assert code == 0 and any(
        h["kind"] == "message" and "HX-5000" in h["snippets"][0]["text"] for h in hits
    )

    code, out = run("stats", str(db), "--json")
    assert code == 0 and json.loads(out)["facts"] == stats["facts"]

    code, out = run("show", str(db), "--thread", "session")
    assert code == 0 and "distillations:" in out and "search_hotels" in out

    # The same counts in every command.
    code, out = run("stats", str(db), "--json")
    archive = json.loads(out)
    code, out = run("threads", str(db), "--json")
    (row,) = json.loads(out)
    code, out = run("show", str(db), "--json")
    shown = json.loads(out)
    assert row["thread_id"] == shown["thread_id"] == "session"
    assert stats["facts"] == archive["facts"] == row["facts"] == len(shown["facts"])
    assert stats["distillations"] == archive["distillations"] == row["distillations"]
    assert row["tokens_saved"] == archive["tokens_saved"] == shown["stats"]["tokens_saved"]


def test_replay_text_report_shows_the_view_and_counts_facts_like_stats(tmp_path: Path) -> None:
    session = write_session(tmp_path / "s.jsonl", turns=20)
    db = tmp_path / "a.db"
    code, out = run("replay", str(session), "--budget", "800", "--db", str(db))
    assert code == 0 and "tokens: history" in out and "distillations" in out
    assert "final view" in out and "--json prints them whole" in out
    assert "Casa 3 is the best value." in out.split("final view")[1]
    facts = int(re.search(r"facts (\d+) in", out).group(1))  # type: ignore[union-attr]
    _, stats = run("stats", str(db), "--json")
    assert facts == json.loads(stats)["facts"]


def test_errors_name_the_option_the_user_passed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    session = write_session(tmp_path / "s.jsonl", turns=3)
    code, _ = run("replay", str(session), "--budget", "1")
    err = capsys.readouterr().err
    assert code == 2 and "--budget 1 is too small" in err and "target_tokens" not in err
    code, _ = run("replay", str(session), "--budget", "100", "--target", "500")
    err = capsys.readouterr().err
    assert code == 2 and "--target must be between 1 and --budget" in err
    with pytest.raises(SystemExit):
        run("replay", str(session), "--budget", "0")
    assert "--budget: must be at least 1, not 0" in capsys.readouterr().err
    code, _ = run("show", str(tmp_path / "nothing.db"))
    assert code == 2 and "no archive at" in capsys.readouterr().err


def test_search_prints_snippets_with_archive_numbers(tmp_path: Path) -> None:
    big = "\n".join(f"row {n}: nothing here" for n in range(200_000))  # ~4 MB
    needle_at = big.index("row 150000:")
    big = big[:needle_at] + "NEEDLE-7731 found " + big[needle_at:]
    lines = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "look"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "dump", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": big},
    ]
    for i in range(8):
        lines.append({"role": "user", "content": f"next step {i} " + "words " * 200})
        lines.append({"role": "assistant", "content": f"done {i} " + "more " * 200})
    session = tmp_path / "s.jsonl"
    session.write_text("\n".join(json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    db = tmp_path / "a.db"
    assert run("replay", str(session), "--budget", "3000", "--db", str(db))[0] == 0
    code, out = run("search", str(db), "NEEDLE-7731")
    assert code == 0 and len(out) < 2000, len(out)
    head, snippet = out.splitlines()[:2]
    ref = int(re.search(r"#(\d+) tool", head).group(1))  # type: ignore[union-attr]
    offset = int(re.search(r"@(\d+)", snippet).group(1))  # type: ignore[union-attr]
    assert "NEEDLE-7731" in snippet and offset <= needle_at <= offset + 300
    code, out = run("search", str(db), "NEEDLE-7731", "--json")
    (hit,) = [h for h in json.loads(out) if h["kind"] == "message"]
    assert hit["ref"] == ref and "text" not in hit and hit["chars"] == len(big)
    (part,) = hit["snippets"]
    start, end = part["matches"][0]
    assert big[start:end] == "NEEDLE-7731" and big[part["offset"] : part["end"]] == part["text"]
    code, out = run("search", str(db), "NEEDLE-7731", "--full", "--json")
    assert json.loads(out)[0]["text"].count("row ") == 200_000


def test_search_covers_the_newest_turns(tmp_path: Path) -> None:
    session = write_session(tmp_path / "s.jsonl", turns=30)
    db = tmp_path / "a.db"
    assert run("replay", str(session), "--budget", "1500", "--db", str(db))[0] == 0
    assert json.loads(run("stats", str(db), "--json")[1])["messages_archived"] == 63
    code, out = run("search", str(db), "best value")  # the last line of the session
    assert code == 0 and "Casa 3 is the best value." in out


def test_threads_and_show_json(tmp_path: Path) -> None:
    session = write_session(tmp_path / "s.jsonl", turns=30)
    db = tmp_path / "a.db"
    run("replay", str(session), "--budget", "1500", "--db", str(db), "--thread", "one")
    run("replay", str(session), "--budget", "1500", "--db", str(db), "--thread", "two")
    code, out = run("threads", str(db))
    assert code == 0 and out.splitlines()[0].split()[:3] == ["thread", "messages", "distilled"]
    assert {line.split()[0] for line in out.splitlines()[1:]} == {"one", "two"}
    rows = json.loads(run("threads", str(db), "--json")[1])
    assert [r["thread_id"] for r in rows] == ["one", "two"] and all(
        r["tokens_saved"] > 0 for r in rows
    )
    code, out = run("show", str(db), "--thread", "two", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["facts"] and all(f["refs"] for f in shown["facts"])
    assert run("show", str(db))[0] == 2  # two threads: --thread is needed


def test_reading_commands_open_the_archive_read_only(tmp_path: Path) -> None:
    session = write_session(tmp_path / "s.jsonl", turns=30)
    db = tmp_path / "a.db"
    run("replay", str(session), "--budget", "1500", "--db", str(db))
    before = db.read_bytes()
    for args in (["stats"], ["threads"], ["show"], ["search", "HX-5001"]):
        code, _ = run(args[0], str(db), *args[1:], "--json")
        assert code == 0, args
    assert db.read_bytes() == before
    assert not Path(str(db) + "-wal").exists() or Path(str(db) + "-wal").stat().st_size == 0


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run a command as another user",
)
def test_a_file_the_user_cannot_write_is_read(tmp_path: Path) -> None:
    """As another user: the archive and its folder are not theirs to write."""
    session = write_session(tmp_path / "s.jsonl", turns=30)
    folder = Path(tempfile.mkdtemp(prefix="cd-ro-"))
    try:
        db = folder / "a.db"
        run("replay", str(session), "--budget", "1500", "--db", str(db))
        folder.chmod(0o755)
        db.chmod(0o444)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        command = [*as_nobody, sys.executable, "-m", "context_distill.cli", "stats", str(db)]
        done = subprocess.run(
            [*command, "--json"], capture_output=True, text=True, timeout=120, cwd="/"
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["facts"] > 0
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize(
    "args",
    [
        ["threads"],
        ["stats"],
        ["show"],
        ["search", "HX"],
        ["search", "HX", "--json"],
        ["show", "--json"],
        ["threads", "--json"],
    ],
)
def test_a_closed_pipe_ends_quietly(tmp_path: Path, args: list[str]) -> None:
    session = write_session(tmp_path / "s.jsonl", turns=40)
    db = tmp_path / "a.db"
    run("replay", str(session), "--budget", "1500", "--db", str(db))
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line is written, as `| head` may be
    try:
        done = subprocess.run(
            [sys.executable, "-m", "context_distill.cli", args[0], str(db), *args[1:]],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert done.returncode == 0 and done.stderr == ""


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


def test_demo_runs_offline_and_recalls_an_early_detail(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    code, out = run("demo", "--db", str(db))
    assert code == 0
    assert "peak tokens of one call" in out and "KV cache" in out
    assert "word for word:" in out and "discount_pct" in out.split("recall:")[1]
    assert f"context-distill inspect {db}" in out
    archived = int(re.search(r"archive: (\d+) messages, (\d+) facts", out).group(2))  # type: ignore[union-attr]
    assert json.loads(run("stats", str(db), "--json")[1])["facts"] == archived
    # A rerun starts the demo thread afresh; --json gives the same figures.
    code, again = run("demo", "--db", str(db), "--json")
    figures = json.loads(again)
    assert code == 0 and figures["archive"]["facts"] == archived
    assert figures["tool_calls"] == 238 and figures["recall"]["line"].endswith("'discount_pct'")
