"""A chat loop whose history file stays small: DistillingChatMessageHistory.

    python examples/chat_history.py                 # scripted conversation, temp folder
    python examples/chat_history.py --dir ./chat    # run again: the chat continues
    python examples/chat_history.py --interactive   # type the user's lines yourself

Any ``BaseChatMessageHistory`` can be wrapped (in memory, a file, a SQL table);
here it is a JSON file. In ``rewrite`` mode the file itself holds the compact view
after each distillation, while every original stays in the SQLite archive. The
chat model is scripted so the example runs offline.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import (
    BaseMessage,
    HumanMessage,
    SystemMessage,
    messages_from_dict,
    messages_to_dict,
)

from context_distill import ContextDistiller, SQLiteMemoryStore
from context_distill.history import DistillingChatMessageHistory
from context_distill.testing import ScriptedChatModel


class JsonFileHistory(BaseChatMessageHistory):
    """Chat messages in one JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        if not self.path.exists():
            return []
        return messages_from_dict(json.loads(self.path.read_text("utf-8")))

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        data = messages_to_dict([*self.messages, *messages])
        self.path.write_text(json.dumps(data, indent=1), "utf-8")

    def clear(self) -> None:
        self.path.write_text("[]", "utf-8")


SCRIPT = [
    f"Server srv-{n:03d} moves to rack R{n % 7}-{n % 11} in wave {n % 3 + 1}; "
    f"its ticket is MIG-{4000 + n}. Please note it."
    for n in range(1, 31)
]


def reply(messages: list[BaseMessage]) -> str:
    """A stand-in model: acknowledges the latest message."""
    words = messages[-1].text.replace(";", " ").split()
    servers = [w for w in words if w.startswith("srv-")]
    tickets = [w.rstrip(".") for w in words if w.startswith("MIG-")]
    if servers and tickets:
        return f"Noted {servers[0]}, ticket {tickets[0]}."
    return "Noted."


def _typed() -> Iterator[str]:
    """User lines from stdin until an empty line or the end of input."""
    while True:
        try:
            line = input("you> ")
        except EOFError:
            return
        if not line.strip():
            return
        yield line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="folder for the chat file and archive (kept)")
    parser.add_argument("--interactive", action="store_true", help="read user lines from stdin")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="context-distill-chat-"))
    folder.mkdir(parents=True, exist_ok=True)

    engine = ContextDistiller(SQLiteMemoryStore(folder / "memory.sqlite"), budget_tokens=700)
    history = DistillingChatMessageHistory(
        JsonFileHistory(folder / "chat.json"), engine, thread_id="migration", mode="rewrite"
    )
    model = ScriptedChatModel(respond=reply)
    if not history.messages:
        history.add_messages(
            [
                SystemMessage("You are a migration planner. Keep every ticket number."),
                HumanMessage("We are migrating the ACME data centre; track each server."),
            ]
        )
    lines = _typed() if args.interactive else iter(SCRIPT)
    for line in lines:
        history.add_user_message(line)
        view = history.messages  # the compact view: what the model is sent
        answer = model.invoke(view)
        history.add_ai_message(answer)
        if not args.interactive and SCRIPT.index(line) % 10 != 9:
            continue
        stats = engine.stats("migration")
        print(
            f"{stats.messages} messages so far ({stats.tokens_in} tokens); chat.json holds "
            f"{len(JsonFileHistory(folder / 'chat.json').messages)}; the model is sent "
            f"{len(view)} messages, {stats.tokens_view} tokens (budget 700); "
            f"{stats.facts} facts archived"
        )
        print(f"  model: {answer.text}")
    view = history.messages
    memory = next(m for m in view if m.additional_kwargs.get("context_distill") == "memory")
    print("\nmemory block (first lines):\n" + "\n".join(memory.text.splitlines()[:4]))
    hit = engine.store.search("srv-001", thread_id="migration")
    originals = [h.text for h in hit if h.kind == "message" and h.role == "human"]
    print(f"\nthe first server's message, from the archive:\n{originals[0]}")
    print(f"\nfiles in {folder}")


if __name__ == "__main__":
    main()
