"""Who is believed about which syndic carries a node (pure rules)."""

import pytest

from saltext_fleet.core import carriers
from saltext_fleet.core.errors import FleetError


def test_claims_drop_the_sender_own_minions_and_bad_ids():
    got = carriers.claimed_minions(
        "syn", ["b", "a", "syn", "mine", "", None, "x\0y", "a"], {"mine"}
    )
    assert got == ["a", "b"]


@pytest.mark.parametrize("sender", [None, "", 7, "x" * 256])
def test_a_claim_needs_a_sender(sender):
    with pytest.raises(carriers.CarrierClaimError, match="sender"):
        carriers.claimed_minions(sender, ["a"])


def test_a_claim_needs_a_list():
    with pytest.raises(FleetError, match="must be a list, got str"):
        carriers.claimed_minions("syn", "a")


def test_one_claimant_is_believed_several_are_not():
    assert carriers.resolve(["s"]) == {"syndic": "s", "claimants": ["s"], "disputed": False}
    assert carriers.resolve(["s", "t", "s"]) == {
        "syndic": None,
        "claimants": ["s", "t"],
        "disputed": True,
    }
    assert carriers.resolve([]) == {"syndic": None, "claimants": [], "disputed": False}
