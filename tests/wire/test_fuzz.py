"""Fuzzing the frame decoder, the object codec and the handshake check (bounded, in CI).

Whatever a peer sends, the only outcome is a payload or a FrameError naming
what is wrong: no other exception, no allocation beyond the declared limit.
"""

from __future__ import annotations

import os
from collections import Counter

import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from parties.wire import codec
from parties.wire import wire_pb2 as pb
from parties.wire.transport import WIRE_VERSION, LinkOptions, Mesh

CASES = int(os.environ.get("SMPC_FUZZ_CASES", "2000"))
LIMITS = codec.Limits(max_payload_bytes=1 << 20, chunk_bytes=1 << 12)

frames = st.builds(
    pb.Frame,
    session_id=st.sampled_from(["s", "other", ""]),
    sender=st.sampled_from(["a", "b", ""]),
    tag=st.integers(0, 2**64 - 1),
    chunk=st.integers(0, 5),
    chunks=st.integers(0, 6),
    kind=st.integers(0, 4),
    dtype=st.integers(0, 10),
    shape=st.lists(st.integers(-3, 2**40), max_size=20),
    nbytes=st.integers(0, 2**64 - 1),
    data=st.binary(max_size=64),
)


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(frames, min_size=1, max_size=6))
def test_frame_decoder_never_crashes(batch: list[pb.Frame]) -> None:
    asm = codec.Assembler("a", "s", LIMITS)
    for frame in batch:
        try:
            done = asm.feed(frame)
        except codec.FrameError:
            return  # the link would be failed here, naming the peer
        if done is not None:
            _, payload = done
            assert isinstance(payload, torch.Tensor | dict | list | tuple | str | int | float
                              | bytes | bool | type(None))
        assert asm._buf is None or len(asm._buf) <= LIMITS.max_payload_bytes


@settings(max_examples=CASES, deadline=None)
@given(st.binary(max_size=200))
def test_object_decoder_never_crashes(data: bytes) -> None:
    try:
        codec.decode_object(data)
    except codec.FrameError:
        pass


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=10,
)


@settings(max_examples=CASES, deadline=None)
@given(json_like)
def test_object_decoder_on_structured_garbage(value: object) -> None:
    import json

    try:
        codec.decode_object(json.dumps(value).encode())
    except codec.FrameError:
        pass


MESH = Mesh("b", ["a", "c"], ["a", "b", "c"], "s", LinkOptions())

GOOD_HELLO = {"session_id": "s", "sender": "a", "receiver": "b", "version": WIRE_VERSION}
HELLO_FIELDS = {
    "session_id": st.sampled_from(["S", "", "s "]) | st.text(max_size=4),
    "sender": st.sampled_from(["b", "c", "d"]) | st.text(max_size=4),
    "receiver": st.sampled_from(["a", "c"]) | st.text(max_size=4),
    "version": st.sampled_from([WIRE_VERSION - 1, WIRE_VERSION + 1, 0])
    | st.integers(0, 2**32 - 1),
}


@st.composite
def hellos(draw: st.DrawFn) -> pb.Hello:
    """The acceptable Hello with up to two fields replaced (so both outcomes are common)."""
    fields = dict(GOOD_HELLO)
    for name in draw(st.sets(st.sampled_from(sorted(HELLO_FIELDS)), max_size=2)):
        fields[name] = draw(HELLO_FIELDS[name])
    return pb.Hello(world_size=draw(st.integers(0, 2**32 - 1)), **fields)


def test_handshake_check_accepts_exactly_the_right_hello() -> None:
    """Only a Hello from a (who dials b) in session s, for b, at the current wire version
    is accepted; the run must see both outcomes, or it tested nothing."""
    outcomes: Counter[bool] = Counter()

    @settings(max_examples=CASES, deadline=None, database=None)
    @example(pb.Hello(session_id="s", sender="a", receiver="b", version=WIRE_VERSION))
    @example(pb.Hello(session_id="s", sender="a", receiver="b", version=WIRE_VERSION - 1))
    @given(hellos())
    def check(hello: pb.Hello) -> None:
        why = MESH.check_hello(hello, expect=None)
        accepted = (hello.version == WIRE_VERSION and hello.session_id == "s"
                    and hello.receiver == "b" and hello.sender == "a")
        assert (why is None) == accepted, (hello, why)
        outcomes[accepted] += 1

    check()
    assert outcomes[True] >= 1 and outcomes[False] >= 1, outcomes
    if CASES >= 100:  # not only the explicit example: random Hellos are accepted too
        assert outcomes[True] >= 2, outcomes


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames.filter(lambda f: len(f.shape) <= codec.MAX_DIMS), st.integers(0, 2**64 - 1),
       st.integers(0, 2**64 - 1))
def test_envelope_reader_agrees_with_protobuf(frame: pb.Frame, seq: int, acked: int) -> None:
    """Our frame reader and writer give the same fields and bytes as protobuf."""
    raw = pb.Envelope(frame=frame, seq=seq, acked=acked).SerializeToString()
    got = codec.decode_envelope(raw)
    assert (got.body, got.seq, got.acked, got.size) == ("frame", seq, acked, len(raw))
    f = got.frame
    assert f is not None
    for name in ("session_id", "sender", "tag", "chunk", "chunks", "kind", "dtype", "nbytes"):
        assert getattr(f, name) == getattr(frame, name), name
    assert list(f.shape) == list(frame.shape) and bytes(f.data) == frame.data
    ours = codec.encode_frame(frame.session_id, frame.sender, frame.tag, frame.chunk,
                              frame.chunks, frame.kind, frame.dtype, list(frame.shape),
                              frame.nbytes, frame.data, seq, acked)
    back = pb.Envelope.FromString(ours)
    assert back.frame == frame and (back.seq, back.acked) == (seq, acked)


@settings(max_examples=CASES, deadline=None)
@given(st.binary(max_size=300))
def test_envelope_reader_never_crashes(data: bytes) -> None:
    got = codec.read_envelope(data)  # a malformed envelope is a value, never an exception
    assert got.body in ("frame", "hello", "abort", "ack", "bye", "malformed", None)
