"""ONNX passes: export (Keras or TFLite -> ONNX), dynamic and static (QDQ) int8 quantization, float16.

Each public function is a job for `edgemaas.isolate.run_isolated`: picklable arguments (paths, numbers), a JSON-able
dict of notes back. A converter or a quantizer can crash the interpreter, which is why they run in a child process.
Every job writes a temporary beside `out_path` (edgemaas.fsutil's naming), checks that it loads in onnxruntime (CPU) and runs on more than one sample, and
only then renames it to `out_path`: a file at `out_path` is always a model that ran.

Sample inputs (`.npy`) are already preprocessed, as the model takes them. A model with several inputs takes an
`.npz` whose arrays are named after its inputs (or stored in input order).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from edgemaas.errors import StageFailed, UserError
from edgemaas.fsutil import atomic_path, remove_stale_temporaries, temp_path

MIN_OPSET = 17
SOURCE_FORMATS = ("keras", "tflite")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DYNAMIC_WEIGHT_TYPES = ("qint8", "quint8")
STATIC_TYPES = ("qint8", "quint8", "qint16", "quint16")
# ORT's recommendation for x86/ARM CPUs: asymmetric activations (ranges rarely centred on 0, e.g. after ReLU),
# symmetric weights (zero point 0 keeps the integer kernels simple).
STATIC_EXTRA_OPTIONS = {"ActivationSymmetric": False, "WeightSymmetric": True}
# Embedding lookups: quantizing them is the first thing dropped when a quantized model fails to build or run.
EMBEDDING_OPS = ("Gather", "GatherElements", "GatherND")
# Last resort: quantize only the weight-heavy ops, which hold almost all of the bytes and the compute.
WEIGHT_OPS = ["Conv", "ConvTranspose", "MatMul", "Gemm"]
CALIBRATION_BATCH = 16
CHECK_BATCH = 3
BATCH_DIM = "batch"

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
               "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


# --------------------------------------------------------------------------------------------------------- export

def export_onnx(source_path: str, source_format: str, out_path: str, opset: int = 17,
                parity_inputs_path: str | None = None, parity_tolerance: float = 1e-4,
                io_names: tuple[list[str], list[str]] | None = None) -> dict:
    """Convert a Keras (.keras/.h5) or TFLite model to ONNX with a dynamic batch; optionally check output parity.

    `io_names` (inputs, outputs, in the file's order) renames the graph's inputs and outputs: a TFLite file exported
    to ONNX keeps tensor names ("serving_default_x:0"), callers of the original use its signature's ("x")."""
    import onnx
    import tf2onnx

    if source_format not in SOURCE_FORMATS:
        raise ValueError(f"unknown source format {source_format!r}; expected one of {', '.join(SOURCE_FORMATS)}")
    if int(opset) < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old; use {MIN_OPSET} or newer")
    if not parity_tolerance >= 0:
        raise ValueError(f"parity_tolerance must be a number >= 0, not {parity_tolerance!r}")
    _require_file(source_path)
    notes: dict[str, Any] = {"pass": "export_onnx", "source_format": source_format, "opset": int(opset),
                             "tf2onnx_version": tf2onnx.__version__, "warnings": []}
    keras_model = None
    if source_format == "keras":
        from edgemaas.tf import load_keras_model

        keras_model = load_keras_model(source_path)
        proto, notes["converter"], problems = _convert_keras(keras_model, int(opset))
        notes["warnings"] += problems
    else:
        with warnings.catch_warnings():  # tf2onnx reads tensor shapes with tf.lite.Interpreter, now deprecated
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            proto, _ = tf2onnx.convert.from_tflite(source_path, opset=int(opset))
        notes["converter"] = "tf2onnx.convert.from_tflite"
    notes["warnings"] += _make_batch_dynamic(proto)
    if io_names is not None:
        notes["renamed_io"] = rename_graph_io(proto.graph, *io_names)
    onnx.checker.check_model(proto)

    with atomic_path(out_path, keep_suffix=True) as partial:
        onnx.save(proto, str(partial))
        session = _session(partial)
        parity_feeds = None
        if parity_inputs_path:
            parity_feeds = _load_feeds(parity_inputs_path, session) if keras_model is not None \
                else _tflite_feeds(source_path, session, parity_inputs_path)
        try:
            _check_batches(session, parity_feeds, (1, CHECK_BATCH))
        except StageFailed as exc:
            fixed = _tflite_fixed_batch(source_path) if keras_model is None else None
            if fixed is None:
                raise
            raise StageFailed(f"{source_path} was converted with a fixed batch of {fixed} (a frozen concrete "
                              f"function?), which its ONNX graph keeps; export from the Keras model, or from a TFLite "
                              f"model with a dynamic batch. {exc}") from exc
        notes["batch_check"] = [1, CHECK_BATCH]
        notes["parity"] = None
        notes["parity_max_abs_diff"] = None
        if parity_feeds is not None:
            if keras_model is not None:
                parity = _keras_parity(keras_model, session, parity_feeds)
            else:
                parity = _tflite_parity(source_path, session, parity_feeds)
            parity["tolerance"] = float(parity_tolerance)
            notes["parity"] = parity
            notes["parity_max_abs_diff"] = parity["max_abs_diff"]
            if not parity["max_abs_diff"] <= parity_tolerance:  # `not <=` also catches NaN
                raise StageFailed(f"ONNX outputs differ from the {source_format} model by up to "
                                  f"{parity['max_abs_diff']:.3g} on {parity['samples']} samples "
                                  f"(tolerance {parity_tolerance:g})")
        notes.update(_graph_summary(proto))
        notes["file_bytes"] = partial.stat().st_size
    return notes


def _convert_keras(model: Any, opset: int, use_function: bool = False) -> tuple[Any, str, list[str]]:
    """tf2onnx on a Keras model: `from_keras`, else a traced `tf.function` (same signature). Returns the proto,
    the converter used and what went wrong on the way."""
    import tf2onnx

    from edgemaas.tf import tensorflow

    tf = tensorflow()
    if not model.inputs:
        raise UserError("the Keras model has no defined inputs (a subclassed model never called?); "
                        "build it with an Input layer")
    names = list(getattr(model, "input_names", None) or [t.name.split(":")[0] for t in model.inputs])
    # Batch None so any batch runs; dtype kept (text models take int32 token ids).
    signature = tuple(tf.TensorSpec((None, *t.shape[1:]), t.dtype, name=name)
                      for t, name in zip(model.inputs, names))
    problems: list[str] = []
    if not use_function:
        try:
            proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
            return proto, "tf2onnx.convert.from_keras", problems
        except Exception as exc:  # noqa: BLE001 - the function path below often succeeds where this fails
            problems.append(f"from_keras failed ({type(exc).__name__}: {str(exc)[:300]}); used from_function")

    @tf.function(input_signature=signature)
    def serve(*inputs: Any) -> Any:
        return model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)
    return proto, "tf2onnx.convert.from_function", problems


