"""Serde between tensors/objects and wire frames. Pure functions, no I/O.

Tensors travel as dtype + shape + raw little-endian bytes, split into chunks of
about 1 MiB. Objects (what CrypTen sends with send_obj / broadcast_obj, and
dealer requests) use a small tagged JSON encoding that can only produce plain
data: None, bool, int, float, str, bytes, list, tuple, dict, torch.Size and
small tensors. Nothing on the wire is ever unpickled.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from parties.wire import wire_pb2 as pb


class FrameError(ValueError):
    """A frame or payload that breaks the wire rules."""


TORCH_TO_WIRE: dict[torch.dtype, int] = {
    torch.int64: pb.INT64,
    torch.int32: pb.INT32,
    torch.int16: pb.INT16,
    torch.int8: pb.INT8,
    torch.uint8: pb.UINT8,
    torch.bool: pb.BOOL,
    torch.float64: pb.FLOAT64,
    torch.float32: pb.FLOAT32,
}
WIRE_TO_TORCH: dict[int, torch.dtype] = {v: k for k, v in TORCH_TO_WIRE.items()}
WIRE_TO_NUMPY: dict[int, np.dtype] = {
    pb.INT64: np.dtype("<i8"),
    pb.INT32: np.dtype("<i4"),
    pb.INT16: np.dtype("<i2"),
    pb.INT8: np.dtype("i1"),
    pb.UINT8: np.dtype("u1"),
    pb.BOOL: np.dtype("?"),
    pb.FLOAT64: np.dtype("<f8"),
    pb.FLOAT32: np.dtype("<f4"),
}
MAX_DIMS = 16


@dataclass(frozen=True)
class Limits:
    """Bounds every received payload must respect."""

    max_payload_bytes: int = 8 << 30
    chunk_bytes: int = 1 << 20


def tensor_bytes(tensor: torch.Tensor) -> tuple[int, list[int], memoryview]:
    """(wire dtype, shape, little-endian bytes) of a CPU tensor, without a copy when contiguous."""
    if tensor.dtype not in TORCH_TO_WIRE:
        raise FrameError(f"dtype {tensor.dtype} cannot be sent")
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    arr = t.numpy()
    if sys.byteorder != "little" and arr.dtype.itemsize > 1:
        arr = arr.byteswap()
    return TORCH_TO_WIRE[tensor.dtype], list(t.shape), memoryview(arr).cast("B")


def expected_nbytes(dtype: int, shape: list[int]) -> int:
    """Bytes a tensor of this wire dtype and shape occupies; FrameError if malformed."""
    if dtype not in WIRE_TO_NUMPY:
        raise FrameError(f"unknown dtype code {dtype}")
    if len(shape) > MAX_DIMS:
        raise FrameError(f"{len(shape)} dimensions (at most {MAX_DIMS})")
    if any(d < 0 for d in shape):
        raise FrameError(f"negative dimension in shape {list(shape)}")
    return math.prod(shape) * WIRE_TO_NUMPY[dtype].itemsize


def tensor_from_bytes(dtype: int, shape: list[int], data: bytes | bytearray | memoryview
                      ) -> torch.Tensor:
    """Rebuild a tensor from validated wire bytes (copies into torch-owned memory)."""
    need = expected_nbytes(dtype, shape)
    if need != len(data):
        raise FrameError(f"shape {list(shape)} needs {need} bytes, frame has {len(data)}")
    arr = np.frombuffer(data, dtype=WIRE_TO_NUMPY[dtype]).reshape(shape)
    if sys.byteorder != "little" and arr.dtype.itemsize > 1:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


class Assembler:
    """Reassembles the chunks of one peer's payloads, validating each frame.

    Frames of one payload arrive in order on one stream; a payload is complete
    when its last chunk arrives. Memory is bounded by the declared size, which
    is checked against the limits before anything is allocated.
    """

    def __init__(self, peer: str, session_id: str, limits: Limits) -> None:
        self.peer = peer
        self.session_id = session_id
        self.limits = limits
        self._tag: int | None = None
        self._head: pb.Frame | None = None
        self._buf: memoryview | None = None
        self._filled = 0
        self._next_chunk = 0

    def feed(self, frame: pb.Frame) -> tuple[int, Any] | None:
        """Add one frame; return (tag, payload) when a payload completes, else None."""
        if frame.session_id != self.session_id:
            raise FrameError(f"frame for unknown session {frame.session_id!r}")
        if frame.sender != self.peer:
            raise FrameError(f"frame claims sender {frame.sender!r} on the link to {self.peer!r}")
        if frame.kind not in (pb.TENSOR, pb.OBJECT):
            raise FrameError(f"unknown frame kind {frame.kind}")
        if frame.chunks < 1 or frame.chunk >= frame.chunks:
            raise FrameError(f"chunk {frame.chunk} of {frame.chunks}")
        if frame.nbytes > self.limits.max_payload_bytes:
            raise FrameError(
                f"declared payload of {frame.nbytes} bytes exceeds the limit of "
                f"{self.limits.max_payload_bytes} bytes"
            )
        if len(frame.data) > max(self.limits.chunk_bytes, 1) * 2:
            raise FrameError(f"chunk of {len(frame.data)} bytes exceeds the chunk limit")
        if frame.chunk == 0:
            if self._head is not None:
                raise FrameError(f"tag {frame.tag} started before tag {self._tag} completed")
            if frame.kind == pb.TENSOR:
                need = expected_nbytes(frame.dtype, list(frame.shape))
                if need != frame.nbytes:
                    raise FrameError(
                        f"shape {list(frame.shape)} needs {need} bytes, frame declares "
                        f"{frame.nbytes}"
                    )
            if frame.chunks == 1:
                if len(frame.data) != frame.nbytes:
                    raise FrameError(
                        f"frame declares {frame.nbytes} bytes and carries {len(frame.data)}"
                    )
                return frame.tag, self._payload(frame, frame.data)
            if frame.chunks > frame.nbytes:
                raise FrameError(f"{frame.chunks} chunks for {frame.nbytes} bytes")
            self._head, self._tag = frame, frame.tag
            # torch.empty: no zeroing pass over a buffer every byte of which is written next
            self._buf = memoryview(torch.empty(frame.nbytes, dtype=torch.uint8).numpy())
            self._filled, self._next_chunk = 0, 0
        elif self._head is None or frame.tag != self._tag:
            raise FrameError(f"chunk {frame.chunk} of tag {frame.tag} without its first chunk")
        head, buf = self._head, self._buf
        assert head is not None and buf is not None
        if frame.chunk != self._next_chunk or frame.chunks != head.chunks:
            raise FrameError(f"chunk {frame.chunk} of tag {frame.tag} out of order")
        end = self._filled + len(frame.data)
        if end > head.nbytes:
            raise FrameError(f"tag {frame.tag} carries more than its declared {head.nbytes} bytes")
        buf[self._filled : end] = frame.data
        self._filled, self._next_chunk = end, self._next_chunk + 1
        if self._next_chunk < head.chunks:
            return None
        self._head, self._buf = None, None
        if self._filled != head.nbytes:
            raise FrameError(f"tag {head.tag} ended after {self._filled} of {head.nbytes} bytes")
        return head.tag, self._payload(head, buf)

    @staticmethod
    def _payload(head: Any, data: bytes | bytearray | memoryview) -> Any:
        if head.kind == pb.TENSOR:
            return tensor_from_bytes(head.dtype, list(head.shape), data)
        return decode_object(bytes(data))


# ---------------------------------------------------------------- envelopes on the wire
#
# Frame envelopes are written and read here directly in protobuf's wire format
# (the same bytes protobuf would produce and accept, see proto/parties/wire/wire.proto),
# so a 1 MiB chunk is copied once on each side instead of four times through
# protobuf objects. Every other envelope goes through protobuf.

_ENV_FRAME, _ENV_SEQ, _ENV_ACKED = 2, 8, 9
_ENV_OTHER_BODIES = (1, 3, 4, 5, 6)  # hello, abort, ack, bye, waiting
_FRAME_DATA = 10
_FRAME_INTS = {3: "tag", 4: "chunk", 5: "chunks", 6: "kind", 7: "dtype", 9: "nbytes"}
_FRAME_STRS = {1: "session_id", 2: "sender"}
_MAX_VARINT = (1 << 64) - 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if n:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def encode_frame(session_id: str, sender: str, tag: int, chunk: int, chunks: int, kind: int,
                 dtype: int, shape: list[int] | tuple[int, ...], nbytes: int,
                 data: memoryview | bytes, seq: int, acked: int) -> bytes:
    """One frame envelope's wire bytes (protobuf encoding), copying `data` once."""
    head = pb.Frame(session_id=session_id, sender=sender, tag=tag, chunk=chunk, chunks=chunks,
                    kind=kind, dtype=dtype, shape=shape, nbytes=nbytes).SerializeToString()
    n = len(data)
    data_key = _varint(_FRAME_DATA << 3 | 2) + _varint(n)
    frame_len = len(head) + len(data_key) + n
    tail = _varint(_ENV_SEQ << 3) + _varint(seq) + _varint(_ENV_ACKED << 3) + _varint(acked)
    return b"".join((_varint(_ENV_FRAME << 3 | 2), _varint(frame_len), head, data_key, data,
                     tail))


