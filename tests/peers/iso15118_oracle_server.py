"""EXI oracle server: the `iso15118` package's EXIficient codec behind a JSON-lines pipe.

Runs inside the peer venv made by :mod:`tests.peers.iso15118_peer` (never in the project's venv: the
package pins pydantic 1 and starts a JVM through py4j). It uses the codec's raw JSON interface only, not
the package's message classes (test-peers.md: several of those drop or misname fields).

Protocol: one JSON object per line on stdin, one answer per line on stdout, in order.

    {"id": 1, "op": "encode", "ns": "<namespace>", "json": {...}}  ->  {"id": 1, "hex": "8098..."}
    {"id": 2, "op": "decode", "ns": "<namespace>", "hex": "8098..."} ->  {"id": 2, "json": {...}}
    anything that fails                                             ->  {"id": ..., "error": "<text>"}

The first line the server prints is `{"ready": true, "version": "<EXIficient codec version>"}`, or
`{"error": ...}` when the codec cannot start (then it exits with status 1). Stray output of the package
(its logging config may print) is sent to stderr so that stdout carries nothing but answers.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO


def _protocol_stream() -> TextIO:
    # Keep the real stdout for answers and point file descriptor 1 at stderr, so a print() anywhere in
    # the package or py4j cannot corrupt the answer stream.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


def _answer(out: TextIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message, separators=(",", ":")) + "\n")
    out.flush()


def _handle(codec: Any, request: Any) -> dict[str, Any]:
    if not isinstance(request, dict):
        return {"error": "request is not a JSON object"}
    answer: dict[str, Any] = {"id": request.get("id")}
    op, ns = request.get("op"), request.get("ns")
    if not isinstance(ns, str):
        answer["error"] = "request has no namespace string 'ns'"
        return answer
    try:
        if op == "encode":
            tree = request.get("json")
            if not isinstance(tree, dict):
                answer["error"] = "encode needs a JSON object in 'json'"
                return answer
            answer["hex"] = bytes(codec.encode(json.dumps(tree), ns)).hex()
        elif op == "decode":
            text = request.get("hex")
            if not isinstance(text, str):
                answer["error"] = "decode needs a hex string in 'hex'"
                return answer
            answer["json"] = json.loads(codec.decode(bytes.fromhex(text), ns))
        else:
            answer["error"] = f"unknown op {op!r} (expected 'encode' or 'decode')"
    except Exception as exc:  # the Java side's error text is the answer; the server keeps serving
        answer["error"] = f"{type(exc).__name__}: {exc}".strip()
    return answer


def main() -> int:
    out = _protocol_stream()
    try:
        from iso15118.shared.exificient_exi_codec import ExificientEXICodec

        codec = ExificientEXICodec()
        version = str(codec.get_version())
    except Exception as exc:
        _answer(out, {"error": f"cannot start the EXIficient codec: {type(exc).__name__}: {exc}"})
        return 1
    _answer(out, {"ready": True, "version": version})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            _answer(out, {"id": None, "error": f"request is not JSON: {exc}"})
            continue
        _answer(out, _handle(codec, request))
    return 0


if __name__ == "__main__":
    sys.exit(main())
