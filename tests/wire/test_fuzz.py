"""Fuzzing the frame decoder, the object codec and the handshake check (bounded, in CI).

Whatever a peer sends, the only outcome is a payload or a FrameError naming
what is wrong: no other exception, no allocation beyond the declared limit.
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parties.wire import codec
from parties.wire import wire_pb2 as pb
from parties.wire.transport import LinkOptions, Mesh

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


@settings(max_examples=CASES, deadline=None)
@given(st.builds(pb.Hello, session_id=st.text(max_size=4), sender=st.text(max_size=4),
                 receiver=st.text(max_size=4), version=st.integers(0, 2**32 - 1),
                 world_size=st.integers(0, 2**32 - 1)))
def test_handshake_check_never_crashes(hello: pb.Hello) -> None:
    why = MESH.check_hello(hello, expect=None)
    accepted = (hello.version == 1 and hello.session_id == "s" and hello.receiver == "b"
                and hello.sender == "a")
    assert (why is None) == accepted


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
