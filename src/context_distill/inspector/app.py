"""The inspector's web application: a JSON API over ``data`` and the page that uses it.

Starlette serves it and uvicorn runs it, on 127.0.0.1 only. Every route is a GET
that reads; the store is opened read-only by the caller. Sync endpoints run in
Starlette's thread pool and share the store, which is safe across threads.
"""

from __future__ import annotations

import json
import logging
import socket
import webbrowser
from collections.abc import Callable
from typing import Any, TextIO

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import ContextDistillError, StoreError
from . import data

logger = logging.getLogger(__name__)

HOST = "127.0.0.1"
_STATIC = ("context_distill.inspector", "static")


class _Api:
    """The routes, bound to one store."""

    def __init__(self, store: Any, budget: int | None, title: str) -> None:
        self.store = store
        self.budget = budget
        self.title = title

    def _thread(self, request: Request) -> str:
        thread: str = request.query_params.get("thread", "")
        if thread not in self.store.threads():
            raise LookupError(f"no thread {thread!r} in this archive")
        return thread

    def info(self, request: Request) -> Any:
        return {"title": self.title, "budget": self.budget, "threads": self.store.threads()}

    def threads(self, request: Request) -> Any:
        return data.thread_summaries(self.store)

    def timeline(self, request: Request) -> Any:
        return data.timeline(self.store, self._thread(request))

    def chart(self, request: Request) -> Any:
        return data.chart(self.store, self._thread(request), self.budget)

    def facts(self, request: Request) -> Any:
        return data.facts_with_sources(self.store, self._thread(request))

    def memory(self, request: Request) -> Any:
        return data.memory_now(self.store, self._thread(request))

    def log(self, request: Request) -> Any:
        return self.store.distillations(self._thread(request))

    def message(self, request: Request) -> Any:
        thread = self._thread(request)
        ref = _int(request.query_params.get("ref"), "ref")
        offset = _int(request.query_params.get("offset", "0"), "offset")
        found = data.original(self.store, thread, ref, offset)
        if found is None:
            raise LookupError(f"no message #{ref} in thread {thread!r}")
        return found

    def search(self, request: Request) -> Any:
        query = request.query_params.get("q", "").strip()
        thread = request.query_params.get("thread") or None
        if not query:
            return []
        return data.search(self.store, query, thread)


def _int(text: str | None, name: str) -> int:
    try:
        return int(text or "")
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {text!r}") from None


def _endpoint(body: Callable[[Request], Any]) -> Callable[[Request], Response]:
    """A sync route that answers JSON, and a short JSON error for bad requests."""

    def endpoint(request: Request) -> Response:
        try:
            return JSONResponse(body(request))
        except LookupError as exc:
            return JSONResponse({"error": str(exc).strip("'\"")}, status_code=404)
        except (ValueError, ContextDistillError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return endpoint


def make_app(store: Any, *, budget: int | None = None, title: str = "") -> Starlette:
    api = _Api(store, budget, title or getattr(store, "path", "archive"))
    static = StaticFiles(packages=[_STATIC])
    index = static.lookup_path("index.html")[0]

    def page(request: Request) -> Response:
        return FileResponse(index, headers={"Cache-Control": "no-store"})

    routes = [
        Route("/", page),
        Mount("/static", app=static, name="static"),
    ]
    for name in (
        "info",
        "threads",
        "timeline",
        "chart",
        "facts",
        "memory",
        "log",
        "message",
        "search",
    ):
        routes.append(Route(f"/api/{name}", _endpoint(getattr(api, name))))
    return Starlette(routes=routes)


def bind(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1 (port 0: any free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise StoreError(
            f"--port {port}: cannot listen on {HOST}:{port} ({exc.strerror})"
        ) from None
    sock.listen(64)
    return sock


def server_for(app: Starlette) -> uvicorn.Server:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    return uvicorn.Server(config)


def run(
    store: Any,
    *,
    port: int,
    budget: int | None,
    out: TextIO | None,
    json_out: bool,
    open_browser: bool,
) -> None:
    sock = bind(port)
    url = f"http://{HOST}:{sock.getsockname()[1]}/"
    if out is not None:
        if json_out:
            out.write(json.dumps({"url": url, "db": getattr(store, "path", None)}) + "\n")
        else:
            out.write(f"inspecting {getattr(store, 'path', 'the archive')} (read-only) at {url}\n")
            out.write("press Ctrl-C to stop\n")
        out.flush()
    if open_browser:
        webbrowser.open(url)
    server = server_for(make_app(store, budget=budget))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
