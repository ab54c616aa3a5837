"""Turn the evaluation data sets into replayable sessions.

Every loader returns :class:`Replay` objects: an OpenAI chat-format message list
(``role``, ``content``, optional ``tool_calls`` / ``tool_call_id``) that a
benchmark feeds through a memory system turn by turn, plus what the final view
should still hold (questions with gold answers, or gold values). The data is
never shipped with the library, so every loader takes a path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.scoring import contains_value, message_text

Message = dict[str, Any]

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
LOCOMO_PATH = DATA_ROOT / "locomo" / "locomo10.json"
TAU_AIRLINE_PATH = DATA_ROOT / "tau_bench" / "gpt-4o-airline.json"
BFCL_MEMORY_DIR = DATA_ROOT / "bfcl_memory"

LOCOMO_CATEGORIES = {
    1: "multi-hop",
    2: "temporal",
    3: "open-domain",
    4: "single-hop",
    5: "adversarial",
}


@dataclass(frozen=True)
class Question:
    """One question about a replayed session.

    ``answers`` holds the accepted gold answers: LoCoMo has one, BFCL lists
    alternatives of which any one counts. ``scored`` is False for questions that
    have no answer in the conversation (LoCoMo category 5), which are kept for
    completeness but left out of every score.
    """

    id: str
    question: str
    answers: tuple[str, ...]
    category: str
    scored: bool = True


@dataclass
class Replay:
    """A conversation or trajectory to replay, and what should survive it."""

    id: str
    messages: list[Message]
    questions: list[Question] = field(default_factory=list)
    gold_values: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- LoCoMo


def _locomo_sessions(conversation: dict[str, Any]) -> Iterator[tuple[int, str, list[Any]]]:
    """Sessions in numeric order; date-only keys without dialogue are skipped."""
    numbers = sorted(
        int(m.group(1))
        for key, value in conversation.items()
        if (m := re.fullmatch(r"session_(\d+)", key)) and isinstance(value, list) and value
    )
    for n in numbers:
        yield n, str(conversation.get(f"session_{n}_date_time", "")), conversation[f"session_{n}"]


def locomo_messages(conversation: dict[str, Any]) -> list[Message]:
    """One message per dialogue turn; each session opened by a dated user line.

    speaker_a speaks as ``user`` and speaker_b as ``assistant`` so that a
    two-person chat has the alternating shape an agent history has.
    """
    speaker_a = conversation["speaker_a"]
    messages: list[Message] = []
    for n, date_time, turns in _locomo_sessions(conversation):
        messages.append({"role": "user", "content": f"Session {n} — {date_time}"})
        for turn in turns:
            text = f"{turn['speaker']}: {turn['text']}"
            caption = turn.get("blip_caption")
            if caption:
                text += f" [shares photo: {caption}]"
            role = "user" if turn["speaker"] == speaker_a else "assistant"
            messages.append({"role": role, "content": text})
    return messages


def _locomo_question(sample_id: str, index: int, qa: dict[str, Any]) -> Question:
    category = int(qa["category"])
    # Category 5 is unanswerable by design: its gold is the trap answer, never scored.
    answer = qa.get("adversarial_answer", qa.get("answer", "")) if category == 5 else qa["answer"]
    return Question(
        id=f"{sample_id}/q{index}",
        question=str(qa["question"]),
        answers=(str(answer),),
        category=str(category),
        scored=category != 5,
    )


def load_locomo(path: str | Path = LOCOMO_PATH, limit: int | None = None) -> list[Replay]:
    """LoCoMo conversations in file order, at most ``limit`` of them."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    replays = []
    for sample in data[:limit]:
        conversation = sample["conversation"]
        sample_id = str(sample["sample_id"])
        replays.append(
            Replay(
                id=sample_id,
                messages=locomo_messages(conversation),
                questions=[_locomo_question(sample_id, i, qa) for i, qa in enumerate(sample["qa"])],
                meta={"speakers": (conversation["speaker_a"], conversation["speaker_b"])},
            )
        )
    return replays


# --------------------------------------------------------------------- tau-bench

# Tools of the airline domain that change the booking database. The read tools
# (get_*, search_*, list_all_airports, calculate, think) and the hand-off
# transfer_to_human_agents change nothing, so they never end a cut.
TAU_AIRLINE_WRITE_TOOLS = frozenset(
    {
        "book_reservation",
        "cancel_reservation",
        "update_reservation_flights",
        "update_reservation_baggages",
        "update_reservation_passengers",
        "send_certificate",
    }
)

# Argument fields whose values are enumerations or tiny counts ("economy",
# "one_way", "no", "0"): they match almost any text, so retaining them proves
# nothing. Ids, names, dates, flight numbers, airports and amounts stay gold.
TAU_UNINFORMATIVE_FIELDS = frozenset(
    {"cabin", "flight_type", "insurance", "total_baggages", "nonfree_baggages"}
)


