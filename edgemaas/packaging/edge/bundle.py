"""Edge bundles: `dist/<name>/edge/<name>-edge.tar.gz`, a model server for a Linux device, no TensorFlow.

Inside, under one top folder `<name>-edge/`:

    <name>_edge/              python -m <name>_edge predict|serve|describe
      __init__.py, __main__.py   (from templates/edge/)
      edge_entry/             command line and HTTP server (edgemaas/edge_entry/, stdlib + ..runtime only)
      runtime/                edgemaas/runtime/ verbatim (its imports are relative)
      model/                  the model file and manifest.json
    requirements.txt          numpy and the one inference runtime, pinned
    wheels/                   with --with-deps: their wheels for the target, for `pip install --no-index`
    <name>-edge.service       hardened systemd unit        } rendered from templates/edge/
    greengrass-recipe.yaml    Greengrass v2 recipe         }
    README.txt                install and run commands     }

The tar is deterministic (sorted entries, fixed mtime, uid/gid 0, normalised modes, gzip header without name or
time), written to a temporary name and renamed, and reused when nothing that goes into it changed (`package.json`
beside it records the input hash). The recipe is also written beside the tar, since Greengrass needs it outside.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from edgemaas import __version__
from edgemaas.errors import UserError
from edgemaas.runtime import MANIFEST_NAME, ModelLoadError, read_manifest
from edgemaas.runtime.manifest import Manifest, sha256_file
from edgemaas.packaging.common import dependencies
from edgemaas.fsutil import atomic_write_bytes, atomic_write_json
from edgemaas.packaging.awslambda.lambda_zip import check_loadable, default_python_version
from edgemaas.packaging.common.archives import FIXED_MTIME, write_deterministic_tar
from edgemaas.packaging.common.inputs import file_intact, input_hash, previous_record, tree
from edgemaas.packaging.common.templates import render_plain, templates_dir
from edgemaas.secret_scan import check_no_secrets

PLATFORMS = ("linux_x86_64", "linux_aarch64", "linux_armv7l")
# dependencies.PLATFORM_TAGS keys (manylinux wheels): the same wheels Lambda's x86_64 and arm64 use.
_MANYLINUX_ARCH = {"linux_x86_64": "x86_64", "linux_aarch64": "arm64"}
_GREENGRASS_ARCH = {"linux_x86_64": "amd64", "linux_aarch64": "aarch64", "linux_armv7l": "arm"}
# 32-bit ARM (Raspberry Pi OS armhf): ai-edge-litert, onnxruntime and numpy publish no armv7l wheels on PyPI.
# tflite-runtime does, as manylinux2014_armv7l, for these Pythons only (Raspberry Pi OS bullseye has 3.9; bookworm's
# 3.11 has none). piwheels builds numpy for the Pi but cannot build tflite-runtime, which has no source release.
ARMV7L_TFLITE_RUNTIME = {"3.7": "2.11.0", "3.9": "2.13.0"}
ARMV7L_TAGS = ["manylinux2014_armv7l", "linux_armv7l"]
PIWHEELS = "https://www.piwheels.org/simple"
ARMV7L_NUMPY = "numpy>=1.21.2,<2"  # tflite-runtime 2.13 needs numpy >= 1.21.2 and was built against numpy 1.x
DEFAULT_PORT = 8080
DEFAULT_MEMORY_BUDGET_MB = 512  # fits a 1 GB board beside the OS
BUCKET_PLACEHOLDER = "REPLACE-WITH-YOUR-BUCKET"
TEMPLATE_DIR = "edge"
_TEMPLATES = ("__init__.py.j2", "__main__.py.j2", "edge.service.j2", "greengrass-recipe.yaml.j2", "README.txt.j2")


@dataclass
class EdgeBundle:
    tar_path: str
    sha256: str
    bytes: int
    module: str  # python -m <module>
    top_dir: str  # the tar's one top folder
    model: str
    variant: str
    model_format: str
    model_sha256: str
    platform: str
    python_version: str
    requirements: list[str]
    with_deps: bool
    wheels: list[str] = field(default_factory=list)  # file names under wheels/ (with_deps)
    recipe_path: str = ""
    component_name: str = ""
    artifact_uri: str = ""
    input_hash: str = ""
    memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB
    reused: bool = False
    warnings: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "reused"}
        atomic_write_json(path, data)


def package_edge(variant_dir: Path, out_dir: Path, cache: Path, platform: str = "linux_x86_64",
                 with_deps: bool = False, python_version: str | None = None, s3_bucket: str | None = None,
                 component_version: str = "1.0.0", memory_budget_mb: int = DEFAULT_MEMORY_BUDGET_MB) -> EdgeBundle:
    """Bundle the model variant in variant_dir as out_dir/<name>-edge.tar.gz for a Linux device.

    platform: linux_x86_64 | linux_aarch64 | linux_armv7l. with_deps vendors the runtime's wheels for offline
    installs. python_version: the device's Python (default: this one). s3_bucket fills the Greengrass artifact
    URI (default: a placeholder to replace). memory_budget_mb: what the service may use on the board (systemd
    MemoryMax=, the Greengrass memory limit, the server's buffer plan; templates' `memory_budget_mb`). A bundle whose inputs did not change is reused, not rebuilt.
    """
    if platform not in PLATFORMS:
        raise UserError(f"unknown platform {platform!r}; choose one of {', '.join(PLATFORMS)}")
    python_version = python_version or default_python_version()
    if not re.fullmatch(r"3\.\d{1,2}", python_version):
        raise UserError(f"--python-version {python_version!r}: expected 3.X, e.g. 3.11")
    if memory_budget_mb < 1:
        raise UserError(f"--memory-budget-mb {memory_budget_mb}: give a number of MB above 0")
    if not re.fullmatch(r"\d+\.\d+\.\d+", component_version):
        raise UserError(f"component version {component_version!r}: Greengrass takes major.minor.patch, e.g. 1.0.0")
    variant_dir = Path(variant_dir)
    try:
        manifest = read_manifest(variant_dir)
    except ModelLoadError as exc:
        raise UserError(f"{variant_dir}: {exc}") from None
    if manifest.model.format not in dependencies.RUNTIME_FOR_FORMAT:
        raise UserError(f"{variant_dir}: a {manifest.model.format} model cannot ship to a device; bundle a .tflite "
                        "or .onnx variant (e.g. --variant tflite-int8)")

    requirements, index_lines, notes = _requirements(manifest, platform, python_version)
    wheel_dir = _wheels(requirements, platform, python_version, cache)
    if with_deps and wheel_dir is None:
        raise UserError(f"--with-deps: numpy has no {platform} wheel on PyPI, so an offline bundle cannot be made "
                        f"here. Bundle without --with-deps: the device installs numpy from piwheels ({PIWHEELS}) "
                        "and tflite-runtime from PyPI when it runs pip")
    wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir is not None else []

    names = _names(manifest.name)
    module, top = names["module"], names["top_dir"]
    files = _code_files(module, top, manifest, variant_dir)
    files[f"{top}/requirements.txt"] = ("\n".join([*index_lines, *requirements]) + "\n").encode()
    if with_deps:
        files.update({f"{top}/wheels/{w.name}": w for w in wheels})
    templates = {f"templates/{TEMPLATE_DIR}/{t}": templates_dir() / TEMPLATE_DIR / t for t in _TEMPLATES}
    bucket = s3_bucket or BUCKET_PLACEHOLDER
    inputs = input_hash({**files, **templates}, "edge", platform, python_version, with_deps, bucket,
                             component_version, __version__, memory_budget_mb)

    out_dir.mkdir(parents=True, exist_ok=True)
    record_path = out_dir / "package.json"
    previous = previous_record(record_path, EdgeBundle, inputs, _intact)
    if previous is not None:
        return previous

    check_loadable(variant_dir)
    tar_name = f"{top}.tar.gz"
    glibc = _glibc_needed(wheels)
    context = dict(
        names, name=manifest.name, variant=manifest.variant, model_file=manifest.model.file,
        model_sha256=manifest.model.sha256, runtime=requirements[-1].split("=")[0], platform=platform,
        platform_name=platform.removeprefix("linux_"), greengrass_arch=_GREENGRASS_ARCH[platform],
        python_version=python_version, requirements=requirements, with_deps=with_deps, port=DEFAULT_PORT,
        install_dir=f"/opt/{top}", tar_name=tar_name, input_hash=inputs, component_version=component_version,
        bucket=bucket, artifact_uri=f"s3://{bucket}/edgemaas/{manifest.name}/{inputs}/{tar_name}",
        glibc=glibc, notes=notes,
        pip_source='--no-index --find-links "{work:path}/' + top + '/wheels"' if with_deps else "",
        pip_source_manual=f"--no-index --find-links /opt/{top}/wheels " if with_deps else "",
        extra_install=_extra_install(platform), memory_budget_mb=memory_budget_mb,
    )
    recipe = render_plain(f"{TEMPLATE_DIR}/greengrass-recipe.yaml.j2", **context)
    files[f"{top}/{names['unit_name']}"] = render_plain(f"{TEMPLATE_DIR}/edge.service.j2", **context).encode()
    files[f"{top}/greengrass-recipe.yaml"] = recipe.encode()
    files[f"{top}/README.txt"] = render_plain(f"{TEMPLATE_DIR}/README.txt.j2", **context).encode()

    wheel_names = {f"{top}/wheels/{w.name}" for w in wheels} if with_deps else set()
    check_no_secrets({n: f for n, f in files.items() if n not in wheel_names})  # by name and content
    check_no_secrets({n: files[n] for n in wheel_names}, scan_contents=False)  # published wheels: names only
    tar_path = out_dir / tar_name
    write_deterministic_tar(tar_path, files)
    recipe_path = out_dir / "greengrass-recipe.yaml"
    atomic_write_bytes(recipe_path, recipe.encode())
    bundle = EdgeBundle(
        tar_path=str(tar_path), sha256=sha256_file(tar_path), bytes=tar_path.stat().st_size, module=module,
        top_dir=top, model=manifest.name, variant=manifest.variant, model_format=manifest.model.format,
        model_sha256=manifest.model.sha256, platform=platform, python_version=python_version,
        requirements=requirements, with_deps=with_deps, wheels=[w.name for w in wheels] if with_deps else [],
        recipe_path=str(recipe_path), component_name=names["component_name"], artifact_uri=context["artifact_uri"],
        input_hash=inputs, warnings=notes, memory_budget_mb=memory_budget_mb,
    )
    bundle.save(record_path)
    return bundle


def _names(model_name: str) -> dict[str, str]:
    """Names derived from the model's: a Python module, a folder, a unit, a Greengrass component."""
    slug = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-") or "model"
    module = re.sub(r"\W", "_", slug.replace("-", "_"))
    if not module[0].isalpha():
        module = f"m_{module}"
    return {"module": f"{module}_edge", "top_dir": f"{slug}-edge", "unit_name": f"{slug}-edge.service",
            "component_name": f"com.edgemaas.{slug}"}


