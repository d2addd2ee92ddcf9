"""The one error type of the local Lambda runner."""

from __future__ import annotations

from edgemaas.errors import UserError


class LocalLambdaError(UserError):
    """The function could not be set up to run (bad package, missing runtime client, ...)."""

