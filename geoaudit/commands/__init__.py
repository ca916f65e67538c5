"""CLI subcommands; see geoaudit.cli."""
