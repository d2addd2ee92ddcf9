"""The click commands, one module per area; `edgemaas/cli.py` puts them together."""
