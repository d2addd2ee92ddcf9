"""Small models of every kind people bring, made for the tests: `python -m tests.tensor_models OUT_DIR`.

ONNX graphs come from onnx.helper; TFLite files from Keras/TF models converted in this (child) process, so the
test process never imports TensorFlow. Each model is tiny but has the trait a production file had:

- detector.onnx: two outputs declared out of name order (out_1 then out_0), symbolic batch/height/width, and
  metadata_props holding a label dictionary;
- vad.onnx: a streaming model (silero-like): input [batch, samples], a recurrent state [2, batch, 16] whose batch is
  second, and an int64 0-d sample rate;
- branchy.onnx: its whole graph inside an If, the output's rank unknown to the file;
- dtypes.onnx: one input and output of each served dtype (float16, float64, int32, uint8, int8, bool);
- landmarks.tflite: five outputs (one a segmentation mask) whose signature names differ from their tensor names;
- textline.tflite: a text-line recogniser [N, 8, W, 3] with a dynamic width;
- int8.tflite: a fully int8 model (int8 input and output);
- stream.tflite: a dynamic signature [-1, -1] that cannot be allocated before it is resized (frames of 4 samples);
- custom_op.tflite: a TF op LiteRT has no kernel for (BesselI0e), kept as a custom op.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ONNX_OPSET = 17
RNG_SEED = 7


def detector_onnx(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(RNG_SEED)
    images = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    scores = helper.make_tensor_value_info("out_1", TensorProto.FLOAT, ["batch", 2])
    boxes = helper.make_tensor_value_info("out_0", TensorProto.FLOAT, ["batch", 4])
    w_box = numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "w_box")
    w_cls = numpy_helper.from_array(rng.normal(size=(3, 2)).astype(np.float32), "w_cls")
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["pooled"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["pooled", "w_box"], ["out_0"]),
        helper.make_node("MatMul", ["pooled", "w_cls"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["out_1"], axis=-1),
    ]
    graph = helper.make_graph(nodes, "detector", [images], [scores, boxes], [w_box, w_cls])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    helper.set_model_props(model, {"names": json.dumps({"0": "cat", "1": "dog"}), "stride": "32"})
    return _save_onnx(model, path)


def vad_onnx(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    audio = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "samples"])
    state = helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 16])
    rate = helper.make_tensor_value_info("sr", TensorProto.INT64, [])
    prob = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1])
    state_out = helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", 16])
    ramp = numpy_helper.from_array(np.linspace(-1, 1, 16, dtype=np.float32).reshape(1, 1, 16), "ramp")
    norm = numpy_helper.from_array(np.array(16000.0, np.float32), "norm")
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["energy"], axes=[1], keepdims=1),        # [batch, 1]
        helper.make_node("Unsqueeze", ["energy", "zero"], ["energy3"]),                     # [1, batch, 1]
        helper.make_node("Mul", ["energy3", "ramp"], ["drive"]),                             # [1, batch, 16]
        helper.make_node("Add", ["state", "drive"], ["mixed"]),
        helper.make_node("Tanh", ["mixed"], ["stateN"]),
        helper.make_node("ReduceMean", ["stateN"], ["memory"], axes=[0, 2], keepdims=0),    # [batch]
        helper.make_node("Unsqueeze", ["memory", "one"], ["memory2"]),                      # [batch, 1]
        helper.make_node("Cast", ["sr"], ["rate"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["rate", "norm"], ["scale"]),
        helper.make_node("Mul", ["energy", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "memory2"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
    ]
    zero = numpy_helper.from_array(np.array([0], np.int64), "zero")
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    graph = helper.make_graph(nodes, "vad", [audio, state, rate], [prob, state_out], [ramp, norm, zero, one])
    return _save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)]), path)


def branchy_onnx(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)  # the file does not say the rank
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    then_out = helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["batch", 4])
    else_out = helper.make_tensor_value_info("negated", TensorProto.FLOAT, ["batch", 4])
    then_graph = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["doubled"])], "then", [], [then_out])
    else_graph = helper.make_graph([helper.make_node("Neg", ["x"], ["negated"])], "else", [], [else_out])
    zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["positive"]),
        helper.make_node("If", ["positive"], ["y"], then_branch=then_graph, else_branch=else_graph),
    ]
    graph = helper.make_graph(nodes, "branchy", [x], [y], [two, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)])
    return _save_onnx(model, path, check=False)  # the checker wants every graph output's rank; real files lack it


DTYPE_INPUTS = {"half": "float16", "count": "int32", "pixels": "uint8", "mask": "bool", "offset": "int8",
                "wide": "float64"}


def dtypes_onnx(path: Path) -> Path:
    """One input of each served dtype, each echoed (plus one) as an output of the same dtype: half [batch, 2],
    count [batch], pixels [batch, 3], mask [batch], offset [batch] and wide [batch]."""
    from onnx import TensorProto, helper, numpy_helper

    kinds = {"float16": TensorProto.FLOAT16, "int32": TensorProto.INT32, "uint8": TensorProto.UINT8,
             "bool": TensorProto.BOOL, "int8": TensorProto.INT8, "float64": TensorProto.DOUBLE}
    shapes = {"half": ["batch", 2], "pixels": ["batch", 3]}
    inputs, outputs, nodes, constants = [], [], [], []
    for name, dtype in DTYPE_INPUTS.items():
        shape = shapes.get(name, ["batch"])
        inputs.append(helper.make_tensor_value_info(name, kinds[dtype], shape))
        outputs.append(helper.make_tensor_value_info(f"{name}_out", kinds[dtype], shape))
        if dtype == "bool":
            nodes.append(helper.make_node("Not", [name], [f"{name}_out"]))
        else:
            constants.append(numpy_helper.from_array(np.array(1, dtype=dtype), f"{name}_one"))
            nodes.append(helper.make_node("Add", [name, f"{name}_one"], [f"{name}_out"]))
    graph = helper.make_graph(nodes, "dtypes", inputs, outputs, constants)
    # opset 14: Add takes int8/uint8 from opset 14 on
    return _save_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)]), path)


def _save_onnx(model: object, path: Path, check: bool = True) -> Path:
    import onnx

    model.ir_version = 9  # onnxruntime 1.16.3 (Lambda's Python 3.10/3.11 on Amazon Linux 2) reads IR 9 at most
    if check:
        onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _seeded() -> object:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(RNG_SEED)
    tf.random.set_seed(RNG_SEED)
    return keras


def _saved_model_tflite(model: object, workdir: Path, path: Path, **options: object) -> Path:
    """Keras model -> SavedModel (so the TFLite file has a signature with the output names) -> TFLite."""
    import tensorflow as tf

    saved = workdir / f".{path.stem}-savedmodel"
    model.export(str(saved), verbose=False)  # type: ignore[attr-defined]
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    for key, value in options.items():
        setattr(converter, key, value)
    path.write_bytes(converter.convert())
    return path


def landmarks_tflite(path: Path) -> Path:
    keras = _seeded()
    image = keras.Input(shape=(16, 16, 3), name="image")
    features = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(image)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    outputs = {
        "mask": keras.layers.Conv2D(1, 1, activation="sigmoid", name="mask")(features),
        "landmarks": keras.layers.Dense(10, name="landmarks")(pooled),
        "score": keras.layers.Dense(1, activation="sigmoid", name="score")(pooled),
        "pose": keras.layers.Dense(3, name="pose")(pooled),
        "embedding": keras.layers.Dense(8, name="embedding")(pooled),
    }
    return _saved_model_tflite(keras.Model(image, outputs), path.parent, path)


def textline_tflite(path: Path) -> Path:
    keras = _seeded()
    line = keras.Input(shape=(8, None, 3), name="line")
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(line)
    columns = keras.layers.Conv2D(5, (8, 1), padding="valid")(x)  # [N, 1, W, 5]
    logits = keras.layers.Reshape((-1, 5), name="logits")(columns)
    return _saved_model_tflite(keras.Model(line, {"logits": logits}), path.parent, path)


def int8_tflite(path: Path) -> Path:
    import tensorflow as tf

    keras = _seeded()
    features = keras.Input(shape=(6,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(features)
    model = keras.Model(features, {"probabilities": keras.layers.Dense(3, activation="softmax")(hidden)})
    rng = np.random.default_rng(RNG_SEED)

    def representative() -> object:
        for _ in range(32):
            yield [rng.normal(size=(1, 6)).astype(np.float32)]

    return _saved_model_tflite(model, path.parent, path, optimizations=[tf.lite.Optimize.DEFAULT],
                               representative_dataset=representative,
                               target_spec=_int8_target(tf), inference_input_type=tf.int8,
                               inference_output_type=tf.int8)


def _int8_target(tf: object) -> object:
    spec = tf.lite.TargetSpec()  # type: ignore[attr-defined]
    spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]  # type: ignore[attr-defined]
    return spec


def stream_tflite(path: Path) -> Path:
    import tensorflow as tf

    class Stream(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4))

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="audio")])
        def serve(self, audio: object) -> dict[str, object]:
            frames = tf.reshape(audio, [-1, 4])  # a length that is not a multiple of 4 cannot run
            features = tf.matmul(frames, self.weights)
            return {"regressors": tf.reduce_sum(features, axis=-1), "classificators": tf.nn.softmax(features)}

    module = Stream()
    saved = path.parent / f".{path.stem}-savedmodel"
    tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
    return path


def custom_op_tflite(path: Path) -> Path:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32, name="x")])
    def bessel(x: object) -> object:
        return tf.math.bessel_i0e(x)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([bessel.get_concrete_function()])
    converter.allow_custom_ops = True
    path.write_bytes(converter.convert())
    return path


ONNX_MODELS = {"detector": detector_onnx, "vad": vad_onnx, "branchy": branchy_onnx, "dtypes": dtypes_onnx}
TFLITE_MODELS = {"landmarks": landmarks_tflite, "textline": textline_tflite, "int8": int8_tflite,
                 "stream": stream_tflite, "custom_op": custom_op_tflite}


def build_all(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    made = {name: make(root / f"{name}.onnx") for name, make in ONNX_MODELS.items()}
    made.update({name: make(root / f"{name}.tflite") for name, make in TFLITE_MODELS.items()})
    return made


if __name__ == "__main__":
    for name, file in build_all(Path(sys.argv[1])).items():
        print(name, file)
