"""The ``context-distill`` command line: parsing, errors, and output that fits a shell.

Every command is a thin layer over the library (the bodies are in ``_commands``):
reading commands open the archive read-only, every command has ``--json``, an
error names the option it is about, and a closed pipe (``| head``) ends the
command quietly.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from . import _commands as commands
from .demo import SERVING_MODELS
from .errors import ContextDistillError


def _count(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text.replace("_", "").replace(",", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    parse.__name__ = "number"
    return parse


def _json_flag(p: argparse.ArgumentParser, what: str = "print JSON instead of text") -> None:
    p.add_argument("--json", action="store_true", help=what)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="context-distill",
        description="Context memory for long-running agents: distill, archive, recall, inspect.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("replay", help="replay a JSONL session through the engine")
    p.add_argument("session", help="JSONL of OpenAI chat messages or LangChain message dicts")
    p.add_argument("--budget", type=_count(1), required=True, help="token budget of the view")
    p.add_argument("--target", type=_count(1), default=None, help="tokens to distill down to")
    p.add_argument("--keep-recent", type=_count(0), default=None, help="newest tokens verbatim")
    p.add_argument("--distiller", default="extractive", help="extractive, lingua or generative")
    p.add_argument("--db", default=":memory:", help="SQLite archive file (default: in memory)")
    p.add_argument("--thread", default="session", help="thread id to archive under")
    _json_flag(p, "print one JSON object: the final view and the stats")
    p.set_defaults(run=commands.replay_command)

    p = sub.add_parser("threads", help="the threads of an archive, with counts")
    p.add_argument("db")
    _json_flag(p)
    p.set_defaults(run=commands.threads_command)

    p = sub.add_parser("search", help="full-text search: snippets around each match")
    p.add_argument("db")
    p.add_argument("query")
    p.add_argument("--thread", default=None, help="search only this thread")
    p.add_argument("--limit", type=_count(1), default=20, help="most results (default 20)")
    p.add_argument("--full", action="store_true", help="whole messages instead of snippets")
    _json_flag(p)
    p.set_defaults(run=commands.search_command)

    p = sub.add_parser("stats", help="what an archive holds")
    p.add_argument("db")
    p.add_argument("--thread", default=None)
    _json_flag(p)
    p.set_defaults(run=commands.stats_command)

    p = sub.add_parser("show", help="one thread's distillations and facts")
    p.add_argument("db")
    p.add_argument("--thread", default=None, help="the thread (default: the only one)")
    _json_flag(p)
    p.set_defaults(run=commands.show_command)

    p = sub.add_parser("inspect", help="a local web page to look inside an archive")
    p.add_argument("db")
    p.add_argument("--port", type=_count(0), default=8765, help="port on 127.0.0.1 (8765)")
    p.add_argument("--budget", type=_count(1), default=None, help="draw this budget line")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    _json_flag(p, "print the page's address as JSON, then serve")
    p.set_defaults(run=commands.inspect_command)

    p = sub.add_parser("demo", help="a scripted 200+ tool-call agent session, offline")
    p.add_argument("--budget", type=_count(1), default=6000)
    p.add_argument("--distiller", default="extractive")
    p.add_argument("--db", default=None, help="keep the demo archive in this file")
    p.add_argument("--serving-model", choices=sorted(SERVING_MODELS), default="llama-3.1-8b")
    _json_flag(p, "print the figures as one JSON object")
    p.set_defaults(run=commands.demo_command)
    return parser


def _quiet_stdout() -> None:
    """After a closed pipe: send what is left to /dev/null, so exit prints no traceback."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``context-distill`` command."""
    stream = out if out is not None else sys.stdout
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args, stream)
        stream.flush()
        return code
    except BrokenPipeError:
        if stream is sys.stdout:
            _quiet_stdout()
        return 0
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            if stream is sys.stdout:
                _quiet_stdout()
            return 0
        sys.stderr.write(f"context-distill: {exc}\n")
        return 2
    except (ContextDistillError, ValueError) as exc:
        sys.stderr.write(f"context-distill: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
