"""The web console: overview, review queue, dead letters and message history, for the
people who settle what syncd cannot. Served on the health server's address under
``/console/`` (:class:`syncd.health.HealthServer`), read-only unless an operator token is
configured."""

from syncd.console.app import Console, create_console

__all__ = ["Console", "create_console"]
