"""The `calltrack` command: click groups that wire settings, database and adapters (the composition root)."""
