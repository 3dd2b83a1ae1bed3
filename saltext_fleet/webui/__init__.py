"""saltext-fleet: webui."""
