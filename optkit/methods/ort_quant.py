"""onnxruntime quantization of an exported model (after onnx.export): ort.dynamic_int8 (quantize_dynamic:
int8 weights, activations quantized on the fly) and ort.int4 (MatMulNBits: 4-bit blockwise weights).

Each step writes a new model file next to the old one and swaps the session to it. include/exclude are
regexes on ONNX node names (e.g. "/model/layers.0/mlp/down_proj/MatMul", "lm_head"). The record lists the
original nodes that were replaced; a step that replaces none is an error.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field

from optkit.errors import RunError
from optkit.methods.base import Method, ModelInfo, Params, select
from optkit.results import SkippedModule, StepRecord

WEIGHT_OPS = ("MatMul", "Gemm", "Gather")  # ops whose constant weights these quantizers can replace


def nodes(path: Path) -> tuple[dict[str, str], set[str]]:
    """(name -> op_type of every top-level node, names of nodes with a constant weight input); the graph
    only: weights are not read."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    consts = {t.name for t in graph.initializer}
    table = {n.name: n.op_type for n in graph.node if n.name}
    weighted = {n.name for n in graph.node if n.name and any(i in consts for i in n.input)}
    return table, weighted


class OrtParams(Params):
    op_types: list[str] = Field(default_factory=lambda: ["MatMul"], description="node types to quantize")


class DynamicParams(OrtParams):
    weight_type: Literal["QInt8", "QUInt8"] = "QInt8"
    per_channel: bool = False
    reduce_range: bool = False


class Int4Params(OrtParams):
    bits: Literal[4] = 4
    block_size: int = Field(default=32, ge=16, description="a power of 2, at least 16")
    symmetric: bool = True
    accuracy_level: Literal[0, 1, 2, 3, 4] | None = Field(
        default=None, description="MatMulNBits compute type: 0/None unset, 1 fp32, 2 fp16, 3 bf16, 4 int8")


class _OrtQuant(Method):
    runs_on = "onnxruntime"
    replaces_model = True
    requires = ("onnxruntime", "onnx")
    extra = "onnx"
    linear_only = False
    slug = "?"

    def check(self, info: ModelInfo, params: OrtParams) -> list[str]:
        if info.quantized:
            return ["the model is already quantized; use one ort.* quantization step per variant"]
        return []

    def quantize(self, src: Path, dst: Path, params, targets: list[str], excluded: list[str],
                 external: bool) -> None:
        raise NotImplementedError

    def convert(self, lm, params: OrtParams):
        started = time.perf_counter()
        src = lm.model_path
        before, weighted = nodes(src)
        # only nodes with a constant weight: attention's activation products are not quantizable weights
        candidates = [n for n, op in before.items() if op in params.op_types and n in weighted]
        targets, skipped = select(candidates, params)
        # a fresh folder beside the source, so the source model stays valid and size_bytes counts only ours
        dst = Path(tempfile.mkdtemp(prefix=f"{self.slug}-", dir=src.parent.parent)) / "model.onnx"
        external = sum(p.stat().st_size for p in _files(src)) > 1_500_000_000  # protobuf's 2 GB limit
        self.quantize(src, dst, params, targets, [s.module for s in skipped], external)
        after, _ = nodes(dst)
        changed = [n for n in targets if after.get(n) != before[n]]
        skipped += [SkippedModule(module=n, reason="the quantizer left it unchanged (e.g. its weight is not "
                                                   "a constant)") for n in targets if n not in changed]
        if not changed:
            raise RunError(f"step {self.name} changed no nodes ({len(targets)} targeted of {len(candidates)} "
                           f"{'/'.join(params.op_types)} nodes); check include/exclude and op_types")
        new = lm.with_model(dst)
        added = Counter(op for n, op in after.items() if n not in before)
        return new, StepRecord(
            method=self.name,
            params=params.model_dump(exclude_defaults=True),
            seconds=round(time.perf_counter() - started, 3),
            modules_changed=changed,
            modules_skipped=skipped,
            details={"onnx_file": str(dst), "size_bytes_before": lm.size_bytes(), "size_bytes": new.size_bytes(),
                     "nodes_added_by_type": dict(added)},
        )


def _files(path: Path) -> list[Path]:
    from optkit.backends.ort import onnx_files

    return onnx_files(path)


class DynamicInt8(_OrtQuant):
    name = "ort.dynamic_int8"
    slug = "dynamic_int8"
    Params = DynamicParams

    def quantize(self, src, dst, params: DynamicParams, targets, excluded, external):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # MatMulConstBOnly: only weight MatMuls; attention's activation x activation products stay float
        quantize_dynamic(src, dst, op_types_to_quantize=params.op_types, per_channel=params.per_channel,
                         reduce_range=params.reduce_range, weight_type=getattr(QuantType, params.weight_type),
                         nodes_to_quantize=targets, nodes_to_exclude=excluded, use_external_data_format=external,
                         extra_options={"MatMulConstBOnly": True})


class Int4(_OrtQuant):
    name = "ort.int4"
    slug = "int4"
    Params = Int4Params
    requires = ("onnxruntime", "onnx", "onnx_ir")

    def check(self, info: ModelInfo, params: Int4Params) -> list[str]:
        problems = super().check(info, params)
        if params.block_size & (params.block_size - 1):
            problems.append(f"block_size {params.block_size} is not a power of 2; use 32, 64 or 128")
        return problems

    def quantize(self, src, dst, params: Int4Params, targets, excluded, external):
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(str(src), bits=params.bits, block_size=params.block_size,
                                         is_symmetric=params.symmetric, accuracy_level=params.accuracy_level,
                                         nodes_to_include=targets, nodes_to_exclude=excluded,
                                         op_types_to_quantize=tuple(params.op_types))
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=external)
