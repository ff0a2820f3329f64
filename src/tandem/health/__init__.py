"""Health checks that feed a node's effective priority (track scripts and hub-internal checks)."""
