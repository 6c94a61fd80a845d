"""Components that grow by whole files: ``index add`` writes the new rows to a file of their own.

The node store (``nodes.sqlite``, ``nodes-1.sqlite``, …) and the FP16 vectors (``vectors.f16``,
``vectors-1.f16``, …) are each read as one, in file order, and an add hard-links the old files, so it
costs what the new rows cost. Past :data:`MAX_SEGMENTS` files the newest are joined into one; the first,
largest file is never rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

#: Files a component keeps before ``index add`` joins the newest (each is one more lookup per query).
MAX_SEGMENTS = 8


@dataclass(frozen=True)
class Segments:
    """File names of one segmented component: ``<stem><ext>`` is segment 0, ``<stem>-N<ext>`` segment N."""

    stem: str
    ext: str

    def name(self, number: int) -> str:
        return f"{self.stem}{self.ext}" if number == 0 else f"{self.stem}-{number}{self.ext}"

    def number(self, name: str) -> int | None:
        """The segment number of a file name, or None when it is not one of this component's files."""
        m = re.fullmatch(rf"{re.escape(self.stem)}(?:-(\d+))?{re.escape(self.ext)}", name)
        return None if m is None else int(m.group(1) or 0)

    def files(self, names: Iterable[str]) -> list[str]:
        """This component's files among ``names`` (paths relative to the index), in segment order."""
        return sorted(
            (n for n in names if "/" not in n and self.number(n) is not None),
            key=lambda n: self.number(n) or 0,
        )

    def next(self, names: Iterable[str]) -> str:
        """The name of a segment after all of ``names``."""
        return self.name(max((self.number(n) or 0 for n in names), default=-1) + 1)

    def cap(
        self, root: Path, names: list[str], join: Callable[[list[Path], list[Path], Path], None]
    ) -> list[str]:
        """Keep at most :data:`MAX_SEGMENTS` files: ``join(kept, newest, out)`` writes the newest into one
        new file, which replaces them. Returns the files now in use."""
        if len(names) <= MAX_SEGMENTS:
            return names
        keep, tail = names[: MAX_SEGMENTS - 1], names[MAX_SEGMENTS - 1 :]
        out = self.next(names)
        join([root / n for n in keep], [root / n for n in tail], root / out)
        for name in tail:
            (root / name).unlink()
        return [*keep, out]
