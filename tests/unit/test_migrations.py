"""Alembic migrations: they build exactly ``syncd.store.schema`` on every backend."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, table, text

from syncd.store import migrate
from syncd.store.schema import metadata
from syncd.store.store import Store

TABLES = {
    "alerts",
    "breakers",
    "cursors",
    "deliveries",
    "delivery_events",
    "leases",
    "match_cache",
    "messages",
    "owner_assignments",
    "owner_turns",
    "quarantine",
    "runs",
    "store_meta",
}


def _diffs(store: Store) -> list[object]:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def test_migrations_dir_holds_the_scripts() -> None:
    where = migrate.migrations_dir()
    assert (where / "env.py").is_file()
    config = Config()
    config.set_main_option("script_location", str(where))
    scripts = ScriptDirectory.from_config(config)
    revisions = list(scripts.walk_revisions())
    assert revisions, "no revision scripts found"
    assert scripts.get_current_head() == migrate.head_revision() == revisions[0].revision
    assert revisions[-1].down_revision is None  # one unbroken chain down to the base


def test_upgrade_builds_exactly_the_schema(store_url: str) -> None:
    store = Store(store_url)
    try:
        assert store.schema_revision() is None
        assert _diffs(store) != []  # the comparison sees an empty database as different

        store.migrate()

        assert _diffs(store) == []
        names = set(inspect(store.engine).get_table_names())
        assert names == TABLES | {"windows", "source_gaps", "alembic_version"}
        assert store.schema_revision() == migrate.head_revision()
    finally:
        store.close()


def test_migrating_twice_is_a_no_op(store_url: str) -> None:
    store = Store(store_url)
    try:
        store.migrate()
        store.set_cursor("main", datetime.now(UTC))
        store.migrate()

        assert store.schema_revision() == migrate.head_revision()
        assert store.cursor_positions().keys() == {"main"}  # data survived the second run
        with store.engine.connect() as conn:
            versions = conn.execute(select(func.count()).select_from(table("alembic_version")))
            assert versions.scalar_one() == 1
        assert _diffs(store) == []
    finally:
        store.close()


def test_downgrade_to_base_and_back(store_url: str) -> None:
    """The downgrade path works too, so a bad release can be rolled back."""
    store = Store(store_url)
    try:
        store.migrate()
        with store.engine.connect() as conn:
            config = Config()
            config.set_main_option("script_location", str(migrate.migrations_dir()))
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
            conn.commit()
        assert set(inspect(store.engine).get_table_names()) <= {"alembic_version"}
        store.migrate()
        assert _diffs(store) == []
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM deliveries")).scalar_one() == 0
    finally:
        store.close()
