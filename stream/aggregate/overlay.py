"""A write-back overlay on a faust table: one changelog record per key and batch."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

__all__ = ["StagedTable"]

_DELETED = object()


class StagedTable(MutableMapping[str, Any]):
    """Changes of one batch kept in memory, written to the backing table by :meth:`flush`.

    The aggregator changes a pane many times per batch; through the overlay each changed key
    becomes one changelog record when the batch is flushed, not one per event. Reads go
    through the table. (Reading the store's dict directly is faster, but touching
    ``table.data`` before the app runs makes faust hang when it stops the table.)

    The backing table may be attached after construction (:meth:`attach`): the aggregator
    names its tables after the pane size, which the window engine built on the overlays
    computes.

    >>> backing: dict[str, int] = {"a": 1}
    >>> staged = StagedTable(backing)
    >>> staged["b"] = 2
    >>> del staged["a"]
    >>> sorted(staged), backing
    (['b'], {'a': 1})
    >>> staged.flush()
    >>> backing
    {'b': 2}
    """

    def __init__(self, backing: MutableMapping[str, Any] | None = None) -> None:
        self._backing = backing
        self.changes: dict[str, Any] = {}

    def attach(self, backing: MutableMapping[str, Any]) -> None:
        """Use ``backing`` (a faust table) from now on."""
        self._backing = backing

    @property
    def backing(self) -> MutableMapping[str, Any]:
        """The table the changes are written to."""
        if self._backing is None:
            raise RuntimeError("StagedTable has no backing table yet (attach one)")
        return self._backing

    def __getitem__(self, key: str) -> Any:
        if key in self.changes:
            value = self.changes[key]
            if value is _DELETED:
                raise KeyError(key)
            return value
        return self.backing[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self.changes[key] = value

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        self.changes[key] = _DELETED

    def __contains__(self, key: object) -> bool:
        if key in self.changes:
            return self.changes[key] is not _DELETED
        return key in self.backing

    def __iter__(self) -> Iterator[str]:
        for key in list(self.backing.keys()):
            if key not in self.changes:
                yield key
        for key, value in list(self.changes.items()):
            if value is not _DELETED:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def flush(self) -> None:
        """Write the staged changes to the table (its changelog)."""
        for key, value in self.changes.items():
            if value is _DELETED:
                if key in self.backing:
                    del self.backing[key]
            else:
                self.backing[key] = value
        self.changes.clear()
