"""A TFLite file you bring keeps its names through compression: its ONNX variants take and answer the names callers
use on the TFLite file (its signature's: `image`, `landmarks`, ...), not the tensor names tf2onnx copies from the
flatbuffer (`serving_default_image:0`, `StatefulPartitionedCall:1`), so one request works on every variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgemaas.pipeline import compress_file
from edgemaas.runtime import load_model
from edgemaas.workspace import Workspace
from tests.tensor_models import landmarks_tflite


def test_onnx_variants_of_a_tflite_file_answer_to_its_signature_names(tmp_path: Path) -> None:
    source = landmarks_tflite(tmp_path / "landmarks.tflite")
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.random((32, 16, 16, 3), dtype=np.float32))
    ws = Workspace(tmp_path / "ws")
    card = compress_file(source, ws, calibration_data=tmp_path / "x.npy")
    rows = {row["variant"]: row for row in card["variants"]}
    assert rows["onnx-float32"]["status"] not in ("failed", "skipped"), rows["onnx-float32"]["reason"]

    original = load_model(ws.variant_dir("landmarks", card["reference"]["variant"]))
    exported = load_model(ws.variant_dir("landmarks", "onnx-float32"))
    names = [t.name for t in original.tensor_inputs], [t.name for t in original.tensor_outputs]
    assert names[0] == ["image"] and set(names[1]) == {"embedding", "landmarks", "mask", "pose", "score"}
    # Same names; the ONNX file lists its outputs in the flatbuffer's order, which the signature may not follow.
    assert [t.name for t in exported.tensor_inputs] == names[0]
    assert sorted(t.name for t in exported.tensor_outputs) == sorted(names[1])

    # The same named request, every output by the same name, equal within float32 conversion error.
    request = {"image": rng.random((2, 16, 16, 3), dtype=np.float32).tolist()}
    expected, answered = original.predict_tensors(request), exported.predict_tensors(request)
    assert set(answered) == set(expected)
    for name, value in expected.items():
        assert answered[name]["shape"] == value["shape"], name
        np.testing.assert_allclose(answered[name]["data"], value["data"], rtol=1e-4, atol=1e-5, err_msg=name)
