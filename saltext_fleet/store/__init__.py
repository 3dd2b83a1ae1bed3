"""saltext-fleet: store."""
