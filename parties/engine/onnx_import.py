"""PyTorch models as crypten.nn graphs on torch 2.13: `crypten.nn.from_pytorch`, repaired.

CrypTen 0.4.1 converts a model by exporting it to ONNX (with the TorchScript
exporter, which parties/engine/compat.py pins) and building one crypten.nn
module per ONNX node. On torch 2.13 that fails or misbehaves for common
layers. :func:`from_pytorch`, which compat.load_crypten installs as
`crypten.nn.from_pytorch`, repairs the graph before CrypTen builds it:

* Identity nodes. The exporter stores equal tensors once and writes an
  `Identity` node for every other copy (a fresh BatchNorm's running_var equals
  its weight, its running_mean its bias; two zero biases of the same size).
  CrypTen has no Identity module, and one shared tensor would tie parameters
  that must train apart: each such node becomes its own initializer, a copy
  named after its output (the state_dict key it stands for).
* Buffers. CrypTen turns every initializer into a trainable parameter; the
  model's buffers (BatchNorm's running_mean and running_var) become
  non-trainable ones, updated by BatchNorm itself in training mode.
* BatchNorm in training mode. CrypTen's BatchNormalization then returns the
  running statistics too (for a five-output node the exporter no longer
  writes): it returns its output only, and updates the statistics in place.
* Gemm. CrypTen's Gemm multiplies by alpha and beta even when both are 1.0,
  each a truncation round; a Linear layer's Gemm (alpha = beta = 1) skips both.
* Layers. A node without a secure implementation is refused before anything
  is built, naming the layer it comes from (from the node's scope,
  "/block/fc1/Gemm" -> "block.fc1") and listing the supported layers.

Every parameter and buffer of the result is named after its state_dict key:
"fc1.weight" is the graph's module "fc1.weight", holding "data"
(`named_parameters()` gives "fc1.weight.data").
"""

from __future__ import annotations

import copy
import functools
import io
import threading
from typing import Any

import torch

SUPPORTED_LAYERS = ("Linear, Conv2d, ReLU, MaxPool2d, AvgPool2d, BatchNorm1d, BatchNorm2d, "
                    "Dropout, Flatten, Softmax, LogSoftmax and residual additions (x + f(x))")
# ONNX ops of the supported layers, and the shape bookkeeping the exporter writes
# around them (x.view(...), torch.flatten, constants)
LAYER_OPS = frozenset({"Gemm", "MatMul", "Add", "Conv", "Relu", "MaxPool", "AveragePool",
                       "BatchNormalization", "Dropout", "Flatten", "Softmax", "LogSoftmax"})
SHAPE_OPS = frozenset({"Constant", "Reshape", "Shape", "Gather", "Unsqueeze", "Squeeze",
                       "Concat", "Identity", "Transpose"})

_EXPORT = threading.Lock()  # the TorchScript exporter keeps its state in torch's globals


class UnsupportedLayer(ValueError):
    """A model holds a layer that has no secure implementation; the message names it."""


def layer_name(node_name: str) -> str:
    """The PyTorch layer an ONNX node comes from: "/block/fc1/Gemm" -> "block.fc1"."""
    parts = [p for p in node_name.split("/") if p][:-1]
    return ".".join(parts)


def check_supported(onnx_model: Any, model: torch.nn.Module | None = None) -> None:
    """UnsupportedLayer for the first node whose op has no secure implementation, naming the
    layer (and its class, when `model` is the PyTorch model it was exported from)."""
    modules = dict(model.named_modules()) if model is not None else {}
    for node in onnx_model.graph.node:
        if node.op_type not in LAYER_OPS | SHAPE_OPS:
            layer = layer_name(node.name)
            kind = type(modules[layer]).__name__ if layer in modules else None
            where = (f"layer '{layer}'" + (f" ({kind})" if kind else "")) if layer \
                else "the model's forward()"
            raise UnsupportedLayer(f"{where} has no secure implementation (it computes ONNX "
                                   f"{node.op_type}; supported: {SUPPORTED_LAYERS})")


def split_shared_initializers(onnx_model: Any) -> None:
    """Replace each Identity of an initializer by a copy of it under the Identity's output."""
    import onnx

    initializers = {i.name: i for i in onnx_model.graph.initializer}
    kept = []
    for node in onnx_model.graph.node:
        if node.op_type == "Identity" and node.input[0] in initializers:
            copied = onnx.TensorProto()
            copied.CopyFrom(initializers[node.input[0]])
            copied.name = node.output[0]
            onnx_model.graph.initializer.append(copied)
            initializers[copied.name] = copied
        else:
            kept.append(node)
    del onnx_model.graph.node[:]
    onnx_model.graph.node.extend(kept)


