"""The SQLite state file and its side files: owner-only, and a clear error (exit 2, the file
named, the fix given, no traceback) when a side file cannot be used."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.errors import StateFileError
from syncd.store.files import prepare_sqlite_file
from syncd.store.store import Store

NOBODY = 65534
CONFIG = """
[syncd]
database_url = "sqlite:///{db}"
[accounts.main]
base_url = "https://api.example.invalid"
email = "ops@example.com"
token_env = "NO_SUCH_TOKEN_VARIABLE"
targets = ["crm"]
[targets.crm]
type = "hubspot"
"""


def test_a_state_file_deleted_while_running_comes_back_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = Store(f"sqlite:///{path}")
    try:
        store.migrate()
        path.unlink()
        store.ping()  # the next connection creates the file again
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        store.close()


def _as_unprivileged(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as a user who does not own the side file (nobody, when we are root:
    root may read and write every file, so a denied side file needs another user)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCD")}
    env["NO_SUCH_TOKEN_VARIABLE"] = "tok-123456"
    if os.getuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot act as another user")
        argv = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's own tmp_path is root's, mode 0700)."""
    where = Path(tempfile.mkdtemp(prefix="syncd-state-", dir="/tmp"))
    where.chmod(0o755)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


@pytest.mark.parametrize("suffix", ["-shm", "-wal", "-journal"])
def test_a_side_file_this_user_cannot_write_is_one_clear_error(open_dir: Path, suffix: str) -> None:
    tmp_path = open_dir
    home = tmp_path / "state"
    home.mkdir()
    db = home / "state.db"
    Store(f"sqlite:///{db}").close()
    side = db.with_name(db.name + suffix)
    side.write_bytes(b"")
    side.chmod(0o444)  # what a read-only mount or a run as root leaves behind
    config = tmp_path / "syncd.toml"
    config.write_text(CONFIG.format(db=db), encoding="utf-8")
    config.chmod(0o644)
    if os.getuid() == 0:  # the user who runs syncd owns the state, not the side file
        for path in (tmp_path, home, db, config):
            os.chown(path, NOBODY, NOBODY)

    done = _as_unprivileged(
        [sys.executable, "-m", "syncd", "status", "--config", str(config)], tmp_path
    )

    assert done.returncode == 2, done.stderr
    assert str(side) in done.stderr
    assert "Fix:" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unwritable_state_directory_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "ro"
    home.mkdir()
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode: False if Path(p) == home else real_access(p, mode)
    )
    with pytest.raises(StateFileError, match=str(home)):
        prepare_sqlite_file(f"sqlite:///{home / 'state.db'}")
