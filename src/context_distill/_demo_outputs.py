"""What the demo session's tools print: source files, pytest runs, order JSON.

Deterministic given the random generator the session passes in.
"""

from __future__ import annotations

import json
import random

MODULES = (
    "checkout pricing discounts orders payments inventory shipping customers tax receipts "
    "refunds catalog"
).split()
VERBS = (
    "load apply compute validate build fetch store render normalize merge split round check "
    "resolve emit"
).split()
NOUNS = (
    "order cart line_item discount coupon total tax_rate invoice payment shipment customer "
    "price currency receipt refund"
).split()


def code_file(rng: random.Random, module: str, lines: int) -> str:
    out = [
        f'"""{module.capitalize()} logic for the shop service."""',
        "",
        "from decimal import Decimal",
        f"from shop.models import {module.capitalize()}Record",
        "",
    ]
    while len(out) < lines:
        verb, noun = rng.choice(VERBS), rng.choice(NOUNS)
        args = ", ".join(rng.sample(["order", "cart", "ctx", "amount", "code", "rate"], 2))
        out.append(f"def {verb}_{noun}({args}):")
        out.append(f'    """{verb.capitalize()} the {noun.replace("_", " ")}."""')
        for _ in range(rng.randint(3, 8)):
            target = rng.choice(NOUNS)
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
        out.append(f"    return {rng.choice(NOUNS)}")
        out.append("")
    return "\n".join(out)


def pytest_output(rng: random.Random, failed: list[tuple[str, str]], passed: int) -> str:
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


def order_json(rng: random.Random, order_id: str, discount: bool) -> str:
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
