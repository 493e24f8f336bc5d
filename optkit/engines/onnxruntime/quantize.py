"""onnxruntime quantization of an exported model (after onnx.export): ort.dynamic_int8 (quantize_dynamic:
int8 weights, activations quantized on the fly) and ort.int4 (MatMulNBits: 4-bit blockwise weights);
ort.static_int8 (calibrated QDQ) lives in ort_static.py on the same base.

Each step writes a new model file into a fresh folder and swaps the session to it. include/exclude are
regexes on ONNX node names (e.g. "/model/layers.0/mlp/down_proj/MatMul", "lm_head"). The record lists the
original nodes that were replaced (or, in QDQ format, now read a dequantized weight); a step that replaces
none is an error. auto_exclude (auto_exclude.py) keeps the most sensitive nodes in float.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import Field

from optkit.engines.method import Method, ModelInfo, Params, select, step_record
from optkit.errors import RunError
from optkit.results import SkippedModule

WEIGHT_OPS = ("MatMul", "Gemm", "Gather")  # ops whose constant weights these quantizers can replace


def nodes(path: Path) -> tuple[dict[str, str], set[str], set[str]]:
    """(name -> op_type of every top-level node, names of nodes with a constant weight input, names of nodes
    that read a constant through DequantizeLinear: QDQ-quantized, same op); the graph only, no weights read."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    consts = {t.name for t in graph.initializer}
    table = {n.name: n.op_type for n in graph.node if n.name}
    weighted = {n.name for n in graph.node if n.name and any(i in consts for i in n.input)}
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in consts
                   for o in n.output}
    qdq = {n.name for n in graph.node if n.name and any(i in dequantized for i in n.input)}
    return table, weighted, qdq


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


def onnx_node(module: str) -> str:
    """model.layers.0.mlp.down_proj -> /model/layers.0/mlp/down_proj/MatMul (the exporter's node names)."""
    return "/" + re.sub(r"\.(?!\d)", "/", module) + "/MatMul"


class _OrtQuant(Method):
    accepts = ("onnx",)
    produces = "onnx-quantized"
    supports_auto_exclude = True  # auto_exclude.py
    requires = ("onnxruntime", "onnx")
    extra = "onnx"
    slug = "?"

    def forecast_targets(self, linears: list[str], params: OrtParams) -> list[str]:
        wanted = set(select([onnx_node(n) for n in linears], params)[0])
        return [n for n in linears if onnx_node(n) in wanted]

    def quantize(self, lm, dst: Path, params, targets: list[str], excluded: list[str], external: bool,
                 workdir: Path) -> None:
        """Write lm's model with exactly `targets` quantized to dst (workdir: for caches shared by trials)."""
        raise NotImplementedError

    def targets(self, lm, params: OrtParams) -> tuple[list[str], list[SkippedModule], list[str]]:
        """(nodes to quantize, nodes skipped by include/exclude, all candidates)."""
        before, weighted, _ = nodes(lm.model_path)
        # only nodes with a constant weight: attention's activation products are not quantizable weights
        candidates = [n for n, op in before.items() if op in params.op_types and n in weighted]
        return *select(candidates, params), candidates

    def build(self, lm, params: OrtParams, targets: list[str], excluded: list[str], workdir: Path) -> Path:
        """Quantize into a fresh folder under workdir (the source stays valid, size_bytes counts only ours)."""
        if not targets:  # onnxruntime reads an empty nodes_to_quantize as "every node"
            raise RunError(f"step {self.name}: no nodes left to quantize; check include/exclude and op_types")
        dst = Path(tempfile.mkdtemp(prefix=f"{self.slug}-", dir=workdir)) / "model.onnx"
        external = sum(p.stat().st_size for p in _files(lm.model_path)) > 1_500_000_000  # protobuf's 2 GB limit
        try:
            self.quantize(lm, dst, params, targets, excluded, external, workdir)
        except BaseException:
            shutil.rmtree(dst.parent, ignore_errors=True)
            raise
        return dst

    def apply(self, lm, params: OrtParams, auto_exclude=None):
        started = time.perf_counter()
        before, _, _ = nodes(lm.model_path)
        targets, skipped, candidates = self.targets(lm, params)
        if not targets:
            raise RunError(f"step {self.name} changed no nodes (0 targeted of {len(candidates)} "
                           f"{'/'.join(params.op_types)} nodes); check include/exclude and op_types")
        # the new files live as long as the model: in its temp folder, or a new one for an exported folder
        owner = lm.owner or tempfile.TemporaryDirectory(prefix="optkit-ort-")
        workdir, notes, fallback = Path(owner.name), [], {}
        if auto_exclude is not None:
            from optkit.engines.onnxruntime.auto_exclude import choose, kept_reason

            keep, fallback, warning = choose(lm, self, params, targets, [s.module for s in skipped], auto_exclude,
                                             workdir)
            targets = [t for t in targets if t not in keep]
            skipped += [SkippedModule(module=n, reason=kept_reason(i, n, fallback)) for i, n in enumerate(keep, 1)]
            notes += [warning] if warning else []
        dst = self.build(lm, params, targets, [s.module for s in skipped], workdir)
        after, _, qdq = nodes(dst)
        changed = [n for n in targets if after.get(n) != before[n] or n in qdq]
        skipped += [SkippedModule(module=n, reason="the quantizer left it unchanged (e.g. its weight is not "
                                                   "a constant)") for n in targets if n not in changed]
        if not changed:
            raise RunError(f"step {self.name} changed no nodes ({len(targets)} targeted of {len(candidates)} "
                           f"{'/'.join(params.op_types)} nodes); check include/exclude and op_types")
        new = lm.with_model(dst)
        new.owner = owner
        added = Counter(op for n, op in after.items() if n not in before)
        return new, step_record(self, params, started, changed, skipped, notes, {
            "onnx_file": str(dst), "size_bytes_before": lm.size_bytes(), "size_bytes": new.size_bytes(),
            "nodes_added_by_type": dict(added)}, fallback)


