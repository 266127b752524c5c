"""Start-up failures as one line naming the key: the database, the health port.

A daemon that cannot open its state store or bind its health port must say so in one line and
exit 2 (configuration error), not print a driver's traceback. Only start-up goes through here:
a database that fails *during* a cycle is a failed cycle, retried by the next one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

from syncd.errors import ConfigError

__all__ = ["database_startup", "masked_url"]

DATABASE_KEY = "syncd.database_url"


def masked_url(url: str) -> str:
    """The URL with its password replaced by ``***``; text that is no URL, fully hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "***"


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


@contextmanager
def database_startup(url: str) -> Iterator[None]:
    """Turn a database that cannot be opened or migrated into a ConfigError naming the key."""
    try:
        yield
    except (ArgumentError, NoSuchModuleError) as exc:
        raise ConfigError(
            f"not a usable database URL: {masked_url(url)}", key=DATABASE_KEY
        ) from exc
    except DBAPIError as exc:
        # The driver's own words, first line only (psycopg adds hints on further lines); never
        # SQLAlchemy's text, which carries the statement and its parameters.
        reason = first_line(str(exc.orig)) if exc.orig is not None else type(exc).__name__
        raise ConfigError(
            f"cannot open the state store {masked_url(url)}: {reason}", key=DATABASE_KEY
        ) from exc
    except SQLAlchemyError as exc:
        raise ConfigError(
            f"cannot open the state store {masked_url(url)}: {type(exc).__name__}",
            key=DATABASE_KEY,
        ) from exc
    except ImportError as exc:
        raise ConfigError(
            f"the database driver is not installed ({exc.name}): pip install 'syncd[postgres]'",
            key=DATABASE_KEY,
        ) from exc
    except OSError as exc:  # e.g. SQLite's directory cannot be created
        raise ConfigError(
            f"cannot open the state store {masked_url(url)}: {exc.strerror or exc}",
            key=DATABASE_KEY,
        ) from exc
