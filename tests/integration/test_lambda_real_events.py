"""Lambda as it really is (issue 17): direct invokes reach the function as bytes, through the real runtime client.

Lambda does not hand the handler a Python object parsed by the caller: its runtime client (awslambdaric, here in a
clean `python -S -s` process fed by our local Runtime API) gets the event's bytes and parses them itself, with
simplejson. So these tests send bytes through `invoke_local` and the `edgemaas invoke --local` CLI:

- the direct-invoke mistakes of test_bad_requests.py get the handler's 400 through the runtime client too;
- what Lambda refuses before the handler runs (NaN, integers over 4300 digits, nesting deeper than Python's recursion
  limit, bytes that are not UTF-8 JSON) comes back as Runtime.UnmarshalError, and a repeated key is merged silently
  (the last one wins), which is why the CLI refuses it;
- Lambda's 6 MB request (6,291,456 bytes) and response limits hold locally;
- the CLI answers `Error: ...` (exit 1, no traceback) for those events and exits 1 when an HTTP event gets a 4xx.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from edgemaas.local import InvokeResult, LocalLambdaError, invoke_local
from edgemaas.local.runtime_api import MAX_REQUEST_BYTES, MAX_RESPONSE_BYTES
from edgemaas.workspace import Workspace
from tests.conftest import REPO
from tests.functional.test_handler import http_v2
from tests.integration.test_bad_requests import BAD_BODIES, IMAGE, Bad

pytestmark = pytest.mark.models("cnn", "nlp", "linear")  # the built-ins `trained` holds here

MB = 1024 * 1024
DEEP_LIST = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
DEEP_OBJECT = b'{"a": ' * 50_000 + b"1" + b"}" * 50_000
BIG_INT = b'{"inputs": [' + b"1" + b"0" * 5000 + b"]}"
NOT_UTF8 = '{"inputs": ["café au lait"]}'.encode("latin-1")

# A function that shows what it was given, or answers with exactly the size or status asked for.
ECHO = '''\
import json


def handler(event, context):
    if isinstance(event, dict) and "answer_bytes" in event:
        return "x" * (event["answer_bytes"] - 2)  # a JSON string: two quotes around it
    if isinstance(event, dict) and "pad" in event:
        return {"received_chars": len(event["pad"])}
    print("handler ran")
    return {"event": event}
'''


@pytest.fixture(scope="module")
def echo_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("echo") / "function.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("handler.py", ECHO)
    return path


@pytest.fixture(scope="module")
def packages(trained: Workspace) -> dict[str, Path]:
    """The gate-chosen variant of cnn, nlp and linear packaged as Lambda zips (the shipped handler)."""
    from edgemaas.packaging.awslambda.lambda_zip import package_lambda
    from edgemaas.pipeline import chosen_variant

    return {name: Path(package_lambda(chosen_variant(trained, name), trained.lambda_dir(name),
                                      trained.cache()).zip_path) for name in ("cnn", "nlp", "linear")}


def invoke(package: Path, events: list[bytes]) -> list[InvokeResult]:
    return invoke_local(package, events, timeout_s=60)


def edgemaas(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in its own process, so a traceback would show in its output."""
    return subprocess.run([sys.executable, "-m", "edgemaas.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The CLI's last line, after checking it failed cleanly (the runtime's own log of an UnmarshalError says
    'Traceback (most recent call last):' with an empty stack; a Python traceback has File lines)."""
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-2000:]
    assert not re.search(r"Traceback \(most recent call last\):\s+File ", output), output[-2000:]
    return output.strip().splitlines()[-1]


# ---------------------------------------------------------------------------------------------------------------
# The direct-invoke rows of the bad-request table, through the runtime client


# Rows whose JSON the runtime client's parser (simplejson) refuses: the handler never sees them (tested below).
REFUSED_BY_LAMBDA = {"nan-literal", "infinity-literal"}
DIRECT_ROWS = [param for param in BAD_BODIES if not param.values[0].in_bytes and param.id not in REFUSED_BY_LAMBDA]
DIRECT_MISTAKES = [  # test_bad_requests.test_direct_invoke_mistakes, as bytes
    pytest.param(Bad("cnn", json.dumps([{"inputs": [IMAGE]}]).encode(), 400, "got a list"), id="direct-list"),
    pytest.param(Bad("cnn", json.dumps('{"inputs": []}').encode(), 400, "got a string"),
                 id="direct-json-in-a-string"),
    pytest.param(Bad("cnn", b"7", 400, "got a number"), id="direct-number"),
    pytest.param(Bad("cnn", b"null", 400, "got null"), id="direct-null"),
    pytest.param(Bad("cnn", json.dumps({"requestContext": {"http": {"method": "POST"}}}).encode(), 400,
                     'missing "inputs"', "inputs"), id="direct-half-an-http-event"),
]


@pytest.fixture(scope="module")
def direct_replies(packages: dict[str, Path]) -> dict[bytes, InvokeResult]:
    """Every direct-invoke row sent once, each model's rows to one warm runtime process."""
    replies: dict[bytes, InvokeResult] = {}
    for model, package in packages.items():
        bodies = [p.values[0].body for p in DIRECT_ROWS + DIRECT_MISTAKES if p.values[0].model == model]
        replies.update(zip(bodies, invoke(package, bodies)))
    return replies


@pytest.mark.parametrize("case", DIRECT_ROWS + DIRECT_MISTAKES)
def test_direct_invoke_mistake_gets_the_handlers_400_through_the_runtime_client(
        case: Bad, direct_replies: dict[bytes, InvokeResult]) -> None:
    result = direct_replies[case.body]
    assert result.function_error is None, result.error_message
    assert isinstance(result.payload, dict) and set(result.payload) == {"error"}, str(result.payload)[:300]
    error = result.payload["error"]
    assert error["status"] == case.status and error["type"] == "InvalidRequest", error
    assert case.fragment in error["message"], error["message"]
    assert error.get("field") == case.field, error


# ---------------------------------------------------------------------------------------------------------------
# What Lambda refuses before the handler runs, and what the caller sees then


UNMARSHAL = [
    pytest.param(b'{"inputs": [[0, NaN]]}', "Expecting value: line 1 column 17 (char 16)", id="nan"),
    pytest.param(b'{"inputs": [[0, Infinity]]}', "Expecting value: line 1 column 17 (char 16)", id="infinity"),
    *[pytest.param(param.values[0].body, "Expecting value: line 1 column", id=f"table-{param.id}")
      for param in BAD_BODIES if param.id in REFUSED_BY_LAMBDA],
    pytest.param(BIG_INT, "Exceeds the limit (4300 digits) for integer string conversion", id="integer-5001-digits"),
    pytest.param(DEEP_LIST, "maximum recursion depth exceeded", id="deep-nesting-lists"),
    pytest.param(DEEP_OBJECT, "maximum recursion depth exceeded", id="deep-nesting-objects"),
    pytest.param(NOT_UTF8, "'utf-8' codec can't decode byte 0xe9", id="not-utf8"),
    pytest.param(b'{"inputs": [[1, 2', "Expecting ',' delimiter or ']'", id="malformed-json"),
    pytest.param(b"", "Expecting value: line 1 column 1 (char 0)", id="empty"),
]


@pytest.fixture(scope="module")
def unmarshal_replies(packages: dict[str, Path]) -> dict[bytes, InvokeResult]:
    bodies = [p.values[0] for p in UNMARSHAL]
    return dict(zip(bodies, invoke(packages["cnn"], bodies)))


def test_the_table_rows_lambda_refuses_exist() -> None:
    assert REFUSED_BY_LAMBDA <= {param.id for param in BAD_BODIES}


@pytest.mark.parametrize("body, fragment", UNMARSHAL)
def test_lambda_refuses_before_the_handler(body: bytes, fragment: str,
                                           unmarshal_replies: dict[bytes, InvokeResult]) -> None:
    result = unmarshal_replies[body]
    assert result.function_error == "Unhandled", result.payload
    assert result.payload["errorType"] == "Runtime.UnmarshalError", result.payload
    assert result.payload["errorMessage"].startswith("Unable to unmarshal input: "), result.payload
    assert fragment in result.payload["errorMessage"], result.payload
    assert result.error_message == f"Runtime.UnmarshalError: {result.payload['errorMessage']}"


def test_the_runtime_client_parses_what_the_handler_gets(echo_zip: Path) -> None:
    # The same checks with a function that prints when it runs: it never does for a refused event; a repeated key
    # reaches it merged (the last one wins); 1e400 reaches it as inf; a UTF-8 BOM is dropped.
    refused, merged, huge, bom = invoke(echo_zip, [BIG_INT, b'{"a": [], "a": [1]}', b'{"a": 1e400}',
                                                   b'\xef\xbb\xbf{"a": 1}'])
    assert refused.payload["errorType"] == "Runtime.UnmarshalError" and "handler ran" not in refused.logs
    assert merged.payload == {"event": {"a": [1]}} and "handler ran" in merged.logs
    assert huge.payload == {"event": {"a": float("inf")}}
    assert bom.payload == {"event": {"a": 1}}


def test_repeated_key_reaches_the_real_handler_merged(packages: dict[str, Path]) -> None:
    (result,) = invoke(packages["cnn"], [b'{"inputs": [], "inputs": ' + json.dumps([IMAGE]).encode() + b"}"])
    assert result.function_error is None, result.error_message
    assert len(result.payload["predictions"]) == 1  # the empty batch (a 400 on its own) was dropped, silently


# ---------------------------------------------------------------------------------------------------------------
# Lambda's 6 MB limits


def test_request_over_6mb_is_refused_like_lambda(echo_zip: Path) -> None:
    frame = len(b'{"pad": ""}')
    at_limit = b'{"pad": "' + b"x" * (MAX_REQUEST_BYTES - frame) + b'"}'
    assert MAX_REQUEST_BYTES == 6_291_456 == len(at_limit)
    (result,) = invoke(echo_zip, [at_limit])
    assert result.payload == {"received_chars": MAX_REQUEST_BYTES - frame}
    over = b'{"pad": "' + b"x" * int(8.2 * MB) + b'"}'
    with pytest.raises(LocalLambdaError, match=r"event #1 is 8598334 bytes; Lambda refuses synchronous invoke "
                                               r"requests over 6291456 bytes \(RequestTooLargeException"):
        invoke(echo_zip, [at_limit, over])
    with pytest.raises(LocalLambdaError, match="event #0 is 6291457 bytes"):
        invoke(echo_zip, [at_limit + b" "])


def test_response_over_the_limit_is_refused_like_lambda(echo_zip: Path) -> None:
    at_limit, over = invoke(echo_zip, [json.dumps({"answer_bytes": n}).encode()
                                       for n in (MAX_RESPONSE_BYTES, MAX_RESPONSE_BYTES + 1)])
    assert at_limit.function_error is None and len(at_limit.payload) == MAX_RESPONSE_BYTES - 2
    assert over.function_error == "Unhandled"
    assert over.error_message == ("Function.ResponseSizeTooLarge: Response payload size exceeded maximum allowed "
                                  "payload size (6291556 bytes).")


# ---------------------------------------------------------------------------------------------------------------
# The CLI: `Error: ...` lines, exit 1


@pytest.mark.parametrize("body, message", [
    pytest.param(DEEP_LIST, "Error: function error (Unhandled): Runtime.UnmarshalError: Unable to unmarshal input: "
                            "maximum recursion depth exceeded", id="deep-nesting"),
    pytest.param(BIG_INT, "Error: function error (Unhandled): Runtime.UnmarshalError: Unable to unmarshal input: "
                          "Exceeds the limit (4300 digits)", id="integer-5001-digits"),
    pytest.param(NOT_UTF8, "Error: {file}: the event is not UTF-8 (byte 0xe9 at offset 16); Lambda takes the event "
                           "as UTF-8 JSON", id="not-utf8"),
    pytest.param(b'{"inputs": [], "inputs": [1]}', "Error: {file}: the event repeats the key 'inputs'; Lambda's "
                 "runtime would keep only the last one, silently: send each key once", id="repeated-key"),
    pytest.param(b'{"pad": "' + b"x" * int(8.2 * MB) + b'"}', "Error: {file}: the event is 8,598,334 bytes; Lambda "
                 "refuses synchronous invokes over 6,291,456 bytes (6 MB, RequestTooLargeException)",
                 id="event-over-6mb"),
    pytest.param(b'{"answer_bytes": 6291557}', "Error: function error (Unhandled): Function.ResponseSizeTooLarge: "
                 "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
                 id="response-over-the-limit"),
])
def test_cli_local_invoke_of_a_refused_event_is_an_error_line(echo_zip: Path, tmp_path: Path, body: bytes,
                                                             message: str) -> None:
    event = tmp_path / "event.json"
    event.write_bytes(body)
    line = error_line(edgemaas("invoke", str(echo_zip), "--local", "--data-file", str(event)))
    assert line.startswith(message.format(file=event)), line


def test_cli_remote_invoke_of_an_unparsable_event_is_an_error_line(echo_zip: Path, tmp_path: Path) -> None:
    # Refused before any AWS call (the remote invoke sends the parsed event, which Python cannot parse).
    event = tmp_path / "event.json"
    event.write_bytes(DEEP_LIST)
    line = error_line(edgemaas("invoke", str(echo_zip), "--data-file", str(event)))
    assert line == (f"Error: {event}: the event is nested too deeply for Python's JSON parser; Lambda's Python "
                    "runtime would refuse it too (Runtime.UnmarshalError) before the handler runs")


@pytest.mark.parametrize("event, message", [
    pytest.param(http_v2(json.dumps({"inputs": [IMAGE[:3]]})), "Error: the function answered HTTP 400: inputs[0]: "
                 "expected a list of length 8, got length 3", id="http-v2-400"),
    pytest.param(http_v2('{"inputs": [], "inputs": []}'), "Error: the function answered HTTP 400: the request body "
                 "repeats the key 'inputs'", id="http-v2-repeated-key"),
])
def test_cli_exits_1_when_an_http_event_gets_a_4xx(packages: dict[str, Path], tmp_path: Path,
                                                   event: dict[str, Any], message: str) -> None:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    done = edgemaas("invoke", str(packages["cnn"]), "--local", "--data-file", str(path))
    assert '"statusCode": 400' in done.stdout, done.stdout[-2000:]
    line = error_line(done)
    assert line.startswith(message), line