def _files(path: Path) -> list[Path]:
    from optkit.engines.onnxruntime.engine import onnx_files

    return onnx_files(path)


class DynamicInt8(_OrtQuant):
    name = "ort.dynamic_int8"
    slug = "dynamic_int8"
    Params = DynamicParams

    def bytes_per_weight(self, params: DynamicParams, in_features, act_bytes):
        return 1 + (5 / in_features if params.per_channel else 0)  # int8 + per-channel scale and zero point

    def quantize(self, lm, dst, params: DynamicParams, targets, excluded, external, workdir):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # MatMulConstBOnly: only weight MatMuls; attention's activation x activation products stay float
        quantize_dynamic(lm.model_path, dst, op_types_to_quantize=params.op_types, per_channel=params.per_channel,
                         reduce_range=params.reduce_range, weight_type=getattr(QuantType, params.weight_type),
                         nodes_to_quantize=targets, nodes_to_exclude=excluded, use_external_data_format=external,
                         extra_options={"MatMulConstBOnly": True})


class Int4(_OrtQuant):
    name = "ort.int4"
    slug = "int4"
    Params = Int4Params
    requires = ("onnxruntime", "onnx", "onnx_ir")

    def bytes_per_weight(self, params: Int4Params, in_features, act_bytes):
        return 0.5 + (4 + (0 if params.symmetric else 0.5)) / params.block_size

    def check(self, info: ModelInfo, params: Int4Params) -> list[str]:
        problems = super().check(info, params)
        if params.block_size & (params.block_size - 1):
            problems.append(f"block_size {params.block_size} is not a power of 2; use 32, 64 or 128")
        return problems

    def quantize(self, lm, dst, params: Int4Params, targets, excluded, external, workdir):
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        quantizer = MatMulNBitsQuantizer(str(lm.model_path), bits=params.bits, block_size=params.block_size,
                                         is_symmetric=params.symmetric, accuracy_level=params.accuracy_level,
                                         nodes_to_include=targets, nodes_to_exclude=excluded,
                                         op_types_to_quantize=tuple(params.op_types))
        quantizer.process()
        quantizer.model.save_model_to_file(str(dst), use_external_data_format=external)
