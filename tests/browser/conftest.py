"""Browser tests: Playwright (Python) driving Debian's Chromium at /usr/bin/chromium, never a
downloaded browser; axe-core (axe-playwright-python) checks each page for accessibility.

``.ci/run`` installs the ``chromium`` package when it is missing, so in CI these always run;
elsewhere they skip with the reason. Set ``SYNCD_CONSOLE_SCREENSHOTS=DIR`` to have the
tests save a PNG of each page there (that is how ``docs/console-*.png`` are made).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from console_world import ConsoleWorld, console_world

from syncd.console import create_console
from syncd.health import HealthServer
from syncd.metrics import Metrics

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing (apt-get install chromium; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run the browser tests")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # The system Chromium, headless; no browser download, no network.
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Served:
    cw: ConsoleWorld
    url: str  # the console's base URL, ending in /console

    def shot(self, page: Any, name: str) -> None:
        where = os.environ.get("SYNCD_CONSOLE_SCREENSHOTS")
        if where:
            Path(where).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(where) / f"console-{name}.png"), full_page=True)


@contextmanager
def _serve(tmp_path: Path, refresh_seconds: int) -> Iterator[Served]:
    with console_world(tmp_path) as cw:
        app = create_console(
            cw.settings,
            cw.store,
            paused=lambda: dict(cw.daemon.paused),
            refresh_seconds=refresh_seconds,
        )
        with HealthServer(
            "127.0.0.1", 0, metrics=Metrics(), alive=lambda: True,
            ready=lambda: (True, "ok"), console=app,
        ) as server:  # fmt: skip
            yield Served(cw, f"{server.url}/console")
        app.state.console.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with _serve(tmp_path, 30) as made:
        yield made


@pytest.fixture
def fast_served(tmp_path: Path) -> Iterator[Served]:
    """The same, with the overview refreshing every second."""
    with _serve(tmp_path, 1) as made:
        yield made
