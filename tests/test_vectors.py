"""The wire-format test vectors (tests/vectors/, described in docs/wire-format.md), run under both
JSON backends: orjson in this process, the standard library in a subprocess where orjson cannot
be imported. Both must pass every vector and give identical results.

Each valid case is parsed from its exact bytes and compared field by field (types included: 1 is
not 1.0), re-encoded and compared byte for byte with its canonical form, and made again with
``distro.message`` from the expected fields. Each invalid case must raise MessageError. Where node
is installed, the ``javascript`` field of each valid case is checked against JSON.stringify.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from strategies import assert_same_json

import distro_core as distro
from distro_core import _codec

VECTORS = Path(__file__).parent / "vectors"


def load(kind: str) -> list[dict[str, Any]]:
    """Every case of one kind (``valid`` or ``invalid``), each with its file's name added."""
    cases = []
    for path in sorted((VECTORS / kind).glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        for case in document["cases"]:
            cases.append({**case, "file": f"{kind}/{path.name}"})
    return cases


def input_bytes(case: dict[str, Any]) -> bytes:
    """The exact bytes a case feeds to the parser."""
    if "input_hex" in case:
        return bytes.fromhex(case["input_hex"])
    data: bytes = case["input"].encode("utf-8")
    return data


VALID = load("valid")
INVALID = load("invalid")


def _id(case: dict[str, Any]) -> str:
    return f"{case['file'].split('/')[1][:-5]}:{case['name']}"


# -- the vector files themselves --------------------------------------------------------------


def test_the_vector_files_are_well_formed() -> None:
    assert len(VALID) >= 40 and len(INVALID) >= 60
    names = [_id(case) for case in VALID + INVALID]
    assert len(set(names)) == len(names), "case names repeat within a file"
    for case in VALID:
        assert set(case) == {
            *("file", "name", "description", "input", "id", "headers"),
            *("payload", "canonical", "javascript"),
        }, case["name"]
    for case in INVALID:
        assert {"name", "reason"} <= set(case), case["name"]
        assert ("input" in case) != ("input_hex" in case), case["name"]
        assert set(case) <= {"file", "name", "reason", "input", "input_hex"}, case["name"]


# -- the checks, shared by both backends ------------------------------------------------------


def check_valid(case: dict[str, Any]) -> None:
    """Assert that one valid case parses, compares and re-encodes as it says."""
    data = input_bytes(case)
    canonical = case["canonical"].encode("utf-8")
    for given in (data, data.decode("utf-8")):
        msg = distro.parse(given)
        assert msg.id == case["id"]
        assert_same_json(msg.headers, case["headers"], "headers")
        assert_same_json(msg.payload, case["payload"], "payload")
        assert msg.to_bytes() == canonical
        assert msg.to_string() == case["canonical"]
    again = distro.parse(canonical)
    assert again == msg
    assert again.to_bytes() == canonical
    made = distro.message(case["headers"], case["payload"], id=case["id"])
    assert made == msg
    assert made.to_bytes() == canonical
    # Whatever the JavaScript original writes for this message, this side reads.
    from_javascript = distro.parse(case["javascript"].encode("utf-8"))
    assert from_javascript.id == case["id"]
    assert from_javascript.uri == case["headers"]["uri"]


def check_invalid(case: dict[str, Any]) -> None:
    """Assert that one invalid case is refused with MessageError, as bytes and as text."""
    data = input_bytes(case)
    with pytest.raises(distro.MessageError):
        distro.parse(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return
    with pytest.raises(distro.MessageError):
        distro.parse(text)


def outcomes() -> list[list[str]]:
    """What this process makes of every vector, with types and bytes spelled out, for comparing
    two processes (or two backends) exactly."""
    results = []
    for case in VALID + INVALID:
        try:
            msg = distro.parse(input_bytes(case))
        except distro.MessageError:
            results.append([_id(case), "MessageError"])
            continue
        except Exception as exc:
            results.append([_id(case), f"unexpected {type(exc).__name__}: {exc}"])
            continue
        fields = repr((msg.id, msg.headers, msg.payload))
        results.append([_id(case), fields, msg.to_bytes().hex(), msg.to_string()])
    return results


# -- under orjson, in this process ------------------------------------------------------------


@pytest.mark.parametrize("case", VALID, ids=_id)
def test_valid(case: dict[str, Any]) -> None:
    check_valid(case)


@pytest.mark.parametrize("case", INVALID, ids=_id)
def test_invalid(case: dict[str, Any]) -> None:
    check_invalid(case)


@pytest.mark.parametrize("case", VALID + INVALID, ids=_id)
def test_the_codec_backends_agree(case: dict[str, Any]) -> None:
    data = input_bytes(case)
    try:
        value = _codec.loads(data)
    except _codec.CodecError:
        with pytest.raises(_codec.CodecError):
            _codec.stdlib_loads(data)
        return
    assert_same_json(_codec.stdlib_loads(data), value)
    assert _codec.dumps(value) == _codec.stdlib_dumps(value)


# -- under the standard library, in a subprocess ----------------------------------------------

_WITHOUT_ORJSON = r"""
import json, sys
sys.modules["orjson"] = None  # makes "import orjson" fail, as if it were not installed
sys.path.insert(0, sys.argv[1])
from distro_core import _codec
assert _codec.BACKEND == "json", _codec.BACKEND
import test_vectors as v
for case in v.VALID:
    v.check_valid(case)
for case in v.INVALID:
    v.check_invalid(case)
print(json.dumps({"backend": _codec.BACKEND, "outcomes": v.outcomes()}))
"""


def test_without_orjson_the_vectors_pass_with_identical_results() -> None:
    pytest.importorskip("orjson")
    assert _codec.BACKEND == "orjson"
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_ORJSON, str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout)
    assert report["backend"] == "json"
    mine = outcomes()
    assert not [row for row in mine if row[1].startswith("unexpected")]
    assert report["outcomes"] == mine


# -- against JavaScript -----------------------------------------------------------------------

_STRINGIFY = """
const inputs = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = inputs.map((text) => {
  const o = JSON.parse(text);
  return JSON.stringify({ id: o.id, headers: o.headers, payload: o.payload });
});
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_javascript_fields_are_what_json_stringify_writes() -> None:
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(
        [node, "-e", _STRINGIFY],
        input=json.dumps([case["input"] for case in VALID]),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=True,
    )
    written = json.loads(result.stdout)
    assert written == [case["javascript"] for case in VALID]
    # For messages without floats, big integers or a missing payload, the original wrote the
    # canonical bytes exactly: distro is byte-compatible with it.
    same = [case["name"] for case in VALID if case["javascript"] == case["canonical"]]
    assert len(same) >= 35


# -- confirmed sends (valid/confirm.json): what distro writes and how its server reads them -----

CONFIRM = {case["name"]: case for case in VALID if case["file"] == "valid/confirm.json"}


def test_the_confirmed_request_vectors_are_what_a_distro_client_writes() -> None:
    from distro_core import _protocol

    assert len(CONFIRM) == 6
    for name in ("confirmed-request", "confirmed-request-tcp"):
        case = CONFIRM[name]
        own = {k: v for k, v in case["headers"].items() if k in ("uri", "verb")}
        msg = distro.message(own, case["payload"], id=case["id"])
        written = _protocol.as_request(msg, case["headers"]["replyTo"], 5.0, confirm=True)
        assert written == case["canonical"].encode("utf-8"), name


def test_the_closing_reply_vectors_are_what_a_distro_server_writes() -> None:
    from distro_core import _protocol, _replies

    request = distro.parse(CONFIRM["confirmed-request"]["canonical"])
    full, compact = CONFIRM["error-reply-closing"], CONFIRM["error-reply-closing-compact"]
    assert full["headers"]["error"] == _replies._CLOSING
    data = _protocol.error_reply(request, _replies._CLOSING, _protocol.CLOSING)
    assert data is not None
    written = distro.parse(data)
    assert (written.headers, written.payload) == (full["headers"], full["payload"])
    # Cut to fit the compact vector's size, it is the vector but for its random 8-character id.
    limit = len(compact["input"].encode("utf-8"))
    cut = _protocol.error_reply(request, _replies._CLOSING, _protocol.CLOSING, limit)
    assert cut is not None and len(cut) == limit
    assert distro.parse(cut).headers == compact["headers"]
    assert cut.replace(cut[7:15], compact["id"].encode("ascii")) == compact["input"].encode()


async def test_a_distro_server_handles_the_confirmed_vector_once_and_the_others_each_time() -> None:
    from distro_core import transport as kit

    class Peer(kit.Peer):
        def __init__(self) -> None:
            super().__init__("127.0.0.1")
            self.replies: list[bytes] = []

        def send(self, data: bytes, reply_to: str) -> None:
            self.replies.append(data)

    factory = distro.create("memory")
    server = factory.server(port=0)
    calls: list[str] = []
    server.post("/orders", lambda msg: calls.append(msg.headers["replyTo"]))
    await server.start()
    try:
        peer = Peer()
        for name in ("confirmed-request", "confirmed-request", "request-confirm-false") * 2:
            server.frame_received(CONFIRM[name]["input"].encode("utf-8"), peer)
    finally:
        await server.aclose()
    assert calls == ["udp4:127.0.0.1:53211", "tcp", "tcp"]
    assert server.stats.repeats == 3
    replies = peer.replies
    assert len(replies) == 6 and len(set(replies)) == 3
    assert replies[0] == replies[1] == replies[3] == replies[4]  # the repeats: the same bytes
    first = distro.parse(replies[0])
    assert first.headers == CONFIRM["confirmation"]["headers"] and first.payload is None


# -- structured errors and reply headers (valid/errors.json) -----------------------------------

ERRORS = {case["name"]: case for case in VALID if case["file"] == "valid/errors.json"}
_REQUEST = distro.message(
    {"uri": "/customer/7", "verb": "GET", "replyTo": "tcp"},
    id="9b2e4c1a-3f6d-4e8b-a1c2-7d5e9f0b3a64",
)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("error-reply-reject", ("out_of_stock", "sku 7 is sold out", {"sku": 7})),
        (
            "error-reply-internal",
            ("handler_error", f"internal error (message {_REQUEST.id})", None),
        ),
        (
            "error-reply-invalid-payload",
            (
                "invalid_payload",
                "the payload is not a valid Order: qty: Expected `int`, got `str`",
                {
                    "type": "Order",
                    "errors": [{"field": "qty", "error": "Expected `int`, got `str`"}],
                },
            ),
        ),
    ],
)
def test_the_error_vectors_are_what_a_distro_server_writes(
    name: str, problem: tuple[str, str, Any]
) -> None:
    from distro_core import _protocol

    case = ERRORS[name]
    data = _protocol.answer(_REQUEST, None, _protocol.Problem(*problem), True, None, "tcp")
    assert data is not None
    assert data.replace(data[7:43], case["id"].encode()) == case["canonical"].encode("utf-8")


@pytest.mark.parametrize(
    ("name", "code", "message", "details"),
    [
        ("error-reply-reject", "out_of_stock", "sku 7 is sold out", {"sku": 7}),
        ("error-reply-error-object", "out_of_stock", "sku 7 is sold out", {"sku": 7}),
        ("error-reply-malformed", None, '["E42",{"retry":true}]', None),
        ("error-reply-handler-error", "handler_error", "KeyError: 'x'", None),  # protocol.json
    ],
)
def test_a_distro_client_reads_the_error_vectors_as_remote_errors(
    name: str, code: str | None, message: str, details: Any
) -> None:
    from distro_core import _protocol

    case = ERRORS.get(name) or next(c for c in VALID if c["name"] == name)
    outcome = _protocol.reply_outcome(distro.parse(case["input"]))
    assert outcome is not None
    request_id, payload, error = outcome
    assert request_id == _REQUEST.id and payload is None and error is not None
    assert (error.code, error.remote, error.details) == (code, message, details)


def test_the_reply_header_vector_is_what_a_distro_server_writes() -> None:
    from distro_core import _protocol

    case = ERRORS["reply-with-headers"]
    answer = distro.Reply({"rows": 3}, headers={"cache": "60s", "version": 2})
    data = _protocol.reply(_REQUEST, answer)
    assert data.replace(data[7:43], case["id"].encode()) == case["canonical"].encode("utf-8")
    outcome = _protocol.reply_outcome(distro.parse(case["input"]))
    assert outcome == (_REQUEST.id, {"rows": 3}, None)
