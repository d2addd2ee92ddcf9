"""Run an AWS Lambda Python function package locally through the real runtime client.

The package runs in a fresh interpreter started as ``python -S -s -m awslambdaric <handler>``, the way Lambda's
managed runtime starts it. That interpreter sees only the standard library, the package (task root), the layers
(``/opt/python``) and a private copy of ``awslambdaric``, never the development environment's site-packages, so a
package that works here should also import on Lambda.

The parent implements the Lambda Runtime API (2018-06-01) on 127.0.0.1 and feeds the events, as bytes, to that
process one after another. It measures durations and memory, enforces the timeout, the memory size and Lambda's
6 MB payload limits, and collects what the function printed. Standard library only, so importing it costs nothing.

Modules: runtime_client (install awslambdaric), unzip (safe package layout), output (capture), runtime_api (the
server), process (the runtime process), session (invoke_local).
"""

from edgemaas.local.errors import LocalLambdaError
from edgemaas.local.runtime_client import runtime_client_dir
from edgemaas.local.session import InvokeResult, invoke_local

__all__ = ["InvokeResult", "LocalLambdaError", "invoke_local", "runtime_client_dir"]
