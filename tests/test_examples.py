"""The examples run as docs/doors.md shows them, offline, in a fresh process each."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def _run(name: str, *args: str, stdin: str | None = None) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        input=stdin,
        env=env,
        cwd=ROOT,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_langgraph_agent_runs_and_continues_after_a_restart(tmp_path: Path) -> None:
    first = _run("langgraph_agent.py", "--dir", str(tmp_path))
    assert "new thread in" in first
    views = [int(v) for v in re.findall(r"model sees (\d+) \(budget 1200\)", first)]
    assert len(views) == 4 and max(views) <= 1200
    states = [int(v) for v in re.findall(r"checkpointed state (\d+) messages", first)]
    assert max(states[1:]) < 30  # the checkpointed state stays compact
    assert '"location": "Berlin"' in first  # the first lookup, recalled word for word
    second = _run("langgraph_agent.py", "--dir", str(tmp_path))
    assert "continuing the thread" in second
    histories = [int(v) for v in re.findall(r"history (\d+) tokens", first + second)]
    assert histories == sorted(histories)  # the thread goes on; nothing restarts from zero
    assert (tmp_path / "memory.sqlite").exists() and (tmp_path / "checkpoints.sqlite").exists()


def test_agent_middleware_example() -> None:
    out = _run("agent_middleware.py")
    peak = int(re.search(r"peak (\d+)\)", out).group(1))  # type: ignore[union-attr]
    assert peak <= 1500
    assert "[recall tool result]" in out and '"order_id": "ORD-0001"' in out
    assert out.rstrip().endswith("carrier UPS.")


def test_chat_history_example(tmp_path: Path) -> None:
    out = _run("chat_history.py", "--dir", str(tmp_path))
    sent = [int(v) for v in re.findall(r"(\d+) tokens \(budget 700\)", out)]
    assert len(sent) == 3 and max(sent) <= 700
    assert "Server srv-001 moves to rack R1-1 in wave 2; its ticket is MIG-4001." in out
    typed = _run(
        "chat_history.py",
        "--dir",
        str(tmp_path),
        "--interactive",
        stdin="Server srv-900 moves to rack R1-1 in wave 2; its ticket is MIG-9000.\n\n",
    )
    assert "64 messages so far" in typed and "Noted srv-900, ticket MIG-9000." in typed
