"""String → list-of-ids lookups that load fast: most keys have one id, so a plain ``dict`` of one id
per key (built by ``dict(zip(...))`` in C from stored lists) plus a small dict of the keys with more."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class Lookup:
    """``key → [ids]``; :meth:`get` returns a list (or ``default``)."""

    __slots__ = ("one", "many")

    def __init__(self, one: dict[str, int] | None = None, many: dict[str, list[int]] | None = None) -> None:
        self.one: dict[str, int] = one if one is not None else {}
        self.many: dict[str, list[int]] = many if many is not None else {}

    @classmethod
    def from_pairs(cls, keys: Iterable[str], ids: Iterable[int], many: dict[str, list[int]]) -> Lookup:
        """From parallel key/id lists (duplicate keys must also be listed, in full, in ``many``)."""
        return cls(dict(zip(keys, ids, strict=True)), many)

    def get(self, key: str, default: list[int] | tuple[()] = ()) -> list[int] | tuple[()]:
        found = self.many.get(key)
        if found is not None:
            return found
        one = self.one.get(key)
        return default if one is None else [one]

    def __contains__(self, key: object) -> bool:
        return key in self.one

    def __iter__(self) -> Iterator[str]:
        return iter(self.one)

    def __len__(self) -> int:
        return len(self.one)

    def append(self, key: str, value: int) -> None:
        if key not in self.one:
            self.one[key] = value
            return
        if key not in self.many:
            self.many[key] = [self.one[key]]
        if value not in self.many[key]:
            self.many[key].append(value)
