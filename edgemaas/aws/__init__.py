"""Deploy, invoke and operate edgemaas packages on AWS Lambda, with boto3.

- `deploy`: plan (describe/list calls only) → print → execute; records in `deploy.py` carry no behaviour.
- `invoke`: synchronous and batch invokes of a deployed alias.
- `operate`: status, rollback, destroy.
- `retries`: how every client retries (throttling, 5xx, updates in progress; growing waits, AWS_MAX_ATTEMPTS).
- `policy`: every IAM policy edgemaas writes or asks for (the execution role's, the minimal deploy policy).
- `names`: function and role names, Lambda's size limits (no boto3: packaging reads them).
- `errors`: boto errors said the way a user can act on them (an access error names the action and the statement).

boto3's standard credential chain, profiles, regions and `AWS_ENDPOINT_URL` (and its per-service variants) apply.
Credentials are never printed or written anywhere by edgemaas.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from edgemaas.errors import UserError

from edgemaas.aws.names import FUNCTION_PREFIX, ROLE_NAME, function_name

__all__ = ["FUNCTION_PREFIX", "ROLE_NAME", "Aws", "aws_errors", "connect", "function_name"]


@dataclass
class Aws:
    """A boto3 session checked for credentials and a region, and the clients edgemaas uses."""

    session: Any
    region: str

    def client(self, service: str) -> Any:
        """A client whose every call (waiters and paginators included) retries what waiting fixes (`retries`)."""
        from botocore.config import Config

        from edgemaas.aws.retries import install

        config = Config(retries={"mode": "standard"}, connect_timeout=10, read_timeout=70)
        return install(self.session.client(service, region_name=self.region, config=config))


def connect(profile: str | None = None, region: str | None = None) -> Aws:
    """A session from the standard chain; a clear UserError when credentials or the region are missing."""
    import boto3
    from botocore.exceptions import BotoCoreError

    from edgemaas.aws.errors import NO_CREDENTIALS, NO_REGION, translate

    try:
        session = boto3.Session(profile_name=profile, region_name=region)
        credentials = session.get_credentials()
    except BotoCoreError as exc:
        raise translate(exc) or UserError(str(exc)) from None
    if credentials is None:
        raise UserError(NO_CREDENTIALS)
    if not session.region_name:
        raise UserError(NO_REGION)
    return Aws(session, session.region_name)


@contextmanager
def aws_errors(rerun: str | None = None) -> Iterator[None]:
    """Turn boto errors a user can act on into UserError (→ `Error: ...` in the CLI). `rerun`: how to pick up where
    a failed command stopped (default: run the same command again)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from edgemaas.aws.errors import RERUN, translate

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        error = translate(exc, rerun or RERUN)
        if error is None:
            raise
        raise error from None
