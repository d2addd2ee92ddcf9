"""Deployment descriptors for packaged models: a Serverless Framework v3 service and an AWS SAM template.

Both are rendered from the package records (`dist/<name>/lambda/package.json`, written by `edgemaas package`) with
Jinja2 templates in the repository's `templates/`. One service holds one function per model, the shared runtime
layer(s) its functions use, an HTTP API route pair per model (`POST /<name>` to predict, `GET /<name>` for the
model's description) and, optionally, a function URL. In the SAM template each function has its own role and log
group, and the role may write to that log group only; Serverless's default role writes only to the service's log
groups (/aws/lambda/<service>-<stage>*). Paths in the output are relative to the directory the file is written into.

Serverless v3 uploads every artifact to one S3 folder under the artifact's *file name* (serverless/serverless#4128,
#5939, still open), so four `function.zip` files would overwrite each other and every function would run the last
one uploaded. Each function's Serverless artifact is therefore `<name>.zip` beside its `function.zip`, a relative
symlink that `link_artifacts` makes. SAM keys uploads by content and takes `function.zip` directly.

    python -m edgemaas.packaging.awslambda.serverless cnn nlp --serverless serverless.yml --sam template.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from edgemaas.aws.names import LAMBDA_SERVICE, LOG_GROUP_ACTIONS
from edgemaas.errors import UserError
from edgemaas.fsutil import atomic_path, atomic_write_text
from edgemaas.packaging.common.templates import register_filters, render

SERVERLESS_TEMPLATE = "serverless.yml.j2"
SAM_TEMPLATE = "template.yaml.j2"
BUILTIN_MODELS = ("linear", "cnn", "rnn", "nlp")
# What the gate ships for each built-in model (README, "What ./dev.sh build prints"); all are TFLite, served by LiteRT.
BUILTIN_VARIANTS = {"linear": "tflite-float32", "cnn": "tflite-int8", "rnn": "tflite-float32", "nlp": "tflite-float32"}
ARCHES = ("x86_64", "arm64")
LOG_LEVEL = "INFO"
DEFAULT_MEMORY_MB = 512
DEFAULT_TIMEOUT_S = 30
_REQUIRED = ("zip_path", "handler", "python_version", "arch", "model")
_FUNCTION_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_PYTHON_VERSION = re.compile(r"^3\.\d{1,2}$")
_IMAGE_LAYOUT = ("packaged as a container image (layout 'image'), which has no zip for these templates; "
                 "package it with --layout layer")


def package_command(name: str, python_version: str = "3.12", arch: str | None = None) -> str:
    """The command that makes (or remakes) the Lambda package a record describes."""
    command = f"edgemaas package {name} --layout layer --python-version {python_version}"
    return f"{command} --arch {arch}" if arch else command


def logical_id(name: str) -> str:
    """A CloudFormation logical id from a name: TitleCase alphanumerics (`tflite-int8` -> `TfliteInt8`,
    `edgemaas-litert-py312-x86_64` -> `EdgemaasLitertPy312X8664`)."""
    parts = [part for part in re.split(r"[^0-9A-Za-z]+", name) if part]
    if not parts:
        raise ValueError(f"{name!r}: no letters or digits to make a CloudFormation logical id from")
    return "".join(part[0].upper() + part[1:] for part in parts)


def serverless_name(key: str) -> str:
    """How Serverless v3 turns a function or layer key into the start of its logical ids (lib/plugins/aws/lib/
    naming.js, getNormalizedResourceName: '-' -> 'Dash', '_' -> 'Underscore', first letter upper-cased)."""
    normalized = key.replace("-", "Dash").replace("_", "Underscore")
    return normalized[:1].upper() + normalized[1:]


def serverless_layer_ref(layer_key: str) -> str:
    """Serverless v3's logical id for the layer under `layers: <layer_key>` (getLambdaLayerLogicalId)."""
    return serverless_name(layer_key) + "LambdaLayer"


def serverless_artifact(record: dict) -> Path:
    """The file Serverless uploads for a record's function: `<name>.zip` beside its zip (see the module doc)."""
    return Path(record["zip_path"]).with_name(f"{record['model']}.zip")