def _requirements(manifest: Manifest, platform: str, python_version: str) -> tuple[list[str], list[str], list[str]]:
    """(requirements, index lines for requirements.txt, notes for the user) for the target."""
    if platform != "linux_armv7l":
        return dependencies.requirements_for(manifest.model.format), [], []
    if manifest.model.format != "tflite":
        raise UserError("linux_armv7l: onnxruntime publishes no 32-bit ARM wheels (nor does ai-edge-litert); on a "
                        "32-bit Raspberry Pi OS only .tflite models run, through tflite-runtime. Bundle a tflite "
                        "variant, or use a 64-bit OS (--platform linux_aarch64)")
    version = ARMV7L_TFLITE_RUNTIME.get(python_version)
    if version is None:
        pythons = ", ".join(ARMV7L_TFLITE_RUNTIME)
        raise UserError(f"linux_armv7l: tflite-runtime has 32-bit ARM wheels for Python {pythons} only (Raspberry Pi "
                        f"OS bullseye has 3.9), none for {python_version} (bookworm has 3.11), and ai-edge-litert has "
                        "none at all. Use --python-version 3.9 on bullseye, or a 64-bit Raspberry Pi OS with "
                        "--platform linux_aarch64")
    notes = [(f"numpy is installed from piwheels ({PIWHEELS}) at install time: PyPI has no {platform} numpy "
              "wheel, so the device needs network access for it"),
             (f"tflite-runtime=={version} (not ai-edge-litert) serves the model on {platform}; the build-time "
              "evaluation ran on ai-edge-litert, so outputs may differ in the last digits")]
    return [ARMV7L_NUMPY, f"tflite-runtime=={version}"], [f"--extra-index-url {PIWHEELS}"], notes


