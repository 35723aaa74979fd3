"""Training service and on-device client for SETGAN (extra `server`)."""
