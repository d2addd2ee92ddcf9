"""`python -m <name>_edge.edge_entry` (or, in the repository, `python -m edgemaas.edge_entry --model-dir DIR`)."""

from .cli import main

raise SystemExit(main())