def _make_batch_dynamic(proto: Any) -> list[str]:
    """Name the first dim of every graph input and output `batch` (tf2onnx leaves a different `unk__N` on each,
    which hides that they are one size); a fixed first dim becomes symbolic too, and the batch check that follows
    finds out whether the graph really allows it."""
    graph = proto.graph
    renamed: set[str] = set()
    problems = []
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims:
            continue
        first = dims[0]
        if first.HasField("dim_param"):
            renamed.add(first.dim_param)
        else:
            problems.append(f"{value.name}: first dim was fixed at {first.dim_value}; made symbolic")
        first.dim_param = BATCH_DIM  # setting dim_param clears dim_value (a oneof)
    if renamed:  # keep intermediate shapes consistent with the renamed inputs/outputs
        for value in graph.value_info:
            for dim in value.type.tensor_type.shape.dim:
                if dim.HasField("dim_param") and dim.dim_param in renamed:
                    dim.dim_param = BATCH_DIM
    return problems


def _keras_parity(model: Any, session: Any, feeds: dict[str, np.ndarray]) -> dict:
    arrays = [feeds[i.name] for i in session.get_inputs()]
    expected = model.predict(arrays if len(arrays) > 1 else arrays[0], verbose=0, batch_size=32)
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    actual = session.run(None, feeds)
    return _compare(expected, actual, [o.name for o in session.get_outputs()])


def _tflite_feeds(tflite_path: str, session: Any, inputs_path: str) -> dict[str, np.ndarray]:
    """Parity samples for an ONNX model made from TFLite. A quantized interface (int8 inputs) takes float samples
    quantized with the TFLite model's own input parameters, as the serving runtime does."""
    interpreter = _tflite_interpreter(tflite_path)
    names = [i.name for i in session.get_inputs()]
    raw = _load_arrays(inputs_path, names)
    for position, detail in enumerate(interpreter.get_input_details()):
        name = detail["name"] if detail["name"] in raw else names[position]
        scale, zero = detail["quantization"]
        if scale and raw[name].dtype.kind == "f" and np.dtype(detail["dtype"]).kind in "iu":
            info = np.iinfo(detail["dtype"])
            raw[name] = np.clip(np.round(raw[name] / scale + zero), info.min, info.max)
    return _as_feeds(raw, session, inputs_path)


