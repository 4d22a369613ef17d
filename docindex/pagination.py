"""Page-range arithmetic, free of heavy imports so workflows can use it."""

from __future__ import annotations


def page_ranges(first: int, last: int, size: int) -> list[tuple[int, int]]:
    """Split pages first..last (1-based, inclusive) into ranges of at most ``size`` pages."""
    if size < 1:
        raise ValueError("size must be at least 1")
    return [(start, min(start + size - 1, last)) for start in range(first, last + 1, size)]
