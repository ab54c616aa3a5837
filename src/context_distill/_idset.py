"""A compact set of message ids: eight bytes an id, for threads of any length."""

from __future__ import annotations

import hashlib
from array import array
from bisect import bisect_left
from collections.abc import Iterable


def _key(message_id: str) -> int:
    digest = hashlib.blake2b(message_id.encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "little", signed=True)


class IdSet:
    """Membership of string ids by their 64-bit hashes, kept sorted in one array.

    A false positive needs a 64-bit collision; callers that act on a hit confirm it
    against the archive.
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        self._keys = array("q", sorted({_key(i) for i in ids}))

    def add_all(self, ids: Iterable[str]) -> None:
        keys = self._keys
        for key in sorted({_key(i) for i in ids}):
            at = bisect_left(keys, key)
            if at == len(keys) or keys[at] != key:
                keys.insert(at, key)

    def __contains__(self, message_id: object) -> bool:
        if not isinstance(message_id, str):
            return False
        key = _key(message_id)
        at = bisect_left(self._keys, key)
        return at < len(self._keys) and self._keys[at] == key

    def __len__(self) -> int:
        return len(self._keys)
