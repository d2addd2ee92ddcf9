"""Tests for edgemaas.lambda_local against the real awslambdaric runtime client (no mocks)."""

from __future__ import annotations

import stat
import textwrap
import zipfile
from pathlib import Path

import pytest

from edgemaas.local import LocalLambdaError, invoke_local, runtime_client_dir

# Echoes the event and proves which process served it (pid + module-level counter).
ECHO_HANDLER = """
import os, sys, time
COUNT = 0
print("init done")

def handler(event, context):
    global COUNT
    COUNT += 1
    print("handling", context.aws_request_id)
    if event.get("sleep"):
        time.sleep(event["sleep"])
    if event.get("fail"):
        raise ValueError("bad input: " + str(event["fail"]))
    if event.get("exit"):
        os._exit(event["exit"])
    if event.get("hog_mb"):
        hog = b"x" * (event["hog_mb"] << 20)  # Touches every page, so RSS grows.
        time.sleep(3)
    return {"event": event, "count": COUNT, "pid": os.getpid(),
            "env": dict(os.environ), "path": sys.path}
"""


def write_files(root: Path, files: dict[str, str]) -> Path:
    """Write {relative path: source} under root and return root."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def make_zip(path: Path, files: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, textwrap.dedent(text))
    return path


@pytest.fixture()
def echo_dir(tmp_path: Path) -> Path:
    return write_files(tmp_path / "pkg", {"handler.py": ECHO_HANDLER})


def test_runtime_client_dir_is_cached() -> None:
    first = runtime_client_dir()
    assert (first / "awslambdaric" / "bootstrap.py").is_file()
    assert runtime_client_dir() == first


def test_echo_directory_cold_then_warm(echo_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEMAAS_LEAK_CHECK", "must-not-leak")
    results = invoke_local(echo_dir, [{"hello": "world"}, {"n": 2}], memory_mb=256,
                           env={"STAGE": "test"})
    first, second = results

    assert first.function_error is None and first.error_message is None
    assert first.payload["event"] == {"hello": "world"}
    assert first.init_duration_ms is not None and first.init_duration_ms > 0
    report = first.report_line()
    assert report.startswith(f"REPORT RequestId: {first.request_id} Duration: ")
    assert "Memory Size: 256 MB" in report and "Init Duration:" in report
    assert first.max_memory_used_mb > 0
    assert "init done" in first.logs and f"handling {first.request_id}" in first.logs

    assert second.payload["event"] == {"n": 2}
    assert second.init_duration_ms is None and "Init Duration" not in second.report_line()
    assert second.logs.strip() == f"handling {second.request_id}"
    assert second.request_id != first.request_id

    # Clean environment: Lambda's variables, our override, nothing from the caller.
    env = first.payload["env"]
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_REGION"] == "us-east-1" and env["STAGE"] == "test"
    assert env["LAMBDA_TASK_ROOT"] == str(echo_dir.resolve())
    assert "EDGEMAAS_LEAK_CHECK" not in env and "VIRTUAL_ENV" not in env
    assert not any("site-packages" in p for p in first.payload["path"])


def test_zip_package_two_events_share_one_process(tmp_path: Path) -> None:
    package = make_zip(tmp_path / "fn.zip", {"handler.py": ECHO_HANDLER})
    first, second = invoke_local(package, [{"i": 1}, {"i": 2}])
    assert (first.payload["count"], second.payload["count"]) == (1, 2)
    assert first.payload["pid"] == second.payload["pid"]
    assert first.init_duration_ms is not None and second.init_duration_ms is None


def test_unhandled_exception(echo_dir: Path) -> None:
    failed, after = invoke_local(echo_dir, [{"fail": 42}, {"ok": True}])
    assert failed.function_error == "Unhandled"
    assert "ValueError" in failed.error_message and "bad input: 42" in failed.error_message
    assert failed.payload["errorType"] == "ValueError"
    assert "[ERROR] ValueError" in failed.logs
    # A handled-by-runtime exception does not reset the process.
    assert after.function_error is None and after.payload["count"] == 2


def test_dev_env_only_import_fails_like_lambda(tmp_path: Path) -> None:
    # pytest is importable here (dev venv) but not part of the package.
    package = write_files(tmp_path / "pkg", {
        "handler.py": "import pytest\n\ndef handler(event, context):\n    return 1\n"})
    (result,) = invoke_local(package, [{}])
    assert result.function_error == "Unhandled"
    assert result.error_message.startswith("Runtime.ImportModuleError: Unable to import module "
                                           "'handler': No module named 'pytest'")
    assert result.init_duration_ms is not None


def test_timeout_then_fresh_process(echo_dir: Path) -> None:
    timed_out, after = invoke_local(echo_dir, [{"sleep": 10}, {"i": 2}], timeout_s=1)
    assert timed_out.function_error == "Unhandled"
    assert timed_out.error_message == "Task timed out after 1.00 seconds"
    assert timed_out.init_duration_ms is not None
    # The next event is served by a new (cold) process.
    assert after.function_error is None
    assert after.payload["count"] == 1 and after.init_duration_ms is not None


def test_crash_and_out_of_memory_get_fresh_processes(echo_dir: Path) -> None:
    crashed, oom, after = invoke_local(echo_dir, [{"exit": 3}, {"hog_mb": 200}, {"i": 3}],
                                       memory_mb=128, timeout_s=10)
    assert crashed.function_error == "Unhandled"
    assert crashed.error_message == "Runtime.ExitError: Runtime exited with error: exit status 3"
    assert oom.function_error == "Unhandled"
    assert oom.error_message.startswith("Runtime.OutOfMemory")
    assert oom.max_memory_used_mb > 128
    assert after.function_error is None and after.payload["count"] == 1


def test_layer_zip_is_importable(tmp_path: Path) -> None:
    layer = make_zip(tmp_path / "layer.zip", {"python/mylib.py": "VALUE = 'from layer'\n"})
    package = write_files(tmp_path / "pkg", {"handler.py": """
        import mylib

        def handler(event, context):
            return {"value": mylib.VALUE, "file": mylib.__file__}
        """})
    (result,) = invoke_local(package, [{}], layers=[layer])
    assert result.function_error is None, result.error_message
    assert result.payload["value"] == "from layer"
    assert result.payload["file"].endswith("/opt/python/mylib.py")


def _symlink_zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("handler.py", "def handler(e, c):\n    return 1\n")
        link = zipfile.ZipInfo("escape")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "../../../etc")


@pytest.mark.parametrize("entry", ["../evil", "/abs/evil", "lib/../../evil", "symlink"])
def test_unsafe_zip_is_refused(tmp_path: Path, entry: str) -> None:
    package = tmp_path / "work" / "fn.zip"
    package.parent.mkdir()
    if entry == "symlink":
        _symlink_zip(package)
    else:
        make_zip(package, {"handler.py": "def handler(e, c):\n    return 1\n", entry: "pwned"})
    with pytest.raises(LocalLambdaError, match="refusing"):
        invoke_local(package, [{}])
    assert not (tmp_path / "evil").exists() and not (tmp_path / "work" / "evil").exists()


def test_missing_handler_module_is_a_setup_error(tmp_path: Path) -> None:
    # A classic mistake: zipping the folder, so handler.py is not at the zip root.
    package = make_zip(tmp_path / "fn.zip", {"src/handler.py": ECHO_HANDLER})
    with pytest.raises(LocalLambdaError, match="not found in the package"):
        invoke_local(package, [{}])