def _tflite_parity(tflite_path: str, session: Any, feeds: dict[str, np.ndarray]) -> dict:
    """Run the TFLite model and the ONNX one on the same samples; quantized outputs are compared dequantized, so
    the difference is in the model's units."""
    interpreter = _tflite_interpreter(tflite_path)
    inputs, outputs = interpreter.get_input_details(), interpreter.get_output_details()
    onnx_names = [i.name for i in session.get_inputs()]
    tflite_feeds = {d["index"]: feeds[d["name"] if d["name"] in feeds else onnx_names[position]].astype(d["dtype"])
                    for position, d in enumerate(inputs)}
    count = len(next(iter(tflite_feeds.values())))
    if all(d["shape_signature"][0] == -1 for d in inputs):  # a dynamic batch: one invoke for all samples
        for detail in inputs:
            interpreter.resize_tensor_input(detail["index"], tflite_feeds[detail["index"]].shape)
        interpreter.allocate_tensors()
        for index, array in tflite_feeds.items():
            interpreter.set_tensor(index, array)
        interpreter.invoke()
        expected = [interpreter.get_tensor(d["index"]).copy() for d in outputs]
    else:  # a frozen batch of 1: one sample at a time
        interpreter.allocate_tensors()
        per_sample = []
        for row in range(count):
            for index, array in tflite_feeds.items():
                interpreter.set_tensor(index, array[row:row + 1])
            interpreter.invoke()
            per_sample.append([interpreter.get_tensor(d["index"]).copy() for d in outputs])
        expected = [np.concatenate(parts) for parts in zip(*per_sample)]
    results = session.run(None, feeds)
    by_name = dict(zip([o.name for o in session.get_outputs()], results))
    actual = []
    for position, detail in enumerate(outputs):
        value = by_name.get(detail["name"], results[position])
        scale, zero = detail["quantization"]
        if scale and np.dtype(detail["dtype"]).kind in "iu":
            expected[position] = (expected[position].astype(np.float64) - zero) * scale
            value = (value.astype(np.float64) - zero) * scale
        actual.append(value)
    return _compare(expected, actual, [d["name"] for d in outputs])


def _tflite_fixed_batch(path: str) -> int | None:
    """The batch a TFLite model was frozen with, or None when its inputs take any batch."""
    details = _tflite_interpreter(path).get_input_details()
    fixed = [int(d["shape_signature"][0]) for d in details
             if len(d["shape_signature"]) and d["shape_signature"][0] != -1]
    return fixed[0] if fixed else None


def _tflite_interpreter(path: str) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the deprecated copy inside TensorFlow still works
        from edgemaas.tf import tensorflow

        Interpreter = tensorflow().lite.Interpreter
    return Interpreter(model_path=path)


def _compare(expected: list[np.ndarray], actual: list[np.ndarray], names: list[str]) -> dict:
    if len(expected) != len(actual):
        raise StageFailed(f"the source model has {len(expected)} outputs, the ONNX model {len(actual)}")
    per_output = {}
    for name, want, got in zip(names, expected, actual):
        want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
        if want.shape != got.shape:
            raise StageFailed(f"output {name}: shape {got.shape} in ONNX, {want.shape} in the source model")
        per_output[name] = float(np.max(np.abs(want - got))) if want.size else 0.0
    return {"samples": int(len(expected[0])), "max_abs_diff": max(per_output.values()), "per_output": per_output}


# --------------------------------------------------------------------------------------------------- quantization

def quantize_dynamic(source_path: str, out_path: str, per_channel: bool = False, weight_type: str = "qint8") -> dict:
    """Dynamic int8 quantization (weights int8 ahead of time, activations quantized at run time)."""
    from onnxruntime import quantization as q

    weight = _quant_type(weight_type, DYNAMIC_WEIGHT_TYPES, "weight_type")
    _require_file(source_path)
    settings = {"per_channel": bool(per_channel), "weight_type": weight_type.lower(), "extra_options": {}}

    def quantize(source: Path, target: Path, exclude: list[str], op_types: list[str] | None) -> None:
        q.quantize_dynamic(str(source), str(target), op_types_to_quantize=op_types, per_channel=bool(per_channel),
                           weight_type=weight, nodes_to_exclude=exclude)

    return _quantize_job("quantize_dynamic", source_path, out_path, settings, quantize, None)


