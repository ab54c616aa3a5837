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

_MODULES = (
    "checkout pricing discounts orders payments inventory shipping customers tax receipts "
    "refunds catalog"
).split()
_VERBS = (
    "load apply compute validate build fetch store render normalize merge split round check "
    "resolve emit"
).split()
_NOUNS = (
    "order cart line_item discount coupon total tax_rate invoice payment shipment customer "
    "price currency receipt refund"
).split()


@dataclass(frozen=True)
class Step:
    """One assistant turn: its calls, their results, and a remark."""

    remark: str
    calls: list[tuple[str, dict[str, object], str, str]]  # name, args, result, status


def _code_file(rng: random.Random, module: str, lines: int) -> str:
    out = [
        f'"""{module.capitalize()} logic for the shop service."""',
        "",
        "from decimal import Decimal",
        f"from shop.models import {module.capitalize()}Record",
        "",
    ]
    while len(out) < lines:
        verb, noun = rng.choice(_VERBS), rng.choice(_NOUNS)
        args = ", ".join(rng.sample(["order", "cart", "ctx", "amount", "code", "rate"], 2))
        out.append(f"def {verb}_{noun}({args}):")
        out.append(f'    """{verb.capitalize()} the {noun.replace("_", " ")}."""')
        for _ in range(rng.randint(3, 8)):
            target = rng.choice(_NOUNS)
            op = rng.choice(
                [
                    "Decimal(amount)",
                    f"ctx.get('{target}')",
                    f"{target} * rate",
                    f"round({target}, 2)",
                    f"{args.split(', ')[0]}.{target}",
                ]
            )
            out.append(f"    {target} = {op}")
        if rng.random() < 0.15:
            out.append("    # TODO: handle currencies without minor units")
        out.append(f"    return {rng.choice(_NOUNS)}")
        out.append("")
    return "\n".join(out)


def _pytest_output(rng: random.Random, failed: list[tuple[str, str]], passed: int) -> str:
    lines = [
        "============================= test session starts ==============================",
        "platform linux -- Python 3.11.7, pytest-8.3.2, pluggy-1.5.0",
        "rootdir: /srv/shop",
        f"collected {passed + len(failed)} items",
        "",
    ]
    files = sorted({name.split("::")[0] for name, _ in failed} | {"tests/test_orders.py"})
    for file in files:
        marks = "".join(rng.choice("....F") if failed else "." for _ in range(rng.randint(8, 20)))
        lines.append(f"{file} {marks}")
    lines.append("")
    for name, error in failed:
        lines += [
            "=" * 30 + " FAILURES " + "=" * 30,
            f"___ {name.split('::')[1]} ___",
            "",
            "    def test_case():",
            ">       result = checkout(order)",
            "",
            f"E       {error}",
            "",
            f"{name.split('::')[0]}:42: {error.split(':')[0]}",
        ]
    lines.append("=========================== short test summary info ============================")
    for name, error in failed:
        lines.append(f"FAILED {name} - {error}")
    summary = f"{len(failed)} failed, {passed} passed" if failed else f"{passed} passed"
    lines.append(
        f"======================== {summary} in {rng.uniform(1, 9):.2f}s ========================"
    )
    return "\n".join(lines)


def _order_json(rng: random.Random, order_id: str, discount: bool) -> str:
    items = [
        {
            "sku": f"SKU-{rng.randint(1000, 9999)}",
            "qty": rng.randint(1, 4),
            "unit_price": round(rng.uniform(3, 80), 2),
        }
        for _ in range(rng.randint(1, 4))
    ]
    body = {
        "order_id": order_id,
        "customer_id": f"cus_{rng.randint(10000, 99999)}",
        "status": "failed" if discount else "paid",
        "currency": "EUR",
        "items": items,
        "discount": {"code": "SPRING24", "discount_pct": None} if discount else None,
        "total": round(sum(i["qty"] * i["unit_price"] for i in items), 2),  # type: ignore[operator]
        "created_at": (
            f"2026-11-{rng.randint(1, 20):02d}T{rng.randint(8, 20)}:{rng.randint(10, 59)}:00Z"
        ),
        "request_id": f"req_{rng.getrandbits(48):012x}",
        "source": "staging-api v3",
    }
    return json.dumps(body, indent=2)


def _steps(rng: random.Random) -> Iterator[Step]:
    yield Step(
        "Let me reproduce the failure first.",
        [
            (
                "run_tests",
                {"path": "tests/"},
                _pytest_output(
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
                _order_json(rng, "ord_7Q2X9", True),
                "success",
            ),
            (
                "read_file",
                {"path": "src/shop/checkout.py"},
                _code_file(rng, "checkout", 90),
                "success",
            ),
        ],
    )
    for index in range(180):
        module = _MODULES[index % len(_MODULES)]
        kind = index % 10
        if kind in (0, 5):
            yield Step(
                f"Reading the {module} module.",
                [
                    (
                        "read_file",
                        {"path": f"src/shop/{module}.py"},
                        _code_file(rng, module, rng.randint(40, 110)),
                        "success",
                    )
                ],
            )
        elif kind == 1:
            hits = "\n".join(
                f"src/shop/{rng.choice(_MODULES)}.py:{rng.randint(5, 300)}:    "
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
                        _order_json(rng, order_id, rng.random() < 0.3),
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
                        f"tests/test_{module}.py::test_{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}",
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
                        _pytest_output(rng, failing, rng.randint(10, 40)),
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
                            f"{rng.choice(_VERBS)}_{rng.choice(_NOUNS)}.py"
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
                        f"in {rng.choice(_VERBS)}_{rng.choice(_NOUNS)}\n"
                        f"    rate = ctx['{rng.choice(_NOUNS)}']\n"
                        f"KeyError: '{rng.choice(_NOUNS)}'",
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
                            "content": _code_file(rng, module, rng.randint(20, 40)),
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
                        "\n".join(
                            f"{rng.choice(_NOUNS)}: {rng.randint(0, 100)}" for _ in range(12)
                        ),
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
                        _pytest_output(
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
        [("run_tests", {"path": "tests/"}, _pytest_output(rng, [], 215), "success")],
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
