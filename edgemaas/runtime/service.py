"""The request contract every serving surface shares: the Lambda handler and the edge bundle's `predict` and `serve`.

Transport-independent: a request body (bytes or str, optionally base64) or an already-parsed request becomes a
`Reply` with an HTTP status and a JSON body, either `{"model", "variant", "predictions"}` or
`{"error": {"type", "message", "field"?, "status"}}`. A bad request is a 4xx with a message saying what was wrong;
anything else is a 500 whose details go to the log, never to the caller. Because every surface calls this module,
they answer the same bad input with the same error.

Stdlib and the runtime only: this module ships in every package.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import queue
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import oip
from .errors import RequestError
from .model import TENSORS, ServingModel
from .processing import json_type
from .tensors import check_shared_dims

MAX_BODY_BYTES = 6 * 1024 * 1024  # Lambda's synchronous payload limit; the edge server's default too
_MB = 1024 * 1024
_SHOWN_KEYS = 5  # unknown keys named in an error; the rest are counted
_SHOWN_KEY_CHARS = 40
_MAX_DIGITS = getattr(sys, "get_int_max_str_digits", lambda: 4300)()  # integers longer than this do not parse

logger = logging.getLogger("edgemaas.service")


class BadRequest(Exception):
    """A request refused before it reaches the model: malformed body, wrong envelope, too large, overloaded."""

    def __init__(self, message: str, field: str | None = None, status: int = 400,
                 kind: str = "InvalidRequest") -> None:
        super().__init__(message)
        self.field = field
        self.status = status
        self.kind = kind


@dataclass
class Reply:
    """What a surface sends back: an HTTP status, the JSON body, and that body serialized (NaN refused).

    The text is made on first use: a direct invoke hands the body dict to its runtime and never needs it.
    """

    status: int
    body: dict[str, Any]
    _text: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict)  # extra HTTP headers (Allow on a 405)

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = json.dumps(self.body, allow_nan=False)
        return self._text

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def error_message(self) -> str | None:
        error = self.body.get("error")
        return error.get("message") if isinstance(error, dict) else None


def error_reply(status: int, message: str, field: str | None = None, kind: str = "InvalidRequest",
                request_id: str | None = None) -> Reply:
    """An error record in the shape every surface answers with."""
    error: dict[str, Any] = {"type": kind, "message": message}
    if request_id is not None:
        error["request_id"] = request_id
    error["status"] = status
    if field:
        error["field"] = field
    body = {"error": error}
    return Reply(status, body, json.dumps(body))


def size_text(limit: int) -> str:
    return f"{limit // _MB} MB" if limit % _MB == 0 else f"{limit} bytes"


def too_large(limit: int) -> BadRequest:
    return BadRequest(f"the request body exceeds {size_text(limit)}", field="body", status=413)


def parse_body(body: Any, base64_encoded: bool = False, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """Body bytes or text (base64 when marked so) -> the parsed JSON request. Size is checked before any decoding."""
    if body is None or (isinstance(body, (str, bytes, bytearray)) and len(body) == 0):
        raise BadRequest('the request body is empty; send JSON like {"inputs": [...]}', field="body")
    if not isinstance(body, (str, bytes, bytearray)):
        raise BadRequest("the request body must be a string", field="body")
    data: str | bytes | bytearray = body
    if base64_encoded:
        if len(body) > max_bytes * 4 // 3 + 4:
            raise too_large(max_bytes)
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest("the body is marked isBase64Encoded but is not valid base64", field="body") from None
    if isinstance(data, str):
        # len(str) <= its UTF-8 size, so this refuses the obviously huge without encoding anything.
        if len(data) > max_bytes or len(data.encode("utf-8", "surrogatepass")) > max_bytes:
            raise too_large(max_bytes)
        text = data
    else:
        if len(data) > max_bytes:
            raise too_large(max_bytes)
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("the request body is not valid UTF-8", field="body") from None
    try:
        return json.loads(text, object_pairs_hook=_object_without_repeats)
    except RecursionError:
        raise BadRequest("the request body is nested too deeply", field="body") from None
    except json.JSONDecodeError as exc:
        what = exc.msg.removesuffix(" at")  # "Invalid control character at"
        raise BadRequest(f"the request body is not valid JSON: {what} at line {exc.lineno} column {exc.colno}",
                         field="body") from None
    except ValueError:  # an integer literal longer than Python's int-parsing limit; its advice is not the caller's
        raise BadRequest(f"the request body is not valid JSON: a number has more than {_MAX_DIGITS} digits",
                         field="body") from None


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when it repeats a key: parsers disagree on which copy wins (first, last, error), so a
    proxy or validator in front of the service could check one value while the model gets the other."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise BadRequest(f"the request body repeats the key {_shown_key(key)}; send each key once",
                                 field="body")
            seen.add(key)
    return result


def _shown_key(key: str) -> str:
    return repr(key if len(key) <= _SHOWN_KEY_CHARS else key[:_SHOWN_KEY_CHARS] + "...")


def request_inputs(request: Any) -> Any:
    """The envelope: a JSON object with exactly one key, "inputs". Returns its value."""
    if not isinstance(request, dict):
        raise BadRequest(f"the request must be a JSON object like {{\"inputs\": [...]}}, got {json_type(request)}")
    if "inputs" not in request:
        raise BadRequest('missing "inputs": send {"inputs": [sample, ...]}', field="inputs")
    unknown = sorted(str(key) for key in request if key != "inputs")
    if unknown:
        shown = ", ".join(_shown_key(key) for key in unknown[:_SHOWN_KEYS])
        more = f" and {len(unknown) - _SHOWN_KEYS} more" if len(unknown) > _SHOWN_KEYS else ""
        raise BadRequest(f"unknown key(s) {shown}{more}; only \"inputs\" is accepted")
    return request["inputs"]


class Service:
    """One model behind the shared contract.

    `models` are replicas of the same model (one interpreter each): a request borrows one for its whole prediction,
    so no interpreter is ever used by two threads at once (LiteRT interpreters are not thread-safe). With one
    replica that is a plain lock (a queue's condition variables cost microseconds a request); the Lambda handler,
    single-threaded, never waits on it.
    """

    def __init__(self, models: ServingModel | Sequence[ServingModel], max_body_bytes: int = MAX_BODY_BYTES,
                 borrow_timeout_s: float | None = 30.0) -> None:
        replicas = [models] if isinstance(models, ServingModel) else list(models)
        if not replicas:
            raise ValueError("a service needs at least one model")
        self.model = replicas[0]
        self.replicas = len(replicas)
        self.max_body_bytes = max_body_bytes
        self.borrow_timeout_s = borrow_timeout_s
        self._name, self._variant = self.model.name, self.model.manifest.variant
        self._lock = threading.Lock() if len(replicas) == 1 else None
        self._pool: queue.LifoQueue[ServingModel] = queue.LifoQueue()
        for replica in replicas if self._lock is None else []:
            self._pool.put(replica)

    def describe(self) -> dict[str, Any]:
        return self.model.describe()

    def health(self) -> dict[str, Any]:
        manifest = self.model.manifest
        return {"status": "ok", "model": manifest.name, "variant": manifest.variant, "sha256": manifest.model.sha256,
                "backend": self.model.backend.name}

    def describe_reply(self) -> Reply:
        description = self.describe()
        return Reply(200, description, json.dumps(description))

    def health_reply(self) -> Reply:
        health = self.health()
        return Reply(200, health, json.dumps(health))

    def handle_body(self, body: Any, base64_encoded: bool = False, request_id: str | None = None) -> Reply:
        """A raw HTTP-style body -> a Reply."""
        try:
            request = parse_body(body, base64_encoded, self.max_body_bytes)
        except BadRequest as exc:
            return self._rejected(exc, request_id)
        return self.handle_request(request, request_id)

    def handle_request(self, request: Any, request_id: str | None = None, serialize: bool = True) -> Reply:
        """An already-parsed request (a direct invoke's event) -> a Reply.

        `serialize=False` leaves the reply's text to be made on first use, for a caller that sends the body dict
        itself (the Lambda handler's direct invokes); otherwise a body JSON cannot carry is a 500 here.
        """
        if oip.is_oip_request(request):
            return self._guarded(lambda: self.infer_oip(request), request_id, serialize)
        return self._guarded(lambda: self.predict(request_inputs(request)), request_id, serialize)

    def predict(self, inputs: Any) -> dict[str, Any]:
        """Validated predictions for `inputs`; raises RequestError (a 400) for a request the model cannot serve.

        An object of named tensors, for a model that takes them, gets every output by name instead."""
        tensors = isinstance(inputs, dict) and TENSORS in self.model.forms
        model = self._borrow()
        try:
            if tensors:
                return {"model": self._name, "variant": self._variant, "outputs": model.predict_tensors(inputs)}
            predictions = model.predict(inputs)
        finally:
            self._give_back(model)
        return {"model": self._name, "variant": self._variant, "predictions": predictions}

    def infer_oip(self, request: Any, blob: bytes = b"") -> dict[str, Any]:
        """An Open Inference Protocol request -> its response body (every output, or those asked for). `blob`: the
        tensor bytes after a binary-extension body's JSON header."""
        model = self.model
        arrays, wanted, request_id = oip.parse_request(request, model.tensor_inputs, model.tensor_outputs,
                                                       model.max_input_elements, blob)
        check_shared_dims(model.tensor_inputs, arrays, "inputs")
        model = self._borrow()
        try:
            outputs = model.run_tensors(arrays)
        finally:
            self._give_back(model)
        return oip.response(self._name, list(zip(model.tensor_outputs, outputs)), wanted, request_id)

    # -- routes: every surface (edge server, Lambda HTTP events) sends every request here -----------------------

    def accepts_body(self, method: str, path: str) -> bool:
        """Whether `dispatch` reads a body for this method and path (a server reads it only then)."""
        route = self._route(path)
        return (method.upper() == "POST" and route is not None and route[0] in ("root", "predict", "infer")
                and route[1] in (None, self._name))

    def dispatch(self, method: str, path: str, body: bytes | str | None, is_base64: bool = False,
                 request_id: str | None = None) -> Reply:
        """One HTTP request -> its Reply: the routes, 404 and 405 in our error shape. `path` without the query."""
        method = method.upper()
        route = self._route(path)
        if route is None:
            return error_reply(404, f"no such endpoint {_clip(path)!r}; use GET /health, GET / or POST /predict, or "
                                    f"the Open Inference Protocol under /v2 (POST /v2/models/{self._name}/infer)",
                               kind="NotFound")
        kind, model_name = route
        if model_name is not None and model_name != self._name:
            return error_reply(404, f"no model named {_clip(model_name)!r}; this server serves {self._name!r}",
                               kind="NotFound")
        allowed = _ALLOWED[kind]
        if method == "HEAD" and "GET" in allowed:
            method = "GET"
        if method not in allowed:
            if method not in ("GET", "POST"):
                allowed = ("GET", "POST")  # a method no route takes: name the ones the server has
            reply = error_reply(405, f"method {_clip(method)} is not allowed on {_clip(path)!r}; use "
                                     f"{', '.join(allowed)}", kind="MethodNotAllowed")
            reply.headers["Allow"] = ", ".join(allowed)
            return reply
        if kind == "root" and method == "GET":
            return self.describe_reply()
        if kind in ("root", "predict", "infer"):
            blob = b""
            try:
                request = parse_body(body, is_base64, self.max_body_bytes)
            except BadRequest as exc:
                parts = self._binary_parts(body, is_base64) if kind == "infer" and exc.status != 413 else None
                if parts is None:
                    return self._rejected(exc, request_id)
                try:
                    request, blob = parse_body(parts[0], False, self.max_body_bytes), parts[1]
                except BadRequest as header_exc:
                    return self._rejected(header_exc, request_id)
            if kind == "infer":
                return self._guarded(lambda: self.infer_oip(request, blob), request_id)
            return self.handle_request(request, request_id)
        if kind == "health":
            return self.health_reply()
        return _json_reply(self._v2_body(kind))

    def _v2_body(self, kind: str) -> dict[str, Any]:
        model = self.model
        if kind == "server":
            return {"name": "edgemaas", "version": _version(), "extensions": []}
        if kind in ("live", "ready"):
            return {kind: True}
        if kind == "model_ready":
            return {"name": self._name, "ready": True}
        return oip.model_metadata(self._name, model.manifest.model.format, model.tensor_inputs, model.tensor_outputs)

    def _route(self, path: str) -> tuple[str, str | None] | None:
        """(route kind, model name named in the path or None), or None for no such endpoint."""
        if path == "/":
            return "root", None
        if path == "/predict":
            return "predict", None
        if path == "/health":
            return "health", None
        parts = path.strip("/").split("/")
        if parts[0] != "v2" or path.endswith("//"):
            return None
        rest = parts[1:]
        if rest in ([], [""]):
            return "server", None
        if rest in (["health", "live"], ["health", "ready"]):
            return rest[1], None
        if len(rest) < 2 or rest[0] != "models" or not rest[1]:
            return None
        name, tail = rest[1], rest[2:]
        if len(tail) >= 2 and tail[0] == "versions":
            if tail[1] != oip.MODEL_VERSION:
                return None
            tail = tail[2:]
        kinds = {(): "metadata", ("ready",): "model_ready", ("infer",): "infer"}
        kind = kinds.get(tuple(tail))
        return (kind, name) if kind else None

    def _guarded(self, work: Any, request_id: str | None, serialize: bool = True) -> Reply:
        """`work()`'s body as a 200, a 4xx for a request it refused, a 500 (details logged) for anything else."""
        try:
            reply = Reply(200, work())
            if serialize:
                reply.text  # noqa: B018 (made now, inside the guard: a NaN output is a 400, not a crash later)
            return reply
        except (BadRequest, RequestError) as exc:
            return self._rejected(exc, request_id)
        except Exception:  # the contract: never let a request escape as an unhandled exception
            logger.exception("internal error serving request %s", request_id)
            return error_reply(500, "internal error; see the service's logs", kind="InternalError",
                               request_id=request_id)

    def _binary_parts(self, body: Any, is_base64: bool) -> tuple[bytes, bytes] | None:
        """(JSON header, tensor bytes) of a body in Triton's binary-data extension, else None. Called only after the
        body was refused as JSON for a reason other than its size, so it is within the limit."""
        try:
            if is_base64 and isinstance(body, (str, bytes, bytearray)):
                body = base64.b64decode(body, validate=True)  # takes ASCII text or bytes
            elif isinstance(body, str):
                body = body.encode("utf-8")
        except (binascii.Error, ValueError):  # UnicodeEncodeError is a ValueError
            return None
        if not isinstance(body, (bytes, bytearray)) or b"binary_data_size" not in body[:1 << 20]:
            return None
        return oip.split_binary(bytes(body))

    def _borrow(self) -> ServingModel:
        timeout = self.borrow_timeout_s
        if self._lock is not None:
            if self._lock.acquire(timeout=-1 if timeout is None else timeout):
                return self.model
        else:
            try:
                return self._pool.get(timeout=timeout)
            except queue.Empty:
                pass
        raise BadRequest("the server is busy; retry shortly", status=503, kind="Overloaded")

    def _give_back(self, model: ServingModel) -> None:
        if self._lock is not None:
            self._lock.release()
        else:
            self._pool.put(model)

    def _rejected(self, exc: BadRequest | RequestError, request_id: str | None) -> Reply:
        """The error reply for a refused request (RequestError subclasses may carry their own status: 413)."""
        status = getattr(exc, "status", 400)
        kind = getattr(exc, "kind", "InvalidRequest")
        logger.info("rejected request %s: %s", request_id, exc)
        return error_reply(status, str(exc), field=getattr(exc, "field", None), kind=kind)


_ALLOWED = {"root": ("GET", "POST"), "predict": ("POST",), "health": ("GET",), "server": ("GET",), "live": ("GET",),
            "ready": ("GET",), "model_ready": ("GET",), "metadata": ("GET",), "infer": ("POST",)}


def _json_reply(body: dict[str, Any]) -> Reply:
    return Reply(200, body, json.dumps(body))


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@functools.lru_cache(maxsize=1)
def _version() -> str:
    try:
        from importlib.metadata import version

        return version("edgemaas")
    except Exception:  # a Lambda zip or edge bundle ships the runtime without the package's metadata
        return "unknown"
