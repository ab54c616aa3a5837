"""Background distillation: facts made ahead, before the turn that will need them.

Past a soft threshold the engine hands the groups the next crossing will distill
to a worker thread; the crossing turn then commits what is ready instead of
waiting for a model. Results are keyed by exactly what they were made of, so a
group that changed meanwhile is simply made again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .types import Fact, Group, GroupFacts

logger = logging.getLogger(__name__)


def prepared_key(group: Group) -> tuple[Any, ...]:
    return (group.message_ids, group.anchor, group.target_tokens)


def clean_fact_text(text: str) -> str:
    """A fact on one line, spaces collapsed: how the memory block shows it."""
    return " ".join(text.replace("\r", " ").replace("\n", " ; ").split())


class Prefetch:
    """One thread's facts made ahead, and the worker making them."""

    def __init__(self) -> None:
        self._prepared: dict[tuple[Any, ...], GroupFacts] = {}
        self._lock = threading.Lock()
        self._running: threading.Event | None = None  # set when the running worker ends

    def clear(self) -> None:
        with self._lock:
            self._prepared.clear()

    def busy(self) -> bool:
        running = self._running
        return running is not None and not running.is_set()

    def wait(self, timeout: float | None) -> bool:
        """Wait for the running worker, if any; False if ``timeout`` passed first."""
        running = self._running
        return running is None or running.wait(timeout)

    def missing(self, groups: Sequence[Group], live_ids: set[str]) -> list[Group]:
        """Of ``groups``, those not made yet; results for groups gone from the view are
        dropped (distilled meanwhile, or made for another anchor)."""
        with self._lock:
            for key in [k for k in self._prepared if not set(k[0]) <= live_ids]:
                del self._prepared[key]
            return [g for g in groups if prepared_key(g) not in self._prepared]

    def start(
        self,
        thread_id: str,
        groups: list[Group],
        distill: Callable[[list[Group]], list[GroupFacts]],
        prepare: Callable[[Iterable[str]], None],
    ) -> None:
        """Make facts for ``groups`` in a worker thread; ``prepare`` pre-parses fact texts."""
        done = threading.Event()
        self._running = done

        def work() -> None:
            try:
                results = distill(groups)
                if isinstance(results, list) and len(results) == len(groups):
                    prepare(
                        clean_fact_text(fact.text)
                        for result in results
                        if isinstance(result, GroupFacts)
                        for fact in result.facts
                        if isinstance(fact, Fact) and isinstance(fact.text, str)
                    )
                    with self._lock:
                        for group, result in zip(groups, results, strict=True):
                            if isinstance(result, GroupFacts) and result.facts:
                                self._prepared[prepared_key(group)] = result
            except Exception as exc:  # the crossing turn distills these itself
                logger.warning(
                    "thread %s: background distillation failed (%s); will distill in the "
                    "foreground",
                    thread_id,
                    exc,
                )
            finally:
                done.set()

        threading.Thread(target=work, name="context-distill-background", daemon=True).start()

    def peek(self, groups: Sequence[Group]) -> list[GroupFacts | None]:
        """The facts made for each group, None where there are none."""
        with self._lock:
            return [self._prepared.get(prepared_key(g)) for g in groups]

    def discard(self, groups: Sequence[Group]) -> None:
        """Forget the facts made for groups that are being distilled now."""
        with self._lock:
            for group in groups:
                self._prepared.pop(prepared_key(group), None)
