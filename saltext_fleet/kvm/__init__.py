"""saltext-fleet: kvm."""
