"""Deploy, invoke and operate edgemaas packages on AWS Lambda, with boto3.

- `deploy`: plan (describe/list calls only) → print → execute; records in `deploy.py` carry no behaviour.
- `invoke`: synchronous and batch invokes of a deployed alias.
- `operate`: status, rollback, destroy.

boto3's standard credential chain, profiles, regions and `AWS_ENDPOINT_URL` (and its per-service variants) apply.
Credentials are never printed or written anywhere by edgemaas.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import UserError

FUNCTION_PREFIX = "edgemaas-"
ROLE_NAME = "edgemaas-lambda-role"


def function_name(model: str, override: str | None = None) -> str:
    return override or f"{FUNCTION_PREFIX}{model}"


@dataclass
class Aws:
    """A boto3 session checked for credentials and a region, and the clients edgemaas uses."""

    session: Any
    region: str

    def client(self, service: str) -> Any:
        from botocore.config import Config

        config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=10, read_timeout=70)
        return self.session.client(service, region_name=self.region, config=config)


def connect(profile: str | None = None, region: str | None = None) -> Aws:
    """A session from the standard chain; a clear UserError when credentials or the region are missing."""
    import boto3
    from botocore.exceptions import BotoCoreError

    from .errors import NO_CREDENTIALS, NO_REGION, translate

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
def aws_errors() -> Iterator[None]:
    """Turn boto errors a user can act on into UserError (→ `Error: ...` in the CLI)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from .errors import translate

    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        error = translate(exc)
        if error is None:
            raise
        raise error from None