@functools.cache
def _linear_gemm(crypten: Any) -> type:
    """crypten.nn.Gemm for alpha = beta = 1: a @ b (+ c) without the two products by 1.0."""

    class LinearGemm(crypten.nn.module.Gemm):  # type: ignore[misc, name-defined]
        def forward(self, x: Any) -> Any:
            a, b, c = tuple(x)
            a = a.t() if self.trans_a else a
            b = b.t() if self.trans_b else b
            return a.matmul(b).add(c)

    return LinearGemm


@functools.cache
def _batchnorm(crypten: Any) -> type:
    """crypten.nn.BatchNormalization that returns only its output in training mode too
    (CrypTen's returns the running statistics as well, for a graph with five outputs,
    which the TorchScript exporter does not write; it updates them in place)."""

    class BatchNormalization(crypten.nn.module.BatchNormalization):  # type: ignore[misc]
        def forward(self, x: Any) -> Any:
            out = super().forward(x)
            return out[0] if isinstance(out, tuple) else out

    return BatchNormalization


def build(crypten: Any, onnx_model: Any, buffers: set[str]) -> Any:
    """A crypten.nn graph from a repaired ONNX model (CrypTen's _to_crypten, with the
    buffers non-trainable and Linear's Gemm without its products by 1.0)."""
    from crypten.nn import module
    from crypten.nn import onnx_converter as converter
    from onnx import numpy_helper

    inputs, outputs = converter._get_input_output_names(onnx_model)
    graph = module.Graph(inputs, outputs[0])
    for init in onnx_model.graph.initializer:
        value = torch.from_numpy(numpy_helper.to_array(init).copy())
        graph.add_module(init.name, module.Parameter(value, trainable=init.name not in buffers),
                         [])
    linear_gemm, batchnorm = _linear_gemm(crypten), _batchnorm(crypten)
    for node in onnx_model.graph.node:
        attributes = {a.name: converter._get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm" and attributes.get("alpha", 1.0) == 1.0 \
                and attributes.get("beta", 1.0) == 1.0 and len(node.input) == 3:
            layer = linear_gemm(trans_a=bool(attributes.get("transA", 0)),
                                trans_b=bool(attributes.get("transB", 0)))
        elif node.op_type == "BatchNormalization":
            layer = batchnorm(eps=attributes.get("epsilon", 1e-5),  # ONNX's momentum is
                              momentum=1.0 - attributes.get("momentum", 0.9))  # 1 - torch's
        else:
            layer = converter._get_operator_class(node.op_type, attributes).from_onnx(
                attributes=attributes)
        names = list(node.output)[:1] if node.op_type == "Dropout" else list(node.output)
        graph.add_module(names[0], layer, list(node.input), output_names=names)
    return converter._get_model_or_module(graph)


def to_onnx(model: torch.nn.Module, dummy_input: Any) -> Any:
    """The model as an ONNX ModelProto (TorchScript exporter, CrypTen's symbolic functions)."""
    import onnx
    from crypten.nn import onnx_converter as converter

    with _EXPORT:
        converter._update_onnx_symbolic_registry()
        with io.BytesIO() as f:
            converter._export_pytorch_model(f, model, dummy_input)
            f.seek(0)
            return onnx.load(f)


def from_pytorch(model: torch.nn.Module, dummy_input: Any) -> Any:
    """crypten.nn.from_pytorch that works on torch 2.13 (see the module docstring)."""
    from parties.engine.compat import load_crypten

    crypten = load_crypten()
    onnx_model = to_onnx(model, dummy_input)
    split_shared_initializers(onnx_model)
    check_supported(onnx_model, model)
    buffers = {name for name, _ in model.named_buffers()}
    secure = build(crypten, onnx_model, buffers)
    secure.pytorch_model = copy.deepcopy(model)  # as CrypTen's from_pytorch keeps it
    secure.train(mode=model.training)
    return secure


def install(crypten: Any) -> None:
    """Make `crypten.nn.from_pytorch` this module's (called once by compat.load_crypten)."""
    crypten.nn.from_pytorch = from_pytorch
    crypten.nn.onnx_converter.from_pytorch = from_pytorch
