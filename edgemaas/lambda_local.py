"""Moved to ``edgemaas.local`` (issue 12). Kept only until the tests' import lines follow; import from there."""

from edgemaas.local import InvokeResult, LocalLambdaError, invoke_local, runtime_client_dir

__all__ = ["InvokeResult", "LocalLambdaError", "invoke_local", "runtime_client_dir"]
