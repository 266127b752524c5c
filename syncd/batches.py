"""Cutting a sequence into bounded pieces: IN (...) lists under a backend's parameter limit,
CRM batch requests under the vendor's input cap."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

__all__ = ["chunks"]

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[list[T]]:
    """``items`` in order, ``size`` at a time (the last piece may be shorter)."""
    if size < 1:
        raise ValueError(f"size must be at least 1, not {size}")
    for start in range(0, len(items), size):
        yield list(items[start : start + size])
