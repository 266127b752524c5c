"""The HubSpot contract world (entry point ``syncd.contract.v1``): the emulator as a portal
that ``syncd setup`` has already provisioned."""

from __future__ import annotations

from .api import HubSpotEmulator

__all__ = ["world"]


def world() -> HubSpotEmulator:
    return HubSpotEmulator()