def link_artifacts(records: list[dict]) -> list[Path]:
    """Make each function's `<name>.zip` (serverless_artifact) a relative symlink to its zip, so that it follows
    every repackaging; where symlinks are not allowed, a copy. Returns the paths made."""
    made = []
    for record in records:
        source, alias = Path(record["zip_path"]), serverless_artifact(record)
        if alias == source:
            continue
        if alias.is_symlink() or alias.exists():
            if alias.is_symlink() and os.readlink(alias) == source.name:
                made.append(alias)
                continue
            alias.unlink()
        alias.parent.mkdir(parents=True, exist_ok=True)
        try:
            alias.symlink_to(source.name)
        except OSError:
            if not source.is_file():
                continue
            with atomic_path(alias) as tmp:
                shutil.copyfile(source, tmp)
        made.append(alias)
    return made


def _yaml_scalar(value: Any) -> str:
    """A YAML scalar, quoted only when it must be (`python3.12` stays plain, `'3'` and `a: b` get quoted)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True)
    return text.removesuffix("\n...\n").removesuffix("\n")


register_filters(y=_yaml_scalar)


def _relative(path: str | os.PathLike[str], base_dir: Path) -> str:
    """`path` relative to base_dir, with forward slashes. A relative path in a record is relative to the current
    directory (where `edgemaas package` ran)."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(base_dir))).as_posix()


def _shared(records: Sequence[dict], key: str) -> str:
    """The one value of `key` that every record must share, or a ValueError naming the disagreement."""
    groups: dict[str, list[str]] = {}
    for record in records:
        groups.setdefault(str(record[key]), []).append(str(record["model"]))
    if len(groups) > 1:
        found = "; ".join(f"{value} ({', '.join(sorted(models))})" for value, models in sorted(groups.items()))
        option = "--python-version" if key == "python_version" else "--arch"
        raise ValueError(f"the packages disagree on {key}: {found}. One service runs one runtime and architecture: "
                         f"package them all with the same {option}")
    return next(iter(groups))


def _check(records: Sequence[dict]) -> None:
    if not records:
        raise ValueError("no package records to render: make one with "
                         f"`{package_command('NAME')}`")
    seen: set[str] = set()
    ids: dict[str, str] = {}
    for record in records:
        if record.get("layout") == "image":
            raise ValueError(f"model {record.get('model', '?')}: {_IMAGE_LAYOUT}")
        missing = [key for key in _REQUIRED if record.get(key) in (None, "")]
        if missing:
            raise ValueError(f"package record {record.get('model', '?')}: missing {', '.join(missing)}")
        name = str(record["model"])
        if not _FUNCTION_KEY.match(name):
            raise ValueError(f"model name {name!r}: a function name takes letters, digits, '-' and '_' only")
        if name in seen:
            raise ValueError(f"model {name!r} appears twice in the package records")
        seen.add(name)
        if logical_id(name) in ids:
            raise ValueError(f"models {ids[logical_id(name)]!r} and {name!r} map to the same CloudFormation "
                             f"logical id {logical_id(name)!r}: rename one")
        ids[logical_id(name)] = name
        if not _PYTHON_VERSION.match(str(record["python_version"])):
            raise ValueError(f"model {name!r}: python_version {record['python_version']!r} is not like 3.12")
        if record["arch"] not in ARCHES:
            raise ValueError(f"model {name!r}: arch {record['arch']!r}; Lambda runs {' or '.join(ARCHES)}")
        if record.get("layout") == "layer" and not (record.get("layer") or {}).get("zip_path"):
            raise ValueError(f"model {name!r}: layout 'layer' but the record names no layer zip; "
                             f"repackage with `{package_command(name, str(record['python_version']))}`")


