from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Version(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERSION_UNSPECIFIED: _ClassVar[Version]
    VERSION_CURRENT: _ClassVar[Version]

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    INT64: _ClassVar[DType]
    INT32: _ClassVar[DType]
    INT16: _ClassVar[DType]
    INT8: _ClassVar[DType]
    UINT8: _ClassVar[DType]
    BOOL: _ClassVar[DType]
    FLOAT64: _ClassVar[DType]
    FLOAT32: _ClassVar[DType]

class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KIND_UNSPECIFIED: _ClassVar[Kind]
    TENSOR: _ClassVar[Kind]
    OBJECT: _ClassVar[Kind]
VERSION_UNSPECIFIED: Version
VERSION_CURRENT: Version
DTYPE_UNSPECIFIED: DType
INT64: DType
INT32: DType
INT16: DType
INT8: DType
UINT8: DType
BOOL: DType
FLOAT64: DType
FLOAT32: DType
KIND_UNSPECIFIED: Kind
TENSOR: Kind
OBJECT: Kind

class Hello(_message.Message):
    __slots__ = ("session_id", "sender", "receiver", "version", "world_size", "resume", "received")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    sender: str
    receiver: str
    version: int
    world_size: int
    resume: bool
    received: int
    def __init__(self, session_id: _Optional[str] = ..., sender: _Optional[str] = ..., receiver: _Optional[str] = ..., version: _Optional[int] = ..., world_size: _Optional[int] = ..., resume: _Optional[bool] = ..., received: _Optional[int] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("session_id", "sender", "tag", "chunk", "chunks", "kind", "dtype", "shape", "nbytes", "data")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    NBYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    sender: str
    tag: int
    chunk: int
    chunks: int
    kind: Kind
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    nbytes: int
    data: bytes
    def __init__(self, session_id: _Optional[str] = ..., sender: _Optional[str] = ..., tag: _Optional[int] = ..., chunk: _Optional[int] = ..., chunks: _Optional[int] = ..., kind: _Optional[_Union[Kind, str]] = ..., dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., nbytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Abort(_message.Message):
    __slots__ = ("sender", "reason")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    sender: str
    reason: str
    def __init__(self, sender: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Waiting(_message.Message):
    __slots__ = ("chain",)
    CHAIN_FIELD_NUMBER: _ClassVar[int]
    chain: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, chain: _Optional[_Iterable[str]] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Bye(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("hello", "frame", "abort", "ack", "bye", "waiting", "seq", "acked")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    ABORT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    BYE_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ACKED_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    frame: Frame
    abort: Abort
    ack: Ack
    bye: Bye
    waiting: Waiting
    seq: int
    acked: int
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., frame: _Optional[_Union[Frame, _Mapping]] = ..., abort: _Optional[_Union[Abort, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., bye: _Optional[_Union[Bye, _Mapping]] = ..., waiting: _Optional[_Union[Waiting, _Mapping]] = ..., seq: _Optional[int] = ..., acked: _Optional[int] = ...) -> None: ...
