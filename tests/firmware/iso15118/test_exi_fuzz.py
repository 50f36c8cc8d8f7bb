"""Fuzzing the decoder: any input ends in a result or an ExiDecodeError, never another exception."""

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware.iso15118.exi import ExiDecodeError, ExiEncodeError, Namespace, codec

VECTORS = [
    v
    for v in json.loads((Path(__file__).parent / "golden_exi.json").read_text("utf-8"))["vectors"]
    if v["source"] != "json-fragment"
]


def decodes_cleanly(namespace: str, data: bytes) -> Any:
    """Decode; an ExiDecodeError is a clean outcome too (returned as None)."""
    try:
        return codec(namespace).decode(data)
    except ExiDecodeError as exc:
        assert str(exc)
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(list(Namespace)), st.binary(max_size=300))
def test_random_bytes_after_a_valid_header(namespace: Namespace, body: bytes) -> None:
    decodes_cleanly(namespace, b"\x80" + body)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(Namespace)), st.binary(max_size=64))
def test_random_bytes(namespace: Namespace, data: bytes) -> None:
    decodes_cleanly(namespace, data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(VECTORS), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=6))
def test_bit_flips_in_valid_streams(vector: dict[str, Any], flips: list[tuple[int, int]]) -> None:
    data = bytearray.fromhex(vector["hex"])
    for position, bit in flips:
        data[1 + position % (len(data) - 1)] ^= 1 << bit  # keep the header, damage the body
    result = decodes_cleanly(vector["namespace"], bytes(data))
    if result is not None:
        # Whatever decodes (possibly another valid message) is a tree the encoder handles cleanly too:
        # it encodes, or (for untyped deviations such as a value out of range) refuses with ExiEncodeError.
        try:
            codec(vector["namespace"]).encode(result)
        except ExiEncodeError as exc:
            assert str(exc)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(VECTORS), st.binary(min_size=1, max_size=40), st.integers(0, 10**6))
def test_spliced_garbage_in_valid_streams(vector: dict[str, Any], garbage: bytes, where: int) -> None:
    data = bytes.fromhex(vector["hex"])
    cut = 1 + where % len(data)
    decodes_cleanly(vector["namespace"], data[:cut] + garbage)


def test_a_long_stream_of_list_items_is_bounded_by_the_input() -> None:
    # 64 KiB of one bits: every event code escapes or repeats; decoding must stop at the input's end.
    for namespace in Namespace:
        decodes_cleanly(namespace, b"\x80" + b"\xff" * 65535)
        decodes_cleanly(namespace, b"\x80" + b"\x00" * 65535)
