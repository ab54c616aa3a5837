"""What the distillers that run a local model share: loading it, and batching callers."""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Sequence

from ..models.batcher import MicroBatcher
from ..models.loading import LazyModel, LoadedModel, require_local_extra
from ..types import Group, GroupFacts
from .base import Distiller


class LocalModelDistiller(Distiller):
    """A distiller whose model loads on first use (once per process) and whose
    concurrent calls from several threads are merged into one batch."""

    def __init__(
        self,
        model: str | os.PathLike[str] | LoadedModel | None,
        device: str | None,
        dtype: str | None,
        batch_window_s: float,
    ) -> None:
        if not isinstance(model, LoadedModel):
            require_local_extra(f"the {self.name} distiller")
        self._model = LazyModel(model, device, dtype)
        self._batcher: MicroBatcher[Group, GroupFacts] = MicroBatcher(
            self._distill_batch, window_s=batch_window_s
        )

    @property
    def model(self) -> LoadedModel:
        """The model, loaded on first use (once per process)."""
        return self._model.get()

    def distill(self, groups: Sequence[Group]) -> list[GroupFacts]:
        return self._batcher.submit(groups)

    @abstractmethod
    def _distill_batch(self, groups: list[Group]) -> list[GroupFacts]:
        """One result per group of every caller's groups merged into one batch."""