def _scalars(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Flatten nested arguments into (field name, scalar) pairs."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _scalars(v, str(k))
    elif isinstance(value, list):
        for v in value:
            yield from _scalars(v, key)
    else:
        yield key, value


def _scalar_text(value: Any) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def _tau_gold_actions(entry: dict[str, Any]) -> list[dict[str, Any]]:
    info = entry.get("info") or {}
    actions = (info.get("reward_info") or {}).get("actions")
    if actions is None:  # a few entries lack reward_info; the task holds the same actions
        actions = (info.get("task") or {}).get("actions") or []
    return [a for a in actions if a.get("name") in TAU_AIRLINE_WRITE_TOOLS]


def tau_gold_values(actions: list[dict[str, Any]]) -> list[str]:
    """Distinct informative scalar argument values of the given actions, in order."""
    values: list[str] = []
    for action in actions:
        for key, raw in _scalars(action.get("kwargs") or {}):
            text = _scalar_text(raw)
            if text is None or key in TAU_UNINFORMATIVE_FIELDS:
                continue
            if text.lower() not in (v.lower() for v in values):
                values.append(text)
    return values


def _normalise_tau_message(message: dict[str, Any]) -> Message:
    out: Message = {"role": message["role"], "content": message.get("content") or ""}
    if message.get("tool_calls"):
        out["tool_calls"] = message["tool_calls"]
    if message.get("tool_call_id"):
        out["tool_call_id"] = message["tool_call_id"]
    if message.get("name") and message["role"] == "tool":
        out["name"] = message["name"]
    return out


def load_tau_airline(path: str | Path = TAU_AIRLINE_PATH) -> list[Replay]:
    """Trajectories cut just before the agent's last write call.

    The cut history is what the agent had to go on when it wrote; the gold
    values are the gold write actions' arguments that this history already
    contains (a value the agent never saw cannot be retained or lost).
    Trajectories without a write call or without gold write actions are skipped.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    replays = []
    for entry in data:
        traj = entry["traj"]
        writes = [
            i
            for i, m in enumerate(traj)
            if m.get("role") == "assistant"
            and any(
                (c.get("function") or {}).get("name") in TAU_AIRLINE_WRITE_TOOLS
                for c in m.get("tool_calls") or []
            )
        ]
        gold_actions = _tau_gold_actions(entry)
        if not writes or not gold_actions:
            continue
        messages = [_normalise_tau_message(m) for m in traj[: writes[-1]]]
        history = "\n".join(message_text(m) for m in messages)
        gold = [v for v in tau_gold_values(gold_actions) if contains_value(history, v)]
        if not gold:
            continue
        replays.append(
            Replay(
                id=f"task{entry['task_id']}/trial{entry.get('trial', 0)}",
                messages=messages,
                gold_values=gold,
                meta={
                    "task_id": entry["task_id"],
                    "trial": entry.get("trial"),
                    "reward": entry.get("reward"),
                    "cut_before": traj[writes[-1]]["tool_calls"][0]["function"]["name"],
                },
            )
        )
    return replays


# -------------------------------------------------------------------- BFCL memory

BFCL_SCENARIOS = ("customer", "finance", "healthcare", "notetaker", "student")


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _prereq_order(entry: dict[str, Any]) -> int:
    match = re.search(r"-(\d+)$", str(entry["id"]))
    return int(match.group(1)) if match else 0


def load_bfcl_memory(data_dir: str | Path = BFCL_MEMORY_DIR) -> list[Replay]:
    """One replay per scenario: its prerequisite conversations, then its questions.

    BFCL asks every question of a scenario after all of that scenario's
    prerequisite conversations, so they are concatenated in order. Each user
    turn is one message (the data holds user turns only). Gold answers are
    alternatives: a question is retained when any one of them is.
    """
    root = Path(data_dir)
    questions = _jsonl(root / "BFCL_v4_memory.json")
    answers = {a["id"]: a for a in _jsonl(root / "possible_answer" / "BFCL_v4_memory.json")}
    replays = []
    for scenario in BFCL_SCENARIOS:
        prereq_path = root / "memory_prereq_conversation" / f"memory_{scenario}.json"
        if not prereq_path.exists():
            continue
        conversations = sorted(_jsonl(prereq_path), key=_prereq_order)
        messages: list[Message] = []
        for conversation in conversations:
            for turn in conversation["question"]:
                for message in turn:
                    messages.append({"role": message["role"], "content": message["content"]})
        scenario_questions = []
        for q in questions:
            if q.get("scenario") != scenario:
                continue
            text = " ".join(
                m["content"] for turn in q["question"] for m in turn if m["role"] == "user"
            )
            gold = answers.get(q["id"], {}).get("ground_truth", [])
            scenario_questions.append(
                Question(
                    id=str(q["id"]),
                    question=text,
                    answers=tuple(str(g) for g in gold),
                    category=scenario,
                    scored=bool(gold),
                )
            )
        replays.append(
            Replay(
                id=scenario,
                messages=messages,
                questions=scenario_questions,
                meta={"topics": [c.get("topic") for c in conversations]},
            )
        )
    return replays
