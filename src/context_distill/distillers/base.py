"""The one interface every distiller shares: old groups in, facts out."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Sequence

from ..types import Group, GroupFacts


class Distiller(ABC):
    """Turns groups of old messages into telegraphic facts.

    ``distill`` receives a batch (possibly groups of several threads) and returns one
    ``GroupFacts`` per group, in order. It may raise; the engine treats any exception,
    a timeout, or a group without facts as a failed distillation and keeps the history
    as it was. Implementations must be safe to call from several threads at once.
    """

    #: Short name recorded in the distillation log.
    name: str = "distiller"

    @abstractmethod
    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        """Distill each group; return one result per group, in the same order."""

    async def adistill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        """Async twin of :meth:`distill`; by default runs it in a worker thread."""
        return await asyncio.to_thread(self.distill, groups)