def quantize_static(source_path: str, out_path: str, calibration_path: str, method: str = "minmax",
                    per_channel: bool = False, activation_type: str = "qint8", weight_type: str = "qint8",
                    nodes_to_exclude: list[str] | None = None) -> dict:
    """Static int8 quantization in QDQ format, activation ranges calibrated on preprocessed samples.
    `nodes_to_exclude`: nodes (of the preprocessed graph) kept in float, for selective precision."""
    from onnxruntime import quantization as q

    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {', '.join(CALIBRATION_METHODS)}")
    activation = _quant_type(activation_type, STATIC_TYPES, "activation_type")
    weight = _quant_type(weight_type, STATIC_TYPES, "weight_type")
    _require_file(source_path)
    _require_file(calibration_path)
    extra = dict(STATIC_EXTRA_OPTIONS)
    settings = {"format": "QDQ", "method": method, "per_channel": bool(per_channel),
                "activation_type": activation_type.lower(), "weight_type": weight_type.lower(), "extra_options": extra}
    calibration: dict[str, Any] = {}
    kept_float = list(nodes_to_exclude or [])
    if kept_float:
        settings["nodes_to_exclude"] = kept_float

    def quantize(source: Path, target: Path, exclude: list[str], op_types: list[str] | None) -> None:
        session = _session(source)
        feeds = _load_feeds(calibration_path, session)
        count = len(next(iter(feeds.values())))
        # Equal batches: the histogram calibrators (entropy, percentile) stack the batches' outputs into one array
        # and fail on a shorter last batch. So the largest batch up to CALIBRATION_BATCH that divides the count.
        batch = max(size for size in range(1, CALIBRATION_BATCH + 1) if count % size == 0)
        calibration.update(samples=count, batch_size=batch, method=method)
        # A fresh reader per attempt: a reader is an iterator, used up by one calibration.
        reader = _calibration_reader(q.CalibrationDataReader, feeds, batch)
        q.quantize_static(str(source), str(target), reader, quant_format=q.QuantFormat.QDQ,
                          op_types_to_quantize=op_types, per_channel=bool(per_channel), activation_type=activation,
                          weight_type=weight, nodes_to_exclude=[*exclude, *kept_float],
                          calibrate_method=methods[method],
                          extra_options=dict(extra))

    def check_feeds(session: Any) -> dict[str, np.ndarray]:
        # Rows repeat when there are fewer samples than CHECK_BATCH: the check is about running a batch.
        return {name: array[np.arange(CHECK_BATCH) % len(array)]
                for name, array in _load_feeds(calibration_path, session).items()}

    notes = _quantize_job("quantize_static", source_path, out_path, settings, quantize, check_feeds)
    notes["calibration"] = calibration
    return notes


def _quantize_job(name: str, source_path: str, out_path: str, settings: dict,
                  quantize: Callable[[Path, Path, list[str], list[str] | None], None],
                  check_feeds: Callable[[Any], dict[str, np.ndarray]] | None) -> dict:
    """Preprocess, then quantize with fewer ops on each failed attempt (everything; embeddings kept float; weight
    ops only) until the result loads and runs on a batch; publish it and return notes."""
    import onnx

    notes: dict[str, Any] = {"pass": name, "settings": settings, "warnings": []}
    out = Path(out_path)
    scratch_for = out.with_name(f"{out.name}.scratch")
    remove_stale_temporaries(scratch_for)
    scratch = temp_path(scratch_for)
    scratch.mkdir()
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, scratch, ignore_errors=True)
        partial = cleanup.enter_context(atomic_path(out, keep_suffix=True))
        source, notes["preprocess"] = _preprocess(source_path, scratch / "preprocessed.onnx")
        if not notes["preprocess"]["ok"]:
            notes["warnings"].append("quant_pre_process failed; quantized the model as exported")
        float_model = onnx.load(str(source))
        float_session = _session(source)
        feeds = check_feeds(float_session) if check_feeds else _synthetic_feeds(float_session, CHECK_BATCH)
        try:
            reference = float_session.run(None, feeds)
        except Exception as exc:
            raise StageFailed(f"{source_path}: the float model does not run on a batch of {CHECK_BATCH} (is its "
                              f"batch fixed? export it with a dynamic batch): {type(exc).__name__}: "
                              f"{str(exc)[:300]}") from exc
        embedding_nodes = [n.name for n in float_model.graph.node if n.op_type in EMBEDDING_OPS and n.name]
        attempts: list[tuple[str, list[str], list[str] | None]] = [("all supported ops", [], None)]
        if embedding_nodes:
            attempts.append(("embedding lookups kept float", embedding_nodes, None))
        attempts.append(("weight ops only", embedding_nodes, WEIGHT_OPS))
        failures = []
        for label, exclude, op_types in attempts:
            try:
                partial.unlink(missing_ok=True)
                quantize(source, partial, exclude, op_types)
                onnx.checker.check_model(str(partial))
                outputs = _session(partial).run(None, feeds)
            except UserError:  # bad samples or options: quantizing less will not help
                raise
            except Exception as exc:  # noqa: BLE001 - the next attempt quantizes less
                failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:300]}")
                continue
            notes.update(attempt=label, excluded_nodes=exclude, op_types_to_quantize=op_types)
            break
        else:
            raise StageFailed(f"{name} failed on every attempt: " + "; ".join(failures))
        if failures:
            notes["warnings"] += [f"quantization attempt failed, quantized less: {f}" for f in failures]
        quantized = onnx.load(str(partial))
        notes.update(_graph_summary(quantized))
        notes["quantized_op_types"] = _quantized_op_types(quantized)
        notes["batch_check"] = CHECK_BATCH
        notes["check_inputs"] = "calibration samples" if check_feeds else "synthetic"
        notes["check_max_abs_diff"] = _compare(reference, outputs, [o.name for o in float_session.get_outputs()]
                                               )["max_abs_diff"]
        notes["source_bytes"] = Path(source_path).stat().st_size
        notes["file_bytes"] = partial.stat().st_size
        notes["size_ratio"] = round(notes["file_bytes"] / notes["source_bytes"], 4)
    return notes