def _context(records: Sequence[dict], base_dir: Path, stage: str, function_url: bool) -> dict[str, Any]:
    """What both templates need: the shared runtime, the layers (deduplicated) and the functions, sorted by name."""
    records = list(records)
    _check(records)
    python_version = _shared(records, "python_version")
    arch = _shared(records, "arch")
    runtime = f"python{python_version}"

    layers: dict[str, dict[str, Any]] = {}
    functions = []
    for record in sorted(records, key=lambda r: str(r["model"])):
        name = str(record["model"])
        layer = record.get("layer") if record.get("layout") == "layer" else None
        layer_names: list[str] = []
        if layer:
            layer_name = str(layer.get("name") or Path(layer["zip_path"]).stem)
            artifact = _relative(layer["zip_path"], base_dir)
            known = layers.get(layer_name)
            if known and known["artifact"] != artifact:
                raise ValueError(f"layer {layer_name}: the packages point at two zips, {known['artifact']} and "
                                 f"{artifact}; repackage so that they share one")
            key = logical_id(layer_name)
            if not known and any(other["key"] == key for other in layers.values()):
                raise ValueError(f"layer names that differ only in punctuation: {layer_name!r}; rename one")
            layers[layer_name] = {
                "name": layer_name, "key": key, "sls_ref": serverless_layer_ref(key), "sam_id": f"{key}Layer",
                "artifact": artifact,
                "description": f"edgemaas inference runtime for {runtime} {arch} (numpy and the model runtime)",
            }
            layer_names.append(layer_name)
        tags = {"edgemaas:model": name, "edgemaas:variant": str(record.get("variant") or "unknown")}
        if record.get("model_sha256"):
            tags["edgemaas:model-sha256"] = str(record["model_sha256"])
        functions.append({
            "name": name, "id": logical_id(name), "handler": str(record["handler"]),
            "artifact": _relative(record["zip_path"], base_dir),
            "sls_artifact": _relative(serverless_artifact(record), base_dir),
            "memory_mb": int(record.get("memory_mb") or DEFAULT_MEMORY_MB),
            "timeout_s": int(record.get("timeout_s") or DEFAULT_TIMEOUT_S),
            "description": f"edgemaas model {name} ({record.get('variant') or 'unknown variant'}, "
                           f"{record.get('model_format') or 'unknown format'})",
            "layers": [layers[n] for n in layer_names], "tags": tags, "path": f"/{name}",
            "command": package_command(name, python_version, arch),
        })
    return {"runtime": runtime, "python_version": python_version, "arch": arch, "stage": stage,
            "layers": list(layers.values()), "functions": functions, "function_url": function_url,
            "log_level": LOG_LEVEL, "names": " ".join(f["name"] for f in functions)}


def render_serverless(records: list[dict], service: str = "edgemaas", region: str = "us-east-1", stage: str = "dev",
                      base_dir: Path = Path("."), function_url: bool = False, command: str | None = None) -> str:
    """A Serverless Framework v3 `serverless.yml` for the packaged models (ValueError if they cannot share one
    service: different Python versions or architectures, duplicate names). Its function artifacts are the
    `<name>.zip` links that link_artifacts(records) makes beside each function.zip. `command`, for the header, is
    how to regenerate the file (default: this module's command line for the records' names)."""
    context = _context(records, base_dir, stage, function_url)
    uploads: dict[str, str] = {}
    for artifact in [f["sls_artifact"] for f in context["functions"]] + [l["artifact"] for l in context["layers"]]:
        basename = artifact.rsplit("/", 1)[-1]
        if basename in uploads:
            raise ValueError(f"{uploads[basename]} and {artifact} have the same file name, which Serverless uploads "
                             "to the same S3 key (one would overwrite the other): rename one")
        uploads[basename] = artifact
    context.update(service=service, region=region, command=command or
                   f"python -m edgemaas.packaging.awslambda.serverless {context['names']} --serverless serverless.yml")
    return render(SERVERLESS_TEMPLATE, context)


def render_sam(records: list[dict], base_dir: Path = Path("."), stage: str = "dev", function_url: bool = False,
               command: str | None = None) -> str:
    """An AWS SAM `template.yaml` for the packaged models (same checks as render_serverless)."""
    context = _context(records, base_dir, stage, function_url)
    context["command"] = command or f"python -m edgemaas.packaging.awslambda.serverless {context['names']} --sam template.yaml"
    context.update(lambda_service=LAMBDA_SERVICE, log_actions=LOG_GROUP_ACTIONS)
    return render(SAM_TEMPLATE, context)


def write_atomic(path: Path, text: str) -> None:
    """Write text to path so that a reader never sees half a file (edgemaas.fsutil)."""
    atomic_write_text(path, text)


