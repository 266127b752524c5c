"""syncd.memory: glibc's malloc arenas capped at start, unless the operator chose."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys

import pytest

from syncd import memory


class Mallopt:
    """Records its calls; takes ctypes' argtypes/restype like a foreign function."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.argtypes: object = None
        self.restype: object = None

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


class FakeLibc:
    def __init__(self) -> None:
        self.mallopt = Mallopt()

    @property
    def calls(self) -> list[tuple[int, int]]:
        return self.mallopt.calls


def test_caps_the_arenas_through_mallopt(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = FakeLibc()
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)
    assert memory.cap_malloc_arenas() is True
    assert libc.calls == [(-8, memory.ARENAS)]  # M_ARENA_MAX in glibc's <malloc.h>


@pytest.mark.parametrize(
    ("name", "value"),
    [("MALLOC_ARENA_MAX", "8"), ("GLIBC_TUNABLES", "glibc.malloc.arena_max=8")],
)
def test_an_operators_arena_setting_wins(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    libc = FakeLibc()
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setenv(name, value)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: libc)
    assert memory.cap_malloc_arenas() is False
    assert libc.calls == []


def test_a_libc_without_mallopt_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(ctypes, "CDLL", lambda name: object())  # no mallopt attribute
    assert memory.cap_malloc_arenas() is False


@pytest.mark.skipif(
    not sys.platform.startswith("linux")
    or "MALLOC_ARENA_MAX" in os.environ
    or "GLIBC_TUNABLES" in os.environ,
    reason="glibc's mallopt is Linux's; an operator's arena setting makes this a no-op",
)
def test_the_real_mallopt_accepts_it() -> None:
    """In a fresh interpreter (the cap is process-wide): glibc answers 1 for success."""
    code = "from syncd.memory import cap_malloc_arenas; print(cap_malloc_arenas())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    libc = ctypes.util.find_library("c") or ""
    expected = "True" if "musl" not in libc else "False"
    assert out.stdout.strip() == expected
