"""edgemaas.reuse: an output is reused only when its inputs' fingerprint matches and it is unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgemaas import reuse


def test_fingerprint_is_canonical_and_sensitive() -> None:
    assert reuse.fingerprint({"a": 1, "b": 2}, "x") == reuse.fingerprint({"b": 2, "a": 1}, "x")
    assert reuse.fingerprint({"a": 1}) != reuse.fingerprint({"a": 2})
    assert reuse.fingerprint(b"abc") == reuse.fingerprint(b"abc") != reuse.fingerprint(b"abd")
    assert reuse.fingerprint(Path("/a/b")) == reuse.fingerprint("/a/b")
    assert len(reuse.fingerprint()) == 64


def test_files_fingerprint_follows_content(tmp_path: Path) -> None:
    f = tmp_path / "handler.py"
    f.write_text("one")
    first = reuse.files_fingerprint({"handler.py": f, "extra": b"x"}, "py3.11")
    assert reuse.files_fingerprint({"extra": b"x", "handler.py": f}, "py3.11") == first
    assert reuse.files_fingerprint({"handler.py": f, "extra": b"x"}, "py3.12") != first
    f.write_text("two")
    assert reuse.files_fingerprint({"handler.py": f, "extra": b"x"}, "py3.11") != first


def test_file_output_fresh_until_inputs_or_output_change(tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    stamp = reuse.fingerprint("parent-sha", "settings")
    assert not reuse.is_fresh(out, stamp)  # nothing yet
    out.write_bytes(b"model")
    assert not reuse.is_fresh(out, stamp)  # no record
    reuse.record(out, stamp, seconds=1.5)
    assert reuse.record_path(out) == tmp_path / ".model.onnx.inputs.json"
    assert reuse.is_fresh(out, stamp)
    assert reuse.recorded_extra(out) == {"seconds": 1.5}
    assert not reuse.is_fresh(out, reuse.fingerprint("other-parent", "settings"))
    out.write_bytes(b"edited")
    assert not reuse.is_fresh(out, stamp)
    out.unlink()
    assert not reuse.is_fresh(out, stamp)


def test_folder_output_digest_covers_files_not_records_or_temporaries(tmp_path: Path) -> None:
    out = tmp_path / "variant"
    (out / "sub").mkdir(parents=True)
    (out / "model.tflite").write_bytes(b"m")
    (out / "sub" / "labels.txt").write_text("a")
    stamp = reuse.fingerprint("v")
    reuse.record(out, stamp)
    assert reuse.is_fresh(out, stamp)
    (out / f".model.tflite.tmp.{999999}.0123abcd").write_bytes(b"junk")
    assert reuse.is_fresh(out, stamp)  # a temporary is not part of the output
    (out / "sub" / "labels.txt").write_text("b")
    assert not reuse.is_fresh(out, stamp)


def test_forget_and_unreadable_record(tmp_path: Path) -> None:
    out = tmp_path / "data.npz"
    out.write_bytes(b"d")
    stamp = reuse.fingerprint(1)
    reuse.record(out, stamp)
    reuse.forget(out)
    assert not reuse.is_fresh(out, stamp) and reuse.read_record(out) is None
    reuse.forget(out)  # twice is fine
    reuse.record_path(out).write_text("{not json")
    assert not reuse.is_fresh(out, stamp) and reuse.recorded_extra(out) == {}


def test_record_of_missing_output_fails(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        reuse.record(tmp_path / "nothing", "f")
    assert list(tmp_path.iterdir()) == []