@dataclass
class WireFrame:
    """A frame read off the wire; `data` is a view into the received bytes (no copy)."""

    session_id: str = ""
    sender: str = ""
    tag: int = 0
    chunk: int = 0
    chunks: int = 0
    kind: int = 0
    dtype: int = 0
    shape: tuple[int, ...] = ()
    nbytes: int = 0
    data: memoryview | bytes = b""


@dataclass
class Incoming:
    """One received envelope: which body it has, its link sequence number and ack."""

    body: str | None
    seq: int = 0
    acked: int = 0
    size: int = 0  # bytes on the wire
    frame: WireFrame | None = None
    message: Any = None  # the protobuf Envelope, for every body but frames


def _read_varint(buf: memoryview, at: int, end: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if at >= end or shift > 63:
            raise FrameError("malformed envelope (varint)")
        byte = buf[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value > _MAX_VARINT:
                raise FrameError("malformed envelope (varint too large)")
            return value, at
        shift += 7


def _skip(buf: memoryview, wire: int, at: int, end: int) -> int:
    if wire == 0:
        return _read_varint(buf, at, end)[1]
    if wire == 1:
        at += 8
    elif wire == 2:
        n, at = _read_varint(buf, at, end)
        at += n
    elif wire == 5:
        at += 4
    else:
        raise FrameError(f"malformed envelope (wire type {wire})")
    if at > end:
        raise FrameError("malformed envelope (truncated field)")
    return at


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _parse_frame(buf: memoryview, at: int, end: int) -> WireFrame:
    f = WireFrame()
    shape: list[int] = []
    while at < end:
        key, at = _read_varint(buf, at, end)
        field_no, wire = key >> 3, key & 7
        if field_no in _FRAME_INTS and wire == 0:
            v, at = _read_varint(buf, at, end)
            setattr(f, _FRAME_INTS[field_no], v & 0xFFFFFFFF if field_no in (4, 5, 6, 7) else v)
        elif field_no in _FRAME_STRS and wire == 2:
            n, at = _read_varint(buf, at, end)
            if at + n > end:
                raise FrameError("malformed envelope (truncated string)")
            try:
                setattr(f, _FRAME_STRS[field_no], bytes(buf[at:at + n]).decode())
            except UnicodeDecodeError:
                raise FrameError("malformed envelope (string is not UTF-8)") from None
            at += n
        elif field_no == 8 and wire == 2:  # packed shape
            n, at = _read_varint(buf, at, end)
            stop = at + n
            if stop > end:
                raise FrameError("malformed envelope (truncated shape)")
            while at < stop:
                v, at = _read_varint(buf, at, stop)
                shape.append(_signed64(v))
        elif field_no == 8 and wire == 0:  # unpacked shape
            v, at = _read_varint(buf, at, end)
            shape.append(_signed64(v))
        elif field_no == _FRAME_DATA and wire == 2:
            n, at = _read_varint(buf, at, end)
            if at + n > end:
                raise FrameError("malformed envelope (truncated data)")
            f.data = buf[at:at + n]
            at += n
        else:
            at = _skip(buf, wire, at, end)
        if len(shape) > MAX_DIMS:
            raise FrameError(f"more than {MAX_DIMS} dimensions")
    f.shape = tuple(shape)
    return f


def decode_envelope(raw: bytes) -> Incoming:
    """Read one envelope; frames without copying their data. FrameError if malformed."""
    buf = memoryview(raw)
    end = len(buf)
    at, seq, acked, frame_at = 0, 0, 0, None
    other = False
    while at < end:
        key, at = _read_varint(buf, at, end)
        field_no, wire = key >> 3, key & 7
        if field_no == _ENV_FRAME and wire == 2:
            n, at = _read_varint(buf, at, end)
            if at + n > end:
                raise FrameError("malformed envelope (truncated frame)")
            frame_at = (at, at + n)
            at += n
        elif field_no == _ENV_SEQ and wire == 0:
            seq, at = _read_varint(buf, at, end)
        elif field_no == _ENV_ACKED and wire == 0:
            acked, at = _read_varint(buf, at, end)
        else:
            other = other or field_no in _ENV_OTHER_BODIES
            at = _skip(buf, wire, at, end)
    if frame_at is not None and not other:
        return Incoming("frame", seq, acked, end, frame=_parse_frame(buf, *frame_at))
    try:
        env = pb.Envelope.FromString(raw)
    except Exception as exc:  # protobuf's DecodeError
        raise FrameError(f"malformed envelope ({exc})") from None
    body = env.WhichOneof("body")
    return Incoming(body, env.seq, env.acked, end, message=env,
                    frame=env.frame if body == "frame" else None)


def read_envelope(raw: bytes) -> Incoming:
    """decode_envelope for gRPC's deserializer: a malformed envelope becomes body 'malformed'
    (with the reason in `message`), so the link fails naming the peer instead of gRPC
    ending the call."""
    try:
        return decode_envelope(raw)
    except FrameError as exc:
        return Incoming("malformed", size=len(raw), message=str(exc))


def encode_envelope(item: Any) -> bytes:
    """What goes on the wire for a queued item: frame bytes as they are, else protobuf."""
    return item if isinstance(item, bytes) else item.SerializeToString()


MAX_REASON_CHARS = 1000


def bounded_reason(reason: str) -> str:
    """An Abort reason cut to MAX_REASON_CHARS (when sending and when receiving)."""
    if len(reason) <= MAX_REASON_CHARS:
        return reason
    return reason[:MAX_REASON_CHARS - 14] + " ... (cut off)"


# ---------------------------------------------------------------- objects

_MAX_OBJECT_DEPTH = 32


def _enc(obj: Any, depth: int) -> Any:
    if depth > _MAX_OBJECT_DEPTH:
        raise FrameError("object nested too deeply")
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, int):
        return {"i": str(obj)}
    if isinstance(obj, float):
        return {"f": obj.hex()}
    if isinstance(obj, bytes):
        return {"b": base64.b64encode(obj).decode()}
    if isinstance(obj, torch.Size):
        return {"size": [int(d) for d in obj]}
    if isinstance(obj, torch.Tensor):
        dtype, shape, data = tensor_bytes(obj)
        return {"tensor": [dtype, shape, base64.b64encode(data).decode()]}
    if isinstance(obj, tuple):
        return {"tuple": [_enc(x, depth + 1) for x in obj]}
    if isinstance(obj, list):
        return [_enc(x, depth + 1) for x in obj]
    if isinstance(obj, dict):
        return {"dict": [[_enc(k, depth + 1), _enc(v, depth + 1)] for k, v in obj.items()]}
    raise FrameError(f"objects of type {type(obj).__name__} cannot be sent (no pickle on the wire)")


def _dec(obj: Any, depth: int) -> Any:
    if depth > _MAX_OBJECT_DEPTH:
        raise FrameError("object nested too deeply")
    if obj is None or isinstance(obj, bool | str):
        return obj
    if isinstance(obj, list):
        return [_dec(x, depth + 1) for x in obj]
    if not isinstance(obj, dict) or len(obj) != 1:
        raise FrameError("malformed object encoding")
    ((key, val),) = obj.items()
    try:
        if key == "i":
            if len(val) > 80:
                raise FrameError("integer too large")
            return int(val)
        if key == "f":
            return float.fromhex(val)
        if key == "b":
            return base64.b64decode(val, validate=True)
        if key == "size":
            return torch.Size([int(d) for d in val])
        if key == "tensor":
            dtype, shape, data = val
            return tensor_from_bytes(int(dtype), [int(d) for d in shape], base64.b64decode(data))
        if key == "tuple":
            return tuple(_dec(x, depth + 1) for x in val)
        if key == "dict":
            return {_dec(k, depth + 1): _dec(v, depth + 1) for k, v in val}
    except FrameError:
        raise
    except (TypeError, ValueError) as exc:
        raise FrameError(f"malformed object encoding: {exc}") from None
    raise FrameError(f"unknown object tag {key!r}")


def encode_object(obj: Any) -> bytes:
    """Safe encoding of plain data (see module docstring)."""
    return json.dumps(_enc(obj, 0), separators=(",", ":")).encode()


def decode_object(data: bytes) -> Any:
    """Inverse of encode_object; FrameError on anything else."""
    try:
        raw = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise FrameError(f"malformed object encoding: {exc}") from None
    return _dec(raw, 0)
