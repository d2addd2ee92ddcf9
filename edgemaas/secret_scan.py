"""Refuse to ship anything that looks like a secret: dotenv files, cloud credentials, private keys, certificates.

Every packager passes its final file list through `check_no_secrets` before writing, so a `.env` dropped next to a
model, an `.aws/credentials` inside a SavedModel's assets, or a key in a source checkout never leaves the machine.
File names are checked for every file; contents for every file that did not come from a published wheel.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Mapping

from edgemaas.errors import UserError

# Names (matched against the file name, or a path suffix) that hold secrets by convention.
SECRET_NAMES = re.compile(
    r"""^(\.env(\..+)?|\.envrc|\.netrc|_netrc|\.pypirc|\.npmrc|\.git-credentials|\.htpasswd|credentials(\.json)?
        |id_(rsa|dsa|ecdsa|ed25519)|.+\.(pem|key|p12|pfx|jks|keystore|ppk|asc|gpg)|secrets?\.(json|ya?ml|toml|env)
        |service[-_]account.*\.json|terraform\.tfvars)$""", re.X | re.I)
SECRET_DIRS = {".aws", ".ssh", ".gnupg", ".docker", ".kube", ".azure", ".config/gcloud"}
# Contents: private key blocks and AWS credentials. Binary-safe (bytes patterns).
SECRET_CONTENT = [
    (re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"), "a private key"),
    (re.compile(rb"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"), "an AWS access key id"),
    (re.compile(rb"aws_secret_access_key\s*[=:]", re.I), "an AWS secret access key"),
]


def secret_reason(name: str, content: bytes | None = None) -> str | None:
    """Why this file looks like a secret, or None."""
    path = PurePosixPath(name)
    if SECRET_NAMES.match(path.name):
        return "its name is one that holds secrets"
    parents = "/".join(path.parts[:-1])
    for directory in SECRET_DIRS:
        if parents == directory or parents.endswith("/" + directory) or f"{directory}/" in parents + "/":
            return f"it is inside a {directory} folder"
    if content is not None:
        for pattern, what in SECRET_CONTENT:
            if pattern.search(content):
                return f"it contains {what}"
    return None


def check_no_secrets(files: Mapping[str, Path | bytes], scan_contents: bool = True, where: str = "the package") -> None:
    """Raise a UserError naming every file in `files` (archive name -> source) that looks like a secret."""
    found = []
    for name in sorted(files):
        source = files[name]
        content = None
        if scan_contents:
            content = source if isinstance(source, bytes) else Path(source).read_bytes()
        reason = secret_reason(name, content)
        if reason:
            shown = f"{name} (from {source})" if isinstance(source, Path) else name
            found.append(f"{shown}: {reason}")
    if found:
        raise UserError(f"refusing to put what looks like a secret into {where}:\n  " + "\n  ".join(found)
                        + "\nRemove the file(s) from the model's folder (credentials belong in the environment or "
                          "a secrets manager, never in a package), then package again.")
