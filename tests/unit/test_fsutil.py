"""edgemaas.fsutil: atomic file and folder writes, one temporary-name scheme, stale-temporary cleanup."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from edgemaas import fsutil


def _dead_pid() -> int:
    """A pid with no process: the highest pid number is almost never in use; checked, not assumed."""
    for pid in range(4_194_000, 4_194_304):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            continue
    raise AssertionError("no free pid found")


def test_temp_name_is_hidden_beside_target_and_recognised(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    tmp = fsutil.temp_path(target)
    assert tmp.parent == tmp_path
    assert tmp.name.startswith(f".model.onnx.tmp.{os.getpid()}.")
    assert fsutil.is_temporary(tmp) and fsutil.temporary_target(tmp) == "model.onnx"
    assert fsutil.temp_path(target) != tmp  # unique per call
    kept = fsutil.temp_path(tmp_path / "data.npz", keep_suffix=True)
    assert kept.name.startswith(".data.npz.tmp.") and kept.name.endswith(".npz") and fsutil.temporary_target(kept) == "data.npz"
    assert not fsutil.is_temporary(target)
    assert not fsutil.is_temporary(tmp_path / ".model.onnx.inputs.json")


def test_atomic_write_bytes_text_json(tmp_path: Path) -> None:
    fsutil.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01")
    fsutil.atomic_write_text(tmp_path / "sub" / "b.txt", "héllo")
    fsutil.atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "héllo"
    text = (tmp_path / "c.json").read_text(encoding="utf-8")
    assert text.endswith("\n") and json.loads(text) == {"b": 1, "a": [1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "c.json", "sub"]  # no temporaries left


def test_written_file_gets_ordinary_mode_not_0600(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        fsutil.atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644


def test_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "r.txt"
    target.write_text("old")
    fsutil.atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_json_that_cannot_serialise_touches_nothing(tmp_path: Path) -> None:
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(TypeError):
        fsutil.atomic_write_json(target, {"x": object()})
    assert target.read_text() == "old" and list(tmp_path.iterdir()) == [target]


def test_atomic_path_failure_keeps_old_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "data.npz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with fsutil.atomic_path(target, keep_suffix=True) as tmp:
            assert tmp.suffix == ".npz"
            tmp.write_bytes(b"half")
            raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old" and list(tmp_path.iterdir()) == [target]


def test_atomic_path_requires_something_written(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        with fsutil.atomic_path(tmp_path / "x"):
            pass
    assert not (tmp_path / "x").exists()


def test_atomic_dir_publishes_and_replaces(tmp_path: Path) -> None:
    out = tmp_path / "variant"
    with fsutil.atomic_dir(out) as staging:
        assert staging.parent == tmp_path and fsutil.is_temporary(staging) and not out.exists()
        (staging / "model.onnx").write_bytes(b"one")
    assert (out / "model.onnx").read_bytes() == b"one"
    with fsutil.atomic_dir(out) as staging:
        (staging / "model.tflite").write_bytes(b"two")
    assert sorted(p.name for p in out.iterdir()) == ["model.tflite"]  # replaced whole, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["variant"]


def test_atomic_dir_failure_keeps_old_folder(tmp_path: Path) -> None:
    out = tmp_path / "variant"
    out.mkdir()
    (out / "keep").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with fsutil.atomic_dir(out) as staging:
            (staging / "keep").write_text("new")
            raise KeyboardInterrupt
    assert (out / "keep").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["variant"]


def test_publish_dir_over_missing_target(tmp_path: Path) -> None:
    staging = tmp_path / "build"
    staging.mkdir()
    (staging / "f").write_text("x")
    fsutil.publish_dir(staging, tmp_path / "out")
    assert (tmp_path / "out" / "f").read_text() == "x" and not staging.exists()


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "fn.zip"
    dead = tmp_path / f".fn.zip.tmp.{_dead_pid()}.0123abcd"
    dead.write_bytes(b"half")
    dead_dir = tmp_path / f".fn.zip.tmp.{_dead_pid()}.89abcdef"
    dead_dir.mkdir()
    (dead_dir / "x").write_text("half")
    live = fsutil.temp_path(target)  # this process: still writing
    live.write_bytes(b"busy")
    other = tmp_path / f".other.zip.tmp.{_dead_pid()}.0123abcd"
    other.write_bytes(b"half")
    lookalike = tmp_path / ".fn.zip.inputs.json"
    lookalike.write_text("{}")
    removed = fsutil.remove_stale_temporaries(target)
    assert sorted(removed) == sorted([dead, dead_dir])
    assert live.exists() and other.exists() and lookalike.exists()
    assert fsutil.remove_stale_temporaries_in(tmp_path) == [other]
    assert live.exists() and lookalike.exists()


def test_writing_a_target_cleans_its_stale_temporaries(tmp_path: Path) -> None:
    stale = tmp_path / f".r.json.tmp.{_dead_pid()}.0123abcd.json"
    stale.write_text("{")
    fsutil.atomic_write_json(tmp_path / "r.json", {})
    assert not stale.exists()


def test_glob_metacharacters_in_names(tmp_path: Path) -> None:
    target = tmp_path / "a[1]*.txt"
    stale = tmp_path / f".a[1]*.txt.tmp.{_dead_pid()}.0123abcd"
    stale.write_text("x")
    fsutil.atomic_write_text(target, "ok")
    assert target.read_text() == "ok" and not stale.exists()


def test_atomic_write_many_moves_all_or_nothing(tmp_path: Path) -> None:
    md, js = tmp_path / "report.md", tmp_path / "report.json"
    md.write_text("old md")
    assert fsutil.atomic_write_many({md: lambda p: p.write_text("new md"),
                                     js: lambda p: p.write_text("{}")}) == [md, js]
    assert md.read_text() == "new md" and js.read_text() == "{}"

    def broken(path: Path) -> None:
        path.write_text("half")
        raise ValueError("plot failed")

    with pytest.raises(ValueError):
        fsutil.atomic_write_many({md: lambda p: p.write_text("newer md"), tmp_path / "plot.png": broken,
                                  js: lambda p: p.write_text('{"x": 1}')})
    assert md.read_text() == "new md" and js.read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]
