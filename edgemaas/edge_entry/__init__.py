"""The edge bundle's entry point (`python -m <name>_edge predict|serve|describe`) and its HTTP server.

Shipped inside every edge bundle next to a copy of `edgemaas/runtime/`, as `<name>_edge/edge_entry/`: like the
runtime, it imports the standard library and `..runtime` only (in the repository that is `edgemaas.runtime`, in a
bundle `<name>_edge.runtime`), never numpy directly, TensorFlow, click or the rest of edgemaas.
"""
