"""The public models keep accepting what connectors written against the first release send."""

from __future__ import annotations

import pytest

from syncd.plugin import SetupState, SetupStep


def test_a_setup_step_given_a_plain_string_holds_the_enum() -> None:
    step = SetupStep("Contact.Syncd_Key__c", "present")  # type: ignore[arg-type]
    assert step.state is SetupState.PRESENT
    assert step.state.done
    assert not SetupStep("x", SetupState.MANUAL, "ask an admin").state.done


def test_a_setup_step_refuses_a_state_that_does_not_exist() -> None:
    with pytest.raises(ValueError, match="half_done"):
        SetupStep("x", "half_done")  # type: ignore[arg-type]
