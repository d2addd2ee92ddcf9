"""The wheel works when installed: build it, install it (not editable) into a fresh venv outside the repository,
and run the CLI from a directory that holds no checkout: `edgemaas package` for every target (plus the Serverless,
SAM and container-image outputs) and `edgemaas invoke --local`.

Installing TensorFlow & co. into a new venv costs minutes and gigabytes per run, so the fresh venv gets only the
wheel (`--no-deps`) and sees the project venv's third-party packages through a `.pth` path line. A path line adds a
folder to sys.path without processing the .pth files in it, so the project venv's editable-install hook never runs;
`test_cli_runs_the_installed_wheel` proves edgemaas (and its templates, handler and specs) comes from the fresh venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path, PurePosixPath

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.models("linear")

MODEL = "linear"
# One row of the diabetes features (scaled as scikit-learn ships them).
EVENT = {"inputs": [[0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]]}
# Not copied into the build tree: they are not source, and build/ dist/ are the CLI's workspace.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "venv", "node_modules", "build", "dist", "*.egg-info",
                                     "__pycache__", "*.pyc", ".pytest_cache", ".serverless")
STEP_TIMEOUT_S = 600


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT_S)
    assert done.returncode == 0, f"{' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel` builds from a copy of the working tree (setuptools writes build/ next to the sources,
    and the repository's build/ is the CLI's workspace)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(root / "out"), str(source)], cwd=root)
    (built,) = (root / "out").glob("edgemaas-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv outside the repository holding the wheel, non-editable; third-party packages via a .pth line."""
    env_dir = tmp_path_factory.mktemp("fresh") / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)],
         cwd=env_dir)
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=env_dir).stdout.strip())
    shared = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (purelib / "project_venv_dependencies.pth").write_text("".join(f"{p}\n" for p in shared))
    return env_dir


@pytest.fixture(scope="module")
def empty_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("empty")


def _env(venv_dir: Path) -> dict[str, str]:
    """The user's shell after `source venv/bin/activate`: nothing points at the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["VIRTUAL_ENV"] = str(venv_dir)
    env["PATH"] = f"{venv_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _edgemaas(venv_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return _run([str(venv_dir / "bin" / "edgemaas"), *args], cwd=cwd, env=_env(venv_dir))


def test_wheel_carries_templates_handler_and_specs_in_the_edgemaas_namespace(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    source = wheel.parents[1] / "source"  # the tree it was built from (the working tree may change meanwhile)
    top_level = {PurePosixPath(n).parts[0] for n in names}
    assert top_level == {"edgemaas", wheel.name.split("-py3")[0] + ".dist-info"}, top_level  # no `functions`
    missing = set()
    for folder, inside in (("templates", "edgemaas/templates"), ("models", "edgemaas/models"),
                           ("edgemaas", "edgemaas")):
        for path in (source / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc" \
                    and (folder != "edgemaas" or path.suffix == ".py"):
                expected = f"{inside}/{path.relative_to(source / folder).as_posix()}"
                if expected not in names:
                    missing.add(expected)
    # A new subpackage or template folder must be listed in pyproject.toml's [tool.setuptools] packages.
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert "edgemaas/functions/aws_lambda.py" in names
    assert {"edgemaas/templates/Dockerfile.j2", "edgemaas/templates/edge/__main__.py.j2",
            "edgemaas/templates/mcu/model_data.cc.j2", "edgemaas/templates/mobile/litert.kt.j2",
            f"edgemaas/models/{MODEL}.yaml"} <= names
    assert not any(n.startswith("edgemaas/build/") or n.startswith("edgemaas/dist/") for n in names)


def test_cli_runs_the_installed_wheel(installed: Path, empty_dir: Path) -> None:
    probe = ("import json, importlib.util, edgemaas, edgemaas.resources as r; print(json.dumps({"
             "'edgemaas': edgemaas.__file__, 'templates': str(r.templates_dir()), 'handler': str(r.handler_file()),"
             "'specs': str(r.builtin_specs_dir()), 'functions': importlib.util.find_spec('functions') is not None}))")
    where = json.loads(_run([str(installed / "bin" / "python"), "-c", probe], cwd=empty_dir,
                            env=_env(installed)).stdout)
    site = Path(_run([str(installed / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                      "['purelib'])"], cwd=empty_dir, env=_env(installed)).stdout.strip())
    assert Path(where["edgemaas"]) == site / "edgemaas" / "__init__.py"
    assert Path(where["templates"]) == site / "edgemaas" / "templates"
    assert Path(where["handler"]) == site / "edgemaas" / "functions" / "aws_lambda.py"
    assert Path(where["specs"]) == site / "edgemaas" / "models"
    assert where["functions"] is False  # no top-level `functions` package installed
    assert not (site / "__editable__.edgemaas-0.1.0.pth").exists()
    assert not any(site.glob("edgemaas-*.dist-info/direct_url.json")) or \
        '"editable": true' not in next(site.glob("edgemaas-*.dist-info/direct_url.json")).read_text()


def test_package_every_target_and_invoke_from_an_empty_directory(installed: Path, empty_dir: Path,
                                                                  trained) -> None:
    # The trained workspace only: no models/, no templates/, nothing of the repository.
    shutil.copytree(trained.model_dir(MODEL), empty_dir / "build" / MODEL)
    assert sorted(p.name for p in empty_dir.iterdir()) == ["build"]

    _edgemaas(installed, empty_dir, "package", MODEL, "--target", "lambda", "--layout", "image")
    assert (empty_dir / "dist" / MODEL / "lambda-image" / "Dockerfile").is_file()

    _edgemaas(installed, empty_dir, "package", MODEL, "--target", "lambda",
              "--serverless", "serverless.yml", "--sam", "template.yaml")
    with zipfile.ZipFile(empty_dir / "dist" / MODEL / "lambda" / "function.zip") as package:
        assert "handler.py" in package.namelist()
    assert f"{MODEL}:" in (empty_dir / "serverless.yml").read_text()
    assert "AWS::Serverless::Function" in (empty_dir / "template.yaml").read_text()

    _edgemaas(installed, empty_dir, "package", MODEL, "--target", "edge")
    assert (empty_dir / "dist" / MODEL / "edge" / f"{MODEL}-edge.tar.gz").is_file()

    _edgemaas(installed, empty_dir, "package", MODEL, "--target", "mcu")
    mcu = empty_dir / "dist" / MODEL / "mcu"
    assert {f"{MODEL}_model_data.cc", f"{MODEL}_model_data.h", f"{MODEL}_op_resolver.h", "SUMMARY.md"} <= \
        {p.name for p in mcu.iterdir()}

    for phone, code in (("android", "LinearModel.kt"), ("ios", "LinearModel.swift")):
        _edgemaas(installed, empty_dir, "package", MODEL, "--target", phone)
        assert (empty_dir / "dist" / MODEL / phone / code).is_file()

    done = _edgemaas(installed, empty_dir, "invoke", MODEL, "--local", "--data", json.dumps(EVENT))
    assert '"progression"' in done.stdout, done.stdout
    assert not (empty_dir / "models").exists() and not (empty_dir / "templates").exists()
