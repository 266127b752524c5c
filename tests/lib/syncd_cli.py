"""Running the ``syncd`` command line from tests: as a subprocess, or in this process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Result", "run_syncd", "syncd_env"]


def syncd_env(**extra: str) -> dict[str, str]:
    """This environment without any SYNCD_* variable an operator or CI may have set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD")}
    env.update(extra)
    return env


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        return self.out + self.err

    def events(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines (stderr is not a terminal) whose event is ``name``."""
        found = []
        for line in self.err.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
        return found

    def last_json(self) -> Any:
        return json.loads(self.out.strip().splitlines()[-1])


def run_syncd(*args: str, cwd: Path, env: Mapping[str, str] | None = None) -> Result:
    """``python -m syncd ARGS`` in a clean environment (plus ``env``)."""
    done = subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        cwd=cwd,
        env=syncd_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)
