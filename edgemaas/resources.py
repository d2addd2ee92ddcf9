"""Where the files that ship with edgemaas live: Jinja2 templates, the Lambda handler and the built-in model specs.

The repository keeps them at its top level (templates/, functions/, models/); pyproject.toml maps them into the
edgemaas namespace, so an installed wheel has them as edgemaas/templates/, edgemaas/functions/ and edgemaas/models/.
A checkout (or an editable install, which runs from the checkout) has no such folders inside edgemaas/, so each
lookup falls back to the repository's top level. Code never finds these files through Path(__file__).parents.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _shipped_dir(name: str) -> Path:
    """edgemaas/<name>/ of an installed wheel, else <checkout>/<name>/."""
    installed = resources.files("edgemaas") / name
    # A regular install is a folder on disk; resources.files then hands back a pathlib.Path.
    if isinstance(installed, Path) and installed.is_dir():
        return installed
    checkout = _REPO_ROOT / name
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"edgemaas is installed without its {name}/ folder (looked in {installed} and "
                            f"{checkout}); reinstall edgemaas from a wheel or a full checkout")


def templates_dir() -> Path:
    """The folder of Jinja2 templates (Dockerfile.j2, serverless.yml.j2, template.yaml.j2, edge/, mcu/, mobile/)."""
    return _shipped_dir("templates")


def handler_file() -> Path:
    """The Lambda handler that ships as handler.py in every Lambda package (functions/aws_lambda.py)."""
    return _shipped_dir("functions") / "aws_lambda.py"


def builtin_specs_dir() -> Path:
    """The folder of built-in model specs (cnn.yaml, linear.yaml, ...); a models/ folder in the cwd comes first."""
    return _shipped_dir("models")
