"""Many agent servers, one memory: a LangGraph graph with ``PostgresSaver`` and the
node on ``PostgresMemoryStore``, its thread served by two processes in turn, shows the
model exactly what one process serving every turn shows it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import agent_kit
import pytest
from agent_kit import BUDGET, build_graph, config, first_input, make_model, turns
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from pg_kit import drop_database, new_database, server_dsn

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

TEXTS = turns(6, 24)
THREAD = "shared-thread"


def shown(message: BaseMessage) -> list[Any]:
    """What the model reads of a message (its id, made at random by LangGraph, aside)."""
    item: list[Any] = [message.type, message.text, message.additional_kwargs.get("context_distill")]
    if isinstance(message, AIMessage):
        item.append([[c["name"], c["args"], c["id"]] for c in message.tool_calls])
    if isinstance(message, ToolMessage):
        item.append(message.tool_call_id)
    return item


class Server:
    """One agent server process's graph: PostgresSaver and the node's store, one database."""

    def __init__(self, dsn: str) -> None:
        from langgraph.checkpoint.postgres import PostgresSaver

        from context_distill import ContextDistiller
        from context_distill.postgres import PostgresMemoryStore

        self._saver_cm = PostgresSaver.from_conn_string(dsn)
        saver = self._saver_cm.__enter__()
        self.store = PostgresMemoryStore(saver.conn)  # the checkpointer's connection
        self.engine = ContextDistiller(self.store, budget_tokens=BUDGET)
        self.model = make_model()
        self.app = build_graph(self.engine, self.model, mode="view", checkpointer=saver)

    def turn(self, index: int) -> list[list[list[Any]]]:
        """Run turn ``index`` of the thread; what the model was sent on each call."""
        before = len(self.model.calls)
        text = TEXTS[index]
        payload = (
            first_input(text, graph=True) if index == 0 else {"messages": [HumanMessage(text)]}
        )
        self.app.invoke(payload, config(THREAD))
        return [[shown(m) for m in call] for call in self.model.calls[before:]]

    def close(self) -> None:
        self.store.close()
        self._saver_cm.__exit__(None, None, None)


@pytest.fixture
def databases() -> Iterator[list[str]]:
    from langgraph.checkpoint.postgres import PostgresSaver

    made = [new_database(server_dsn()) for _ in range(2)]
    for dsn in made:
        with PostgresSaver.from_conn_string(dsn) as saver:
            saver.setup()
    yield made
    for dsn in made:
        drop_database(dsn)


def _serve(dsn: str, inbox: int, outbox: int) -> None:
    """A forked server process: runs the turns it is handed, answers with the model inputs."""
    code = 0
    try:
        server = Server(dsn)
        with os.fdopen(inbox, "r") as lines, os.fdopen(outbox, "w") as out:
            for line in lines:
                out.write(json.dumps(server.turn(int(line))) + "\n")
                out.flush()
        server.close()
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 3
    os._exit(code)


def test_two_servers_taking_turns_show_the_model_what_one_server_shows(
    databases: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tool call ids the same in every run (the model's are random): their tokens count.
    monkeypatch.setattr(
        agent_kit,
        "_id",
        lambda turn, step, k: (
            f"t{turn}s{step}k{k}-" + hashlib.sha1(f"{turn}/{step}/{k}".encode()).hexdigest()[:8]
        ),
    )
    alone, shared = databases
    one = Server(alone)
    try:
        expected = [one.turn(index) for index in range(len(TEXTS))]
        assert one.engine.stats(THREAD).distillations >= 2, "the thread never distilled"
    finally:
        one.close()

    workers = []
    for _ in range(2):
        to_child, from_parent = os.pipe()[::-1]
        to_parent, from_child = os.pipe()[::-1]
        pid = os.fork()
        if pid == 0:
            os.close(to_child)
            os.close(from_child)
            for _, other_inbox, other_outbox in workers:  # or the other never sees EOF
                other_inbox.close()
                other_outbox.close()
            _serve(shared, from_parent, to_parent)
        os.close(from_parent)
        os.close(to_parent)
        workers.append((pid, os.fdopen(to_child, "w"), os.fdopen(from_child, "r")))
    got = []
    for index in range(len(TEXTS)):
        _, inbox, outbox = workers[index % 2]  # the load balancer alternates
        inbox.write(f"{index}\n")
        inbox.flush()
        answer = outbox.readline()
        assert answer, f"server {index % 2} died at turn {index}"
        got.append(json.loads(answer))
    for pid, inbox, outbox in workers:
        inbox.close()
        outbox.close()
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    expected = json.loads(json.dumps(expected))  # tuples as lists, as the workers sent them
    for index, (want, have) in enumerate(zip(expected, got, strict=True)):
        assert len(want) == len(have), f"turn {index}: {len(have)} model calls, not {len(want)}"
        for call, (w, h) in enumerate(zip(want, have, strict=True)):
            assert w == h, f"turn {index}, model call {call}: the view differs"
    memory = [m for call in got[-1] for m in call if m[2] == "memory"]
    assert memory, "the last turn's views hold no memory block"