def _wheels(requirements: list[str], platform: str, python_version: str, cache: Path) -> Path | None:
    """The runtime's wheels for the target (downloaded once into the cache). Downloading also proves they exist,
    with or without --with-deps. None on linux_armv7l, whose numpy is not on PyPI (tflite-runtime is checked)."""
    hint = (f"Try another --python-version (the device's Python) or --platform ({', '.join(PLATFORMS)}), or a model "
            "format served by the other runtime (ai-edge-litert for .tflite, onnxruntime for .onnx).")
    if platform == "linux_armv7l":
        dependencies.download([r for r in requirements if r.startswith("tflite-runtime")], python_version,
                              "armv7l", cache, platform_tags=ARMV7L_TAGS, hint=hint)
        return None
    return dependencies.download(requirements, python_version, _MANYLINUX_ARCH[platform], cache, hint=hint)


def _extra_install(platform: str) -> str:
    if platform == "linux_armv7l":
        return ("(numpy comes from piwheels, listed in requirements.txt; if it cannot load a shared library, "
                "install the apt packages piwheels lists for it, e.g. libopenblas0)")
    return ""


def _glibc_needed(wheels: list[Path]) -> str:
    """The newest glibc any wheel's manylinux tag asks for (manylinux2014 means 2.17)."""
    needs = [(2, 17)]
    for wheel in wheels:
        tags = [tuple(map(int, m)) for m in re.findall(r"manylinux_(\d+)_(\d+)_", wheel.name)]
        if tags:
            needs.append(min(tags))
    return ".".join(map(str, max(needs)))


