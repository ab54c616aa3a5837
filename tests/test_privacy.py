"""Private by default: the default configuration opens no network connection.

A fresh interpreter blocks every way out (``socket.connect``, ``connect_ex``,
``sendto``, ``create_connection``, ``getaddrinfo``) and points tiktoken at an empty
cache, so an encoding that was not shipped would have to be downloaded. It then
runs a full session through the engine, a LangGraph graph with ``DistillNode``, the
chat-history wrapper, the recall tool and the command line. Any attempt to reach
the network is recorded and fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from invariants import REPO_ROOT, TESTS_DIR

SCRIPT = textwrap.dedent(
    """
    import json, logging, socket, sys
    attempts = []

    def deny(name):
        def blocked(*args, **kwargs):
            attempts.append(f"{name}{args[1:] if name.startswith('socket.') else args}")
            raise OSError(f"network blocked by the privacy test ({name})")
        return blocked

    socket.socket.connect = deny("socket.connect")
    socket.socket.connect_ex = deny("socket.connect_ex")
    socket.socket.sendto = deny("socket.sendto")
    socket.create_connection = deny("create_connection")
    socket.getaddrinfo = deny("getaddrinfo")

    warnings = []

    class Catch(logging.Handler):
        def emit(self, record):
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    logging.getLogger().addHandler(Catch())
    logging.getLogger().setLevel(logging.WARNING)

    sys.path.insert(0, sys.argv[1])
    folder = sys.argv[2]
    import random
    from langchain_core.chat_history import InMemoryChatMessageHistory
    from langchain_core.messages import HumanMessage
    from context_distill import ContextDistiller, SQLiteMemoryStore
    from context_distill.tokens import approximate_count, encoding_counter
    from invariants import make_turn, session_start

    # 1. The engine with its defaults: extractive distiller, o200k_base counts.
    engine = ContextDistiller(SQLiteMemoryStore(folder + "/private.db"), budget_tokens=2000)
    history = session_start("p")
    rng = random.Random(1)
    for turn in range(1, 50):
        history += make_turn(rng, "p", turn)
        update = engine.update("private", history)
    assert update.stats.distillations > 0, update.stats
    assert encoding_counter("o200k_base") is not approximate_count, "token counts approximate"

    # 2. A LangGraph graph with the node door.
    from langgraph.graph import START, StateGraph
    from context_distill.langgraph import DistillNode, DistillState
    node = DistillNode(engine)
    graph = StateGraph(DistillState)
    graph.add_node("distill", node)
    graph.add_edge(START, "distill")
    out = graph.compile().invoke({"messages": history}, {"configurable": {"thread_id": "g"}})
    assert out["llm_input_messages"]

    # 3. The chat-history door, 4. the recall tool.
    from context_distill.history import DistillingChatMessageHistory
    from context_distill.tools import make_recall_tool
    chat = DistillingChatMessageHistory(InMemoryChatMessageHistory(), engine, thread_id="c")
    chat.add_messages(history[:40])
    assert chat.messages
    tool = make_recall_tool(engine)
    answer = tool.invoke({"query": "zqpx1x1"}, {"configurable": {"thread_id": "private"}})
    assert "zqpx1x1" in answer, answer

    # 5. The command line.
    from context_distill.cli import main
    from context_distill.sessions import to_openai
    with open(folder + "/session.jsonl", "w") as f:
        for record in to_openai(history):
            f.write(json.dumps(record) + "\\n")
    import contextlib, io
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["replay", folder + "/session.jsonl", "--db", folder + "/cli.db",
                     "--budget", "2000"]) == 0
        assert main(["search", folder + "/cli.db", "zqpx2x1"]) == 0
        assert main(["stats", folder + "/cli.db"]) == 0
    print(json.dumps({"attempts": attempts, "warnings": warnings}))
    """
)


def test_default_configuration_opens_no_network_connection(tmp_path: Path) -> None:
    cache = tmp_path / "empty-tiktoken-cache"
    cache.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("LANGCHAIN_", "LANGSMITH_", "OPENAI_", "HF_"))
        and key.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env["TIKTOKEN_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = str(REPO_ROOT / "src")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(TESTS_DIR), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["attempts"] == [], f"network use: {report['attempts'][:5]}"
    assert not [w for w in report["warnings"] if "approximate" in w], report["warnings"]
