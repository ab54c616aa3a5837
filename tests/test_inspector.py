"""The inspector: its JSON API over a demo archive, read-only, and the page in a real Chromium."""

from __future__ import annotations

import builtins
import shutil
import struct
import subprocess
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="the inspect extra is not installed")
import itertools

from starlette.testclient import TestClient

from context_distill.demo import DemoResult, run_demo
from context_distill.errors import MissingExtraError
from context_distill.inspector import build_app
from context_distill.inspector.app import bind, server_for
from context_distill.store import SQLiteMemoryStore


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoResult]:
    db = tmp_path_factory.mktemp("inspect") / "demo.db"
    return db, run_demo(db=str(db))


@pytest.fixture(scope="module")
def demo_db(demo_run: tuple[Path, DemoResult]) -> Path:
    return demo_run[0]


@pytest.fixture()
def client(demo_db: Path) -> Iterator[TestClient]:
    store = SQLiteMemoryStore(demo_db, read_only=True)
    try:
        yield TestClient(build_app(store))
    finally:
        store.close()


def _get(client: TestClient, name: str, **params: Any) -> Any:
    response = client.get(f"/api/{name}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_threads_chart_and_counts(client: TestClient, demo_run: tuple[Path, DemoResult]) -> None:
    (row,) = _get(client, "threads")
    assert row["thread_id"] == "demo" and row["facts"] > 0 and row["tokens_saved"] > 0
    chart = _get(client, "chart", thread="demo")
    turns = chart["turns"]
    assert len(turns) > 150
    assert all(a["without"] <= b["without"] for a, b in itertools.pairwise(turns))
    assert all(t["with"] <= t["without"] for t in turns)
    assert turns[-1]["with"] < turns[-1]["without"] / 3
    # Each model call whose view changed (its view grew less than its history: a
    # distillation or a reduction, the demo's own figures) is one event, at that call,
    # holding every change the log recorded in it; a call may run several rounds.
    demo = demo_run[1]
    changed = [
        i
        for i, (view, full) in enumerate(zip(demo.view, demo.full, strict=True))
        if view - (demo.view[i - 1] if i else 0) != full - (demo.full[i - 1] if i else 0)
    ]
    assert [event["turn"] for event in chart["events"]] == changed
    log = _get(client, "log", thread="demo")
    applied = [e for e in log if e["outcome"] in ("ok", "reduced")]
    assert sum(event["distillations"] for event in chart["events"]) == len(applied)
    assert sum(e["outcome"] == "ok" for e in applied) == row["distillations"]
    # The demo ran under 6,000 tokens: the inferred line lies between the views it allowed.
    assert chart["budget_inferred"] and 5_900 <= chart["budget"] <= 6_100


def test_budget_given_is_drawn_as_given(demo_db: Path) -> None:
    with SQLiteMemoryStore(demo_db, read_only=True) as store:
        chart = TestClient(build_app(store, budget=6000)).get("/api/chart?thread=demo").json()
    assert chart["budget"] == 6000 and not chart["budget_inferred"]


def test_every_fact_leads_to_its_originals(client: TestClient) -> None:
    facts = _get(client, "facts", thread="demo")
    timeline = _get(client, "timeline", thread="demo")
    refs = {m["ref"] for m in timeline["messages"]}
    assert facts and all(f["refs"] and set(f["refs"]) <= refs for f in facts)
    first = next(f for f in facts if "run_tests" in f["text"])
    original = _get(client, "message", thread="demo", ref=first["refs"][-1])
    assert original["role"] == "tool" and "test session starts" in original["text"]
    assert original["next_offset"] is None and original["chars"] == len(original["text"])


def test_memory_now_and_what_it_left_out(client: TestClient) -> None:
    memory = _get(client, "memory", thread="demo")
    assert memory["text"].startswith("[Memory]")
    shown_lines = memory["text"].splitlines()[1:]
    # Neighbouring facts may share a rendered line: every shown fact is on one.
    assert shown_lines and memory["shown"]
    hidden = len(memory["left_out"]) + memory["let_go"]
    assert memory["left_out"] and f"{hidden} facts" in memory["text"]
    assert not set(memory["left_out"]) & set(shown_lines)


def test_search_highlights_and_log(client: TestClient) -> None:
    hits = _get(client, "search", q="discount_pct", thread="demo")
    assert hits and hits[0]["snippets"]
    for hit in hits:
        for snip in hit["snippets"]:
            for start, end in snip["matches"]:
                assert snip["text"][start:end].lower() == "discount_pct"
    log = _get(client, "log", thread="demo")
    assert log and all(entry["outcome"] in ("ok", "reduced") for entry in log)  # no failure
    assert any(entry["outcome"] == "ok" for entry in log)


def test_bad_requests_and_nothing_written(client: TestClient, demo_db: Path) -> None:
    before = demo_db.read_bytes()
    assert client.get("/api/facts", params={"thread": "nope"}).status_code == 404
    assert client.get("/api/message", params={"thread": "demo", "ref": "x"}).status_code == 400
    assert client.get("/api/message", params={"thread": "demo", "ref": 99999}).status_code == 404
    assert client.post("/api/threads").status_code == 405
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "http" not in client.get("/static/app.js").text.replace("http://www.w3.org", "")
    assert demo_db.read_bytes() == before


def test_missing_extra_names_the_pip_command(
    monkeypatch: pytest.MonkeyPatch, demo_db: Path
) -> None:
    real_import = builtins.__import__

    def no_uvicorn(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvicorn":
            raise ImportError("No module named 'uvicorn'", name="uvicorn")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvicorn)
    with pytest.raises(MissingExtraError, match=r"pip install 'context-distill\[inspect\]'"):
        build_app(object())


# -- a real browser --------------------------------------------------------------------------


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _png_facts(data: bytes) -> tuple[int, int, int]:
    """Width, height and how many distinct byte values the image's pixels hold."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    pixels = zlib.decompress(idat)
    return width, height, len(set(pixels[:: max(len(pixels) // 200_000, 1)]))


@pytest.fixture()
def served(demo_db: Path) -> Iterator[str]:
    store = SQLiteMemoryStore(demo_db, read_only=True)
    sock = bind(0)
    server = server_for(build_app(store))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        store.close()


def _browse(chromium: str, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--no-first-run",
        "--window-size=1400,1300",
        "--virtual-time-budget=15000",
        *extra,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_page_in_headless_chromium(served: str, demo_db: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH (scripts/ensure_chromium.sh installs Debian's)")
    with SQLiteMemoryStore(demo_db, read_only=True) as store:
        fact = next(f for f in store.facts("demo") if "KeyError" in f.text or "run_tests" in f.text)
        ref = fact.refs[-1]
        ((_, message),) = store.get_messages("demo", refs=[ref])
    url = f"{served}?thread=demo&ref={ref}"
    done = _browse(chromium, url, "--dump-dom")
    dom = done.stdout
    assert 'data-ready="true"' in dom, done.stderr[-2000:]
    assert 'data-thread="demo"' in dom and "<b>demo</b>" in dom
    assert 'id="chart"' in dom and 'data-series="with"' in dom and 'data-series="without"' in dom
    assert 'id="budget-line"' in dom
    assert f'data-ref="{ref}"' in dom and 'class="ref' in dom  # facts link their originals
    original_panel = dom.split('id="original"', 1)[1].split("</pre>", 1)[0]
    assert f'data-ref="{ref}"' in original_panel
    first_line = message.text.splitlines()[0]
    assert first_line[:40] in original_panel

    shot = tmp_path / "inspector.png"
    done = _browse(chromium, url, f"--screenshot={shot}")
    assert shot.exists(), done.stderr[-2000:]
    data = shot.read_bytes()
    width, height, distinct = _png_facts(data)
    assert (width, height) == (1400, 1300)
    assert len(data) > 50_000 and distinct > 50  # a drawn page, not a blank one


def test_inspect_command_errors_name_what_was_wrong(
    demo_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from context_distill.cli import main

    assert main(["inspect", str(tmp_path / "missing.db")]) == 2
    assert "no archive at" in capsys.readouterr().err
    taken = bind(0)
    try:
        port = taken.getsockname()[1]
        assert main(["inspect", str(demo_db), "--port", str(port)]) == 2
        assert f"--port {port}: cannot listen" in capsys.readouterr().err
    finally:
        taken.close()