def load_records(dist: Path, names: list[str] | None = None) -> list[dict]:
    """The package records `dist/<name>/lambda/package.json` for names (default: every package in dist), sorted by
    name. A missing or unreadable record is a UserError saying which command makes it."""
    dist = Path(dist)
    if names is None:
        paths = sorted(dist.glob("*/lambda/package.json"))
        if not paths:
            raise UserError(f"no Lambda packages in {dist}/: make them with `{package_command('NAME')}`")
    else:
        paths = [dist / name / "lambda" / "package.json" for name in names]
    records = []
    for path in paths:
        name = path.parent.parent.name
        remake = f"`{package_command(name)}`"
        if not path.is_file():
            raise UserError(f"no Lambda package for {name!r} ({path} is missing): make it with {remake}")
        try:
            record = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UserError(f"{path}: not a readable package record ({exc}); remake it with {remake}") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}: not a package record (a JSON object); remake it with {remake}")
        if record.get("layout") == "image":
            raise UserError(f"{path}: {_IMAGE_LAYOUT}: `{package_command(name)}`")
        missing = [key for key in _REQUIRED if not record.get(key)]
        if missing:
            raise UserError(f"{path}: the package record has no {', '.join(missing)}; remake it with {remake}")
        artifacts = [record["zip_path"]]
        if record.get("layout") == "layer":
            if not (record.get("layer") or {}).get("zip_path"):
                raise UserError(f"{path}: layout 'layer' without a layer zip; remake it with {remake}")
            artifacts.append(record["layer"]["zip_path"])
        for artifact in artifacts:
            if not Path(artifact).is_file():
                raise UserError(f"{path}: {artifact} is missing; remake the package with {remake}")
        records.append(with_priced_memory(record, dist.parent / "build"))
    return sorted(records, key=lambda r: str(r["model"]))


def with_priced_memory(record: dict, build: Path) -> dict:
    """The record with `memory_mb` set to what the gate priced cheapest for the variant it ships
    (build/<model>/selection.json, issue 15), when the selection priced that variant; else unchanged."""
    from edgemaas.compress.cost import chosen_memory
    from edgemaas.compress.records import load_selection

    try:
        selection = load_selection(build / str(record["model"]) / "selection.json")
    except UserError:  # a corrupt selection: the package's own memory still deploys
        return record
    fmt = record.get("model_format")
    if selection is None or not fmt or selection.chosen.get(fmt) != record.get("variant"):
        return record
    priced = chosen_memory(selection, fmt)
    return {**record, "memory_mb": priced, "memory_source": "priced by the gate"} if priced else record


def builtin_records(root: Path = Path("."), python_version: str = "3.12", arch: str = "x86_64") -> list[dict]:
    """The records `edgemaas package <name> --layout layer` writes for the four built-in models, made without
    packaging (their names, variants and paths are known): what the repository's serverless.yml is rendered from."""
    layer = f"edgemaas-litert-py{python_version.replace('.', '')}-{arch}"
    return [{
        "zip_path": str(root / "dist" / name / "lambda" / "function.zip"), "handler": "handler.handler",
        "python_version": python_version, "arch": arch, "model": name, "variant": BUILTIN_VARIANTS[name],
        "model_format": "tflite", "layout": "layer", "memory_mb": DEFAULT_MEMORY_MB, "timeout_s": DEFAULT_TIMEOUT_S,
        "layer": {"name": layer, "zip_path": str(root / "dist" / "layers" / f"{layer}.zip")},
    } for name in BUILTIN_MODELS]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgemaas.packaging.awslambda.serverless",
        description="Write a Serverless Framework v3 serverless.yml and/or an AWS SAM template.yaml for Lambda "
                    "packages in dist/ (made by `edgemaas package NAME --layout layer --python-version 3.12`).")
    parser.add_argument("names", nargs="*", help="models to include (default: every package in --dist)")
    parser.add_argument("--dist", type=Path, default=Path("dist"), help="where the packages are (default: dist)")
    parser.add_argument("--serverless", type=Path, metavar="FILE", help="write a serverless.yml here")
    parser.add_argument("--sam", type=Path, metavar="FILE", help="write a SAM template.yaml here")
    parser.add_argument("--function-url", action="store_true", help="also give each function a public URL")
    parser.add_argument("--service", default="edgemaas")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--builtin", action="store_true",
                        help="render the four built-in models' known packages without reading dist/ "
                             "(how the repository's serverless.yml is made)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    command = shlex.join([*parser.prog.split(), *argv])
    if not args.serverless and not args.sam:
        parser.error("nothing to write: give --serverless FILE and/or --sam FILE")
    try:
        if args.builtin:
            records = builtin_records(args.dist.parent)
            records = [r for r in records if not args.names or r["model"] in args.names]
        else:
            records = load_records(args.dist, args.names or None)
        outputs = []
        if args.serverless:
            outputs.append((args.serverless, render_serverless(
                records, args.service, args.region, args.stage, args.serverless.parent, args.function_url, command)))
        if args.sam:
            outputs.append((args.sam, render_sam(records, args.sam.parent, args.stage, args.function_url, command)))
    except (UserError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    for path, text in outputs:
        write_atomic(path, text)
        print(f"wrote {path}")
    if args.serverless:
        for alias in link_artifacts(records):
            print(f"linked {alias} -> {os.readlink(alias) if alias.is_symlink() else 'a copy'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
