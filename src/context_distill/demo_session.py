"""The demo's scripted coding-agent session (also replayed by the benchmarks).

A deterministic session of a few hundred tool calls: an agent hunting a bug in a
checkout service reads files, greps, calls a JSON API, runs tests that fail and
then pass, hits errors, and makes a few parallel calls. Nothing here talks to a
model or the network.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from ._demo_outputs import MODULES, NOUNS, VERBS, code_file, order_json, pytest_output

SYSTEM_PROMPT = (
    "You are a careful software engineering agent. You work in the repository at "
    "/srv/shop. Use the tools to read code, search, call the staging API and run tests. "
    "Make minimal changes and keep every test green."
)
TASK = (
    "Checkout returns HTTP 500 for orders that use a discount code (customer report "
    "ticket SUP-4471, order ord_7Q2X9). Find the cause, fix it, add a regression test, "
    "and make sure the whole test suite passes."
)
#: A detail of the first tool results that the demo recalls at the end, verbatim.
EARLY_DETAIL = "discount_pct"


@dataclass(frozen=True)
class Step:
    """One assistant turn: its calls, their results, and a remark."""

    remark: str
    calls: list[tuple[str, dict[str, object], str, str]]  # name, args, result, status


def _steps(rng: random.Random) -> Iterator[Step]:
    yield Step(
        "Let me reproduce the failure first.",
        [
            (
                "run_tests",
                {"path": "tests/"},
                pytest_output(
                    rng,
                    [
                        ("tests/test_checkout.py::test_discount_code", "KeyError: 'discount_pct'"),
                        (
                            "tests/test_checkout.py::test_discount_rounding",
                            "KeyError: 'discount_pct'",
                        ),
                    ],
                    212,
                ),
                "success",
            )
        ],
    )
    yield Step(
        "I'll look at the failing order and the checkout module together.",
        [
            (
                "http_get",
                {"url": "https://staging.shop.internal/api/orders/ord_7Q2X9"},
                order_json(rng, "ord_7Q2X9", True),
                "success",
            ),
            (
                "read_file",
                {"path": "src/shop/checkout.py"},
                code_file(rng, "checkout", 90),
                "success",
            ),
        ],
    )
    for index in range(180):
        module = MODULES[index % len(MODULES)]
        kind = index % 10
        if kind in (0, 5):
            yield Step(
                f"Reading the {module} module.",
                [
                    (
                        "read_file",
                        {"path": f"src/shop/{module}.py"},
                        code_file(rng, module, rng.randint(40, 110)),
                        "success",
                    )
                ],
            )
        elif kind == 1:
            hits = "\n".join(
                f"src/shop/{rng.choice(MODULES)}.py:{rng.randint(5, 300)}:    "
                f"pct = data['discount_pct']"
                for _ in range(rng.randint(2, 9))
            )
            yield Step(
                "Searching for other uses.",
                [("grep", {"pattern": "discount_pct", "path": "src/"}, hits, "success")],
            )
        elif kind == 2:
            order_id = f"ord_{rng.getrandbits(30):08X}"
            yield Step(
                "Checking more orders in parallel.",
                [
                    (
                        "http_get",
                        {"url": f"https://staging.shop.internal/api/orders/{order_id}"},
                        order_json(rng, order_id, rng.random() < 0.3),
                        "success",
                    ),
                    (
                        "http_get",
                        {"url": f"https://staging.shop.internal/api/customers/cus_{index}"},
                        json.dumps(
                            {
                                "customer_id": f"cus_{index}",
                                "tier": rng.choice(["gold", "basic"]),
                                "country": rng.choice(["DE", "FR", "NL"]),
                                "request_id": "req_x",
                            }
                        ),
                        "success",
                    ),
                ],
            )
        elif kind == 3:
            failing = (
                []
                if index > 150
                else [
                    (
                        f"tests/test_{module}.py::test_{rng.choice(VERBS)}_{rng.choice(NOUNS)}",
                        rng.choice(
                            [
                                "KeyError: 'discount_pct'",
                                "AssertionError: assert Decimal('9.99') == Decimal('10.00')",
                                "TypeError: unsupported operand type(s) for *: "
                                "'NoneType' and 'Decimal'",
                            ]
                        ),
                    )
                ]
            )
            yield Step(
                "Running the module's tests.",
                [
                    (
                        "run_tests",
                        {"path": f"tests/test_{module}.py"},
                        pytest_output(rng, failing, rng.randint(10, 40)),
                        "success",
                    )
                ],
            )
        elif kind == 4:
            yield Step(
                "Listing the package.",
                [
                    (
                        "list_dir",
                        {"path": f"src/shop/{module}"},
                        "\n".join(
                            f"{rng.choice(VERBS)}_{rng.choice(NOUNS)}.py"
                            for _ in range(rng.randint(4, 14))
                        ),
                        "success",
                    )
                ],
            )
        elif kind == 6:
            yield Step(
                "Trying the migration script.",
                [
                    (
                        "run_command",
                        {"cmd": f"python -m shop.migrate --check {module}"},
                        "Traceback (most recent call last):\n"
                        f'  File "/srv/shop/src/shop/{module}.py", line {rng.randint(10, 200)}, '
                        f"in {rng.choice(VERBS)}_{rng.choice(NOUNS)}\n"
                        f"    rate = ctx['{rng.choice(NOUNS)}']\n"
                        f"KeyError: '{rng.choice(NOUNS)}'",
                        "error",
                    )
                ],
            )
        elif kind == 7:
            yield Step(
                "Editing the file.",
                [
                    (
                        "write_file",
                        {
                            "path": f"src/shop/{module}.py",
                            "content": code_file(rng, module, rng.randint(20, 40)),
                        },
                        f"wrote src/shop/{module}.py ({rng.randint(800, 4000)} bytes)",
                        "success",
                    )
                ],
            )
        elif kind == 8:
            yield Step(
                "Checking the pricing API in parallel.",
                [
                    (
                        "http_get",
                        {"url": f"https://staging.shop.internal/api/prices/SKU-{1000 + index}"},
                        json.dumps(
                            {
                                "sku": f"SKU-{1000 + index}",
                                "price": round(rng.uniform(1, 99), 2),
                                "currency": "EUR",
                                "vat_pct": 19,
                                "request_id": "req_y",
                            }
                        ),
                        "success",
                    ),
                    (
                        "http_get",
                        {"url": f"https://staging.shop.internal/api/stock/SKU-{1000 + index}"},
                        json.dumps(
                            {
                                "sku": f"SKU-{1000 + index}",
                                "in_stock": rng.randint(0, 500),
                                "warehouse": rng.choice(["BER-1", "AMS-2"]),
                                "etag": 'W/"1"',
                            }
                        ),
                        "success",
                    ),
                    (
                        "read_file",
                        {"path": f"src/shop/{module}_rules.yaml"},
                        "\n".join(f"{rng.choice(NOUNS)}: {rng.randint(0, 100)}" for _ in range(12)),
                        "success",
                    ),
                ],
            )
        else:
            yield Step(
                "Running the whole suite.",
                [
                    (
                        "run_tests",
                        {"path": "tests/"},
                        pytest_output(
                            rng,
                            []
                            if index > 150
                            else [
                                (
                                    "tests/test_checkout.py::test_discount_code",
                                    "KeyError: 'discount_pct'",
                                )
                            ],
                            rng.randint(200, 230),
                        ),
                        "success",
                    )
                ],
            )
    yield Step(
        "All green. Summarising the fix.",
        [("run_tests", {"path": "tests/"}, pytest_output(rng, [], 215), "success")],
    )


def build_session(seed: int = 7) -> list[BaseMessage]:
    """The whole scripted session: system prompt, task, and every turn after."""
    rng = random.Random(seed)
    messages: list[BaseMessage] = [
        SystemMessage(SYSTEM_PROMPT, id="sys"),
        HumanMessage(TASK, id="task"),
    ]
    call_number = 0
    for turn, step in enumerate(_steps(rng)):
        calls = []
        results = []
        for name, args, result, status in step.calls:
            call_number += 1
            call_id = f"call_{call_number:04d}"
            calls.append({"name": name, "args": args, "id": call_id})
            results.append(
                ToolMessage(
                    result,
                    tool_call_id=call_id,
                    name=name,
                    status=status,
                    id=f"res_{call_number:04d}",
                )
            )
        messages.append(AIMessage(step.remark, tool_calls=calls, id=f"ai_{turn:04d}"))
        messages.extend(results)
    messages.append(
        AIMessage(
            "Fixed: checkout read discount['discount_pct'] without a default; it now treats a "
            "missing percentage as 0 and validates codes first. Added "
            "tests/test_checkout.py::test_discount_code_without_pct. Full suite: 216 passed.",
            id="ai_final",
        )
    )
    return messages


def tool_calls_in(messages: list[BaseMessage]) -> int:
    return sum(len(m.tool_calls) for m in messages if isinstance(m, AIMessage))
