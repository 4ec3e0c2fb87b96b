"""A small LRU map bounded by entry count and by total weight, with an optional time to live."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    def __init__(
        self,
        max_items: int = 1_000_000,
        max_weight: int = 1 << 62,
        ttl_s: float | None = None,
        weigh: Callable[[V], int] = lambda _: 0,
    ):
        self.max_items, self.max_weight, self.ttl_s, self.weigh = max_items, max_weight, ttl_s, weigh
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self.weight = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: K) -> V | None:
        self._expire()
        entry = self._items.get(key)
        if entry is None:
            return None
        self._items.move_to_end(key)
        self._items[key] = (time.monotonic(), entry[1])  # order stays oldest-first for _expire
        return entry[1]

    def put(self, key: K, value: V) -> None:
        self.pop(key)
        self._items[key] = (time.monotonic(), value)
        self.weight += self.weigh(value)
        while len(self._items) > self.max_items or self.weight > self.max_weight:
            self.pop(next(iter(self._items)))

    def pop(self, key: K) -> V | None:
        entry = self._items.pop(key, None)
        if entry is None:
            return None
        self.weight -= self.weigh(entry[1])
        return entry[1]

    def _expire(self) -> None:
        if self.ttl_s is None:
            return
        deadline = time.monotonic() - self.ttl_s
        while self._items and next(iter(self._items.values()))[0] < deadline:
            self.pop(next(iter(self._items)))
