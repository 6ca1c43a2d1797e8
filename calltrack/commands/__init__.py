"""One module per command group; each exposes `group` (or `command`)."""
