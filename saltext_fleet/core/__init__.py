"""saltext-fleet: core."""