def _code_files(module: str, top: str, manifest: Manifest, variant_dir: Path) -> dict[str, Path | bytes]:
    package = f"{top}/{module}"
    values = {"module": module, "name": manifest.name, "variant": manifest.variant, "model_file": manifest.model.file,
              "model_sha256": manifest.model.sha256, "runtime": dependencies.RUNTIME_FOR_FORMAT[manifest.model.format]}
    files: dict[str, Path | bytes] = {
        f"{package}/__init__.py": render_plain(f"{TEMPLATE_DIR}/__init__.py.j2", **values).encode(),
        f"{package}/__main__.py": render_plain(f"{TEMPLATE_DIR}/__main__.py.j2", **values).encode(),
    }
    files.update(tree(Path(str(resources.files("edgemaas.edge_entry"))), f"{package}/edge_entry/"))
    files.update(tree(Path(str(resources.files("edgemaas.runtime"))), f"{package}/runtime/"))
    files[f"{package}/model/{manifest.model.file}"] = variant_dir / manifest.model.file
    files[f"{package}/model/{MANIFEST_NAME}"] = variant_dir / MANIFEST_NAME
    return files


def _intact(bundle: EdgeBundle) -> bool:
    """The recorded bundle's tar is still there and unchanged, and so is its recipe."""
    return file_intact(bundle.tar_path, bundle.sha256) and (not bundle.recipe_path or Path(bundle.recipe_path).exists())
