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
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from parties import wire_pb2 as pb


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


def frames_for(
    session_id: str, sender: str, tag: int, kind: int, dtype: int, shape: list[int],
    data: memoryview | bytes, chunk_bytes: int,
) -> Iterator[pb.Envelope]:
    """Split one payload into envelopes of at most `chunk_bytes` data bytes each."""
    nbytes = len(data)
    chunks = max(1, math.ceil(nbytes / chunk_bytes))
    for i in range(chunks):
        piece = data[i * chunk_bytes : (i + 1) * chunk_bytes]
        yield pb.Envelope(
            frame=pb.Frame(
                session_id=session_id, sender=sender, tag=tag, chunk=i, chunks=chunks,
                kind=kind, dtype=dtype, shape=shape if i == 0 else (), nbytes=nbytes,
                data=bytes(piece),
            )
        )


def expected_nbytes(dtype: int, shape: list[int]) -> int:
    """Bytes a tensor of this wire dtype and shape occupies; FrameError if malformed."""
    if dtype not in WIRE_TO_NUMPY:
        raise FrameError(f"unknown dtype code {dtype}")
    if len(shape) > MAX_DIMS:
        raise FrameError(f"{len(shape)} dimensions (at most {MAX_DIMS})")
    if any(d < 0 for d in shape):
        raise FrameError(f"negative dimension in shape {list(shape)}")
    return math.prod(shape) * WIRE_TO_NUMPY[dtype].itemsize


def tensor_from_bytes(dtype: int, shape: list[int], data: bytes | bytearray) -> torch.Tensor:
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
        self._buf: bytearray | None = None
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
            self._buf = bytearray(frame.nbytes)
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
    def _payload(head: pb.Frame, data: bytes | bytearray) -> Any:
        if head.kind == pb.TENSOR:
            return tensor_from_bytes(head.dtype, list(head.shape), data)
        return decode_object(bytes(data))


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
