"""The inspector: a local, read-only web page to look inside an archive.

``serve(store)`` runs it on 127.0.0.1 (``context-distill inspect DB``). The server
needs the ``inspect`` extra (Starlette and uvicorn); the page's script, style and
chart ship in this package, so nothing is fetched from anywhere else.
"""

from __future__ import annotations

from typing import Any, TextIO

from ..errors import MissingExtraError

__all__ = ["build_app", "serve"]

_EXTRA = "pip install 'context-distill[inspect]'"


def _require_server() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            f"the inspector needs Starlette and uvicorn ({exc.name} is missing): {_EXTRA}"
        ) from None


def build_app(store: Any, *, budget: int | None = None, title: str = "") -> Any:
    """The inspector's web application (ASGI) over an open, read-only store."""
    _require_server()
    from .app import make_app

    return make_app(store, budget=budget, title=title)


def serve(
    store: Any,
    *,
    port: int = 8765,
    budget: int | None = None,
    out: TextIO | None = None,
    json_out: bool = False,
    open_browser: bool = False,
) -> None:
    """Serve the inspector on 127.0.0.1 until interrupted."""
    _require_server()
    from .app import run

    run(store, port=port, budget=budget, out=out, json_out=json_out, open_browser=open_browser)