def _preprocess(source_path: str, target: Path) -> tuple[Path, dict]:
    """ORT's recommended pre-pass (symbolic shape inference, graph optimization), or the raw model if it fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        # When symbolic shape inference is incomplete, onnxruntime saves sym_shape_infer_temp.onnx and a uuid .data
        # file into the current directory before raising: run it from a scratch directory (passes run in their own
        # child process, so changing its directory touches nothing else).
        source, out = os.path.abspath(source_path), str(Path(target).resolve())
        with tempfile.TemporaryDirectory(prefix="edgemaas-ort-pre-") as scratch, _working_directory(scratch):
            quant_pre_process(source, out, skip_optimization=False)
        _session(target)  # a preprocessed model that does not load is no better than a failed pre-pass
        return target, {"ok": True}
    except Exception as exc:  # noqa: BLE001 - quantizing the raw model still works, usually
        return Path(source_path), {"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}


@contextlib.contextmanager
def _working_directory(path: str) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def _calibration_reader(base: type, feeds: dict[str, np.ndarray], batch: int) -> Any:
    """A CalibrationDataReader over preprocessed samples, in small batches (the model's batch is dynamic); batch 0:
    the feed once, as it is."""

    class Reader(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            if batch == 0:
                self._batches = iter([dict(feeds)])
                return
            count = len(next(iter(feeds.values())))
            self._batches = iter([{name: array[start:start + batch] for name, array in feeds.items()}
                                  for start in range(0, count, batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    return Reader()


def _quantized_op_types(model: Any) -> dict[str, int]:
    """Op types that now read a quantized tensor, what the quantization reached: a DequantizeLinear output (QDQ),
    or an integer weight directly (dynamic: MatMulInteger, ConvInteger, a Gather on an int8 embedding table)."""
    from onnx import TensorProto

    integer = (TensorProto.INT8, TensorProto.UINT8, TensorProto.INT16, TensorProto.UINT16)
    quantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantized |= {t.name for t in model.graph.initializer if t.data_type in integer}
    found = Counter(n.op_type for n in model.graph.node
                    if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and set(n.input) & quantized)
    return dict(found.most_common())


def _quant_type(name: str, allowed: tuple[str, ...], what: str) -> Any:
    from onnxruntime.quantization import QuantType

    if not isinstance(name, str) or name.lower() not in allowed:
        raise ValueError(f"unknown {what} {name!r}; expected one of {', '.join(allowed)}")
    by_name = {member.lower(): value for member, value in QuantType.__members__.items()}
    return by_name[name.lower()]


# -------------------------------------------------------------------------------------------------------- float16

def convert_float16(source_path: str, out_path: str) -> dict:
    """Float32 weights and compute to float16, inputs and outputs kept float32 (callers send the same arrays)."""
    import onnx

    try:
        from onnxruntime.transformers.float16 import convert_float_to_float16
        converter = "onnxruntime.transformers.float16"
    except ImportError:
        from onnxconverter_common.float16 import convert_float_to_float16
        converter = "onnxconverter_common.float16"
    _require_file(source_path)
    model = onnx.load(source_path)
    before = _initializer_bytes(model)
    casts_before = sum(n.op_type == "Cast" for n in model.graph.node)  # counted first: the converter may edit `model`
    clamped = _float16_clamped(model)  # ORT logs these at debug level only
    with warnings.catch_warnings(record=True) as caught:  # onnxconverter_common warns here; ORT logs at debug
        warnings.simplefilter("always")
        half = convert_float_to_float16(model, keep_io_types=True)
    _sort_nodes(half.graph)  # the converter appends the input Casts last; onnx.checker wants a topological order
    notes: dict[str, Any] = {"pass": "convert_float16", "converter": converter, "keep_io_types": True,
                             "warnings": sorted({str(w.message)[:300] for w in caught}),
                             "weights_clamped": clamped}
    if clamped:
        notes["warnings"].append(f"{clamped} weight values lie outside float16's range and were clamped")
    with atomic_path(out_path, keep_suffix=True) as partial:
        onnx.save(half, str(partial))
        onnx.checker.check_model(str(partial))
        float_session, half_session = _session(source_path), _session(partial)
        feeds = _synthetic_feeds(float_session, CHECK_BATCH)
        outputs = half_session.run(None, feeds)
        notes["check_max_abs_diff"] = _compare(float_session.run(None, feeds), outputs,
                                               [o.name for o in float_session.get_outputs()])["max_abs_diff"]
        notes["batch_check"] = CHECK_BATCH
        notes.update(_graph_summary(half))
        after = _initializer_bytes(half)
        notes.update(initializer_bytes_before=before, initializer_bytes_after=after,
                     initializer_ratio=round(after / before, 4) if before else None,
                     casts_added=notes["op_types"].get("Cast", 0) - casts_before,
                     source_bytes=Path(source_path).stat().st_size, file_bytes=partial.stat().st_size)
    return notes


def _sort_nodes(graph: Any) -> None:
    """Reorder the graph's nodes topologically (stable: already-ordered graphs stay as they are)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:  # a cycle or an input from an enclosing scope: leave the rest as it was
            ordered += pending
            break
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        for node in ready:
            available.update(node.output)
        ordered += ready
    if [id(n) for n in ordered] != [id(n) for n in graph.node]:
        copies = [type(n)() for n in ordered]
        for copy, node in zip(copies, ordered):
            copy.CopyFrom(node)
        del graph.node[:]
        graph.node.extend(copies)


def _float16_clamped(model: Any) -> int:
    """Float32 weights that float16 cannot hold: above its largest finite value, or non-zero below its smallest."""
    from onnx import TensorProto, numpy_helper

    count = 0
    for tensor in model.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            magnitude = np.abs(numpy_helper.to_array(tensor))
            count += int(np.count_nonzero((magnitude > 65504.0) | ((magnitude > 0) & (magnitude < 5.96e-08))))
    return count


# ------------------------------------------------------------------------------------------------------- helpers

def _require_file(path: str) -> None:
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")


def _session(path: str | Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's shape-merge warnings are noise in the job log
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _input_dtype(node_arg: Any) -> Any:
    if node_arg.type not in _ORT_DTYPES:
        raise StageFailed(f"input {node_arg.name} has type {node_arg.type}, which these passes do not feed")
    return _ORT_DTYPES[node_arg.type]


def _synthetic_feeds(session: Any, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs shaped like the model's with `batch` rows: normal floats; zeros for integers (a valid token id)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for node in session.get_inputs():
        shape = [batch] + [d if isinstance(d, int) and d > 0 else 1 for d in node.shape[1:]]
        dtype = _input_dtype(node)
        kind = np.dtype(dtype).kind
        feeds[node.name] = rng.standard_normal(shape).astype(dtype) if kind == "f" else np.zeros(shape, dtype)
    return feeds


def _load_arrays(path: str, names: list[str]) -> dict[str, np.ndarray]:
    _require_file(path)
    if str(path).endswith(".npz"):
        with np.load(path) as data:
            stored = {key: data[key] for key in data.files}
        if all(name in stored for name in names):
            return {name: stored[name] for name in names}
        if len(stored) == len(names):
            return dict(zip(names, stored.values()))
        raise UserError(f"{path}: arrays {', '.join(stored)} do not match the model's inputs {', '.join(names)}")
    if len(names) != 1:
        raise UserError(f"{path}: the model has {len(names)} inputs ({', '.join(names)}); give an .npz with one "
                        f"array per input")
    return {names[0]: np.load(path)}


def _load_feeds(path: str, session: Any) -> dict[str, np.ndarray]:
    """Samples from .npy/.npz as the ONNX model takes them (token ids saved as int64 become int32, and so on)."""
    return _as_feeds(_load_arrays(path, [i.name for i in session.get_inputs()]), session, path)


def _as_feeds(arrays: dict[str, np.ndarray], session: Any, path: str) -> dict[str, np.ndarray]:
    feeds = {}
    for node in session.get_inputs():
        array, dtype = arrays[node.name], _input_dtype(node)
        if array.ndim != len(node.shape):
            raise UserError(f"{path}: samples for input {node.name} have shape {array.shape}; the model takes "
                            f"{node.shape} (the first dim being the samples)")
        if np.dtype(dtype).kind in "iu" and array.dtype.kind == "f" and not np.all(array == np.round(array)):
            raise UserError(f"{path}: input {node.name} takes integers, the samples hold fractions; "
                            f"give preprocessed samples (quantized or token ids)")
        feeds[node.name] = array.astype(dtype, copy=False)
    if len({len(a) for a in feeds.values()}) != 1 or not len(next(iter(feeds.values()))):
        raise UserError(f"{path}: no samples, or a different number of samples per input")
    return feeds


def _check_batches(session: Any, feeds: dict[str, np.ndarray] | None, sizes: tuple[int, ...]) -> None:
    """Run batches of each size: proves the batch dim is really dynamic, not just labelled so."""
    for size in sizes:
        batch = {k: v[:size] for k, v in feeds.items()} if feeds and len(next(iter(feeds.values()))) >= size \
            else _synthetic_feeds(session, size)
        try:
            outputs = session.run(None, batch)
        except Exception as exc:
            raise StageFailed(f"the ONNX model does not run on a batch of {size} (is its batch fixed?): "
                              f"{type(exc).__name__}: {str(exc)[:300]}") from exc
        wrong = [o.shape for o in outputs if not o.shape or o.shape[0] != size]
        if wrong:
            raise StageFailed(f"a batch of {size} gave outputs shaped {wrong}: the batch dim is not dynamic")


def _graph_summary(model: Any) -> dict:
    import onnx

    def describe(values: Any) -> list[dict]:
        return [{"name": v.name,
                 "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
                 "dtype": onnx.TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower()} for v in values]

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset, "inputs": describe(model.graph.input), "outputs": describe(model.graph.output),
            "input_names": [v.name for v in model.graph.input], "output_names": [v.name for v in model.graph.output],
            "nodes": len(model.graph.node),
            "op_types": dict(Counter(n.op_type for n in model.graph.node).most_common()),
            "initializer_bytes": _initializer_bytes(model)}


def _initializer_bytes(model: Any) -> int:
    from onnx import numpy_helper

    return int(sum(numpy_helper.to_array(t).nbytes for t in model.graph.initializer))


# ---------------------------------------------------------------------------------------------- per-layer debugging

ONNX_DEBUG_METHOD = "onnxruntime qdq_loss_debug (nodes grouped by the layer that made them)"
ONNX_DEBUG_METRIC = ("noise / signal RMS (10^(-SQNR/20)): the layer output's own quantization noise beyond the "
                     "drift its inputs carry, or the drift from the float model it adds, the worse")
DEBUG_SAMPLES = 64


def qdq_layer_errors(float_path: str, qdq_path: str, calibration_path: str, whole_feed: bool = False) -> dict:
    """Job: the error each node's quantized output adds in a QDQ model, by the float graph's node names, in graph
    order: {"method", "metric", "layers": [{"layer", "op", "error", "tensors": [node names to exclude]}]}.

    `whole_feed`: the calibration file is one feed of several inputs (an .npz keyed by input name, or in input
    order), run as it is: its inputs need not share a leading sample dimension (a state [2, batch, 16], a 0-d
    sample rate).

    The QDQ model was quantized from the preprocessed float graph, so that graph (made again, deterministically)
    names the nodes; ORT's `qdq_err` compares each tensor before its QuantizeLinear with its DequantizeLinear
    output, i.e. the noise quantizing that tensor adds, not the noise accumulated up to it."""
    import onnx
    from onnxruntime import quantization as q
    from onnxruntime.quantization import qdq_loss_debug as debug

    _require_file(float_path)
    _require_file(qdq_path)
    scratch_for = Path(qdq_path).with_name(f"{Path(qdq_path).name}.debug")
    remove_stale_temporaries(scratch_for)
    scratch = temp_path(scratch_for)
    scratch.mkdir()
    try:
        # A whole feed comes from the several-input path, which quantizes the graph as it is (node names match it).
        source = Path(float_path) if whole_feed else _preprocess(float_path, scratch / "preprocessed.onnx")[0]
        augmented = scratch / "augmented.onnx"
        debug.modify_model_output_intermediate_tensors(str(qdq_path), str(augmented))
        if whole_feed:
            feeds, batch = _whole_feed(calibration_path, _session(qdq_path)), 0
        else:
            feeds, batch = {name: array[:DEBUG_SAMPLES] for name, array in _load_feeds(calibration_path,
                                                                                       _session(qdq_path)).items()}, 1
        activations = debug.collect_activations(str(augmented),
                                                _calibration_reader(q.CalibrationDataReader, feeds, batch))
        float_augmented = scratch / "float-augmented.onnx"
        debug.modify_model_output_intermediate_tensors(str(source), str(float_augmented))
        floats = debug.collect_activations(str(float_augmented),
                                           _calibration_reader(q.CalibrationDataReader, feeds, batch))
        errors = debug.compute_activation_error(debug.create_activation_matching(activations, floats))
        graph = onnx.load(str(source)).graph
        # The quantizer drops a Relu after a Conv or MatMul (the QuantizeLinear's zero point clips instead), and the
        # op before it then writes the Relu's tensor: that tensor's pre-quantization value is not the Relu's output,
        # and its "own noise" would be the negative half of the activations (seen: 0.7 for a 1% drift).
        quantized_by = {output: n.op_type for n in onnx.load(str(qdq_path)).graph.node for output in n.output}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    made_by = {output: node for node in graph.node for output in node.output}
    drift = {tensor: _noise_ratio(f["xmodel_err"]) for tensor, f in errors.items() if "xmodel_err" in f}

    def drift_of(tensor: str, seen: frozenset = frozenset()) -> float:
        # A tensor the QDQ model does not quantize (fused into the next op) carries its inputs' drift.
        if tensor in drift:
            return drift[tensor]
        node = made_by.get(tensor)
        if node is None or tensor in seen:
            return 0.0
        return max((drift_of(i, seen | {tensor}) for i in node.input), default=0.0)

    # Nodes grouped by the layer that made them (tf2onnx names them "<model>/<layer>/<op>"): a MatMul, its bias Add
    # and its Relu are one layer, quantized (and kept in float) together. A node without a name (hand-made graphs)
    # is shown by the tensor it makes, and cannot be excluded by name.
    layers: dict[str, dict[str, Any]] = {}
    for node in graph.node:
        if not node.name and not node.output:
            continue
        group = (node.name.rsplit("/", 1)[0] if "/" in node.name else node.name) or node.output[0]
        entry = layers.setdefault(group, {"layer": group, "op": node.op_type, "error": 0.0, "tensors": []})
        if node.name:
            entry["tensors"].append(node.name)
        error = 0.0
        inbound = max((drift_of(i) for i in node.input), default=0.0)
        for tensor in node.output:
            figures = errors.get(tensor) or {}
            own = _noise_ratio(figures["qdq_err"]) \
                if "qdq_err" in figures and _maker(quantized_by, tensor) in (node.op_type, None) else 0.0
            # What the node adds: its output's own quantization noise beyond the drift its inputs already carry
            # (values a broken layer upstream pushed out of this tensor's calibrated range clip here too, and that
            # is not this layer's doing), or how much further from the float model its output is than its inputs
            # were (quantized weights show only there).
            added = drift.get(tensor, 0.0) - inbound if tensor in drift else 0.0
            error = max(error, own - inbound, added)
        if error > entry["error"]:
            entry["error"], entry["op"] = error, node.op_type
    ranked = [entry for entry in layers.values() if entry["error"] > 0 or len(layers) == 1]
    samples = 1 if whole_feed else len(next(iter(feeds.values())))
    return {"method": ONNX_DEBUG_METHOD, "metric": ONNX_DEBUG_METRIC, "samples": samples, "layers": ranked}


def _maker(quantized_by: dict[str, str], tensor: str) -> str | None:
    """The op that makes `tensor`'s pre-quantization value in the QDQ model (a graph output's is renamed)."""
    return quantized_by.get(f"{tensor}_QuantizeLinear_Input") or quantized_by.get(tensor)


def _whole_feed(path: str, session: Any) -> dict[str, np.ndarray]:
    """One feed of every input, cast to the dtypes the model takes, shapes as they are."""
    arrays = _load_arrays(path, [i.name for i in session.get_inputs()])
    return {node.name: np.asarray(arrays[node.name]).astype(_input_dtype(node), copy=False)
            for node in session.get_inputs()}


def _noise_ratio(sqnr_db: float) -> float:
    """ORT's signal-to-quantization-noise ratio (dB) as noise / signal RMS: larger is worse, 0 is exact."""
    sqnr_db = float(sqnr_db)
    if not np.isfinite(sqnr_db):
        return 0.0 if sqnr_db > 0 else float("inf")
    return float(10 ** (-sqnr_db / 20))


def rename_graph_io(graph: Any, inputs: list[str], outputs: list[str]) -> bool:
    """Rename a graph's inputs and outputs, by position, everywhere they are used (subgraphs included). False, and
    the graph untouched, when the counts differ or a new name is already another tensor's."""
    constants = {t.name for t in graph.initializer}
    real_inputs = [v for v in graph.input if v.name not in constants]
    if len(real_inputs) != len(inputs) or len(graph.output) != len(outputs):
        return False
    renames = {v.name: name for v, name in zip([*real_inputs, *graph.output], [*inputs, *outputs]) if v.name != name}
    taken = _tensor_names(graph) - set(renames)
    if len(set(renames.values())) != len(renames) or taken & set(renames.values()):
        return False

    def walk(g: Any) -> None:
        for value in [*g.input, *g.output, *g.value_info]:
            value.name = renames.get(value.name, value.name)
        for node in g.node:
            node.input[:] = [renames.get(n, n) for n in node.input]
            node.output[:] = [renames.get(n, n) for n in node.output]
            for attribute in node.attribute:
                for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    walk(subgraph)

    walk(graph)
    return True


def _tensor_names(graph: Any) -> set[str]:
    names = {t.name for t in graph.initializer} | {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for attribute in node.attribute:
            for subgraph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                names |= _tensor_names(subgraph)
    return names
