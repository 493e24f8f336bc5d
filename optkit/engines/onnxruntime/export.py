"""onnx.export: the current PyTorch model -> model.onnx (torch.onnx.export, dynamo, with a KV cache) run by
onnxruntime. The step then checks the export on fixed prompts (PyTorch vs ORT logits, and the ORT cache
path against a full forward) and fails beyond a tolerance, so a silently wrong graph never gets measured.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from optkit.common.validation import validate
from optkit.engines.method import Method, ModelInfo, step_record
from optkit.errors import RunError
from optkit.progress import note


class ExportParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    opset: int | None = Field(default=None, description="ONNX opset; None = torch.onnx's default")
    provider: Literal["cpu", "cuda", "auto"] = "cpu"
    threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads; 0 = its default")
    optimization: Literal["disable", "basic", "extended", "all"] = "all"
    atol: float = Field(default=1e-3, ge=0, description="allowed max |torch - ort| logit difference ...")
    rtol: float = Field(default=1e-4, ge=0, description="... plus this share of the largest |logit|")
    min_top1: float = Field(default=0.95, ge=0, le=1, description="share of positions with the same argmax")
    out_dir: str | None = Field(default=None, description="keep the .onnx here; default: a temp folder")


def _flat_cache_module(model):
    """The causal LM behind a flat signature torch.export can trace: (input_ids, attention_mask, position_ids,
    *past) -> (logits, *present), past/present ordered layer by layer as key, value."""
    import torch
    from transformers import DynamicCache

    class FlatCacheLM(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, position_ids, *past):
            cache = DynamicCache(config=self.m.config)
            for i in range(len(past) // 2):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.m(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=cache, use_cache=True)
            present = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return FlatCacheLM(model).eval()


def _kv_shapes(model) -> list[tuple[int, int]]:
    """(kv_heads, head_dim) per decoder layer, read from the cache one short forward pass fills: right for
    fused projections (Phi-3's qkv_proj) and per-layer head counts alike, where the config or k_proj are not."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=model.device), use_cache=True)
    return [(layer.keys.shape[1], layer.keys.shape[3]) for layer in out.past_key_values.layers]


def _rename_nodes(path: Path) -> None:
    """Give nodes optimum-style names from the module they came from ('/model/layers.0/mlp/down_proj/MatMul',
    '/lm_head/MatMul'), which include/exclude patterns and the sensitivity ranking read. The dynamo exporter
    names them node_linear_7 but records the module path in each node's metadata."""
    import ast
    from collections import Counter

    import onnx

    model = onnx.load(str(path), load_external_data=False)
    seen: Counter = Counter()
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        scopes = meta.get("pkg.torch.onnx.name_scopes")
        if not scopes:
            continue
        modules = [s for s in ast.literal_eval(scopes)[:-1] if s]  # the last entry is the op, not a module
        path_ = modules[-1] if modules else ""
        path_ = path_[2:] if path_.startswith("m.") else ("" if path_ == "m" else path_)  # drop the wrapper
        parts, out = path_.split(".") if path_ else [], []
        for part in parts:  # "layers", "0" -> "layers.0"
            if part.isdigit() and out:
                out[-1] += "." + part
            else:
                out.append(part)
        base = "/" + "/".join(out + [node.op_type]) if out else "/" + node.op_type
        name = base if not seen[base] else f"{base}_{seen[base]}"
        seen[base] += 1
        node.name = name
    onnx.save(model, str(path), save_as_external_data=False)  # weights stay in model.onnx.data


def export(lm, folder: Path, opset: int | None) -> Path:
    """Export the in-memory model with torch.onnx.export(dynamo=True) through a flat KV-cache wrapper: inputs
    input_ids, attention_mask, position_ids, past_key_values.N.key/value; outputs logits, present.N.key/value
    (the names optimum used, which OrtLM reads)."""
    import torch

    model = lm.model
    shapes = _kv_shapes(model)
    batch, seq, past = 2, 3, 2  # sizes >= 2, so torch.export keeps them symbolic
    ids = torch.randint(3, lm.vocab_size, (batch, seq), device=model.device)
    mask = torch.ones(batch, past + seq, dtype=torch.int64, device=model.device)
    pos = torch.arange(past, past + seq, device=model.device).expand(batch, seq)
    cache = [torch.zeros(batch, h, past, d, device=model.device) for h, d in shapes for _ in ("key", "value")]
    names_in = ["input_ids", "attention_mask", "position_ids"] + [
        f"past_key_values.{i}.{kv}" for i in range(len(shapes)) for kv in ("key", "value")]
    names_out = ["logits"] + [f"present.{i}.{kv}" for i in range(len(shapes)) for kv in ("key", "value")]
    dyn = torch.export.Dim.DYNAMIC
    dynamic = ({0: dyn, 1: dyn}, {0: dyn, 1: dyn}, {0: dyn, 1: dyn}, tuple({0: dyn, 2: dyn} for _ in cache))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    try:
        torch.onnx.export(_flat_cache_module(model), (ids, mask, pos, *cache), str(path), dynamo=True,
                          dynamic_shapes=dynamic, input_names=names_in, output_names=names_out,
                          opset_version=opset, external_data=True, optimize=True, verbose=False)
    except Exception as exc:  # torch.export raises many types for unsupported code
        raise RunError(f"torch.onnx.export could not export {type(model).__name__}: {str(exc).splitlines()[0]}") \
            from exc
    if not path.is_file():
        raise RunError(f"torch.onnx.export wrote no model.onnx into {folder}")
    _rename_nodes(path)
    model.config.save_pretrained(folder)  # a folder with model.onnx + config.json loads as a checkpoint
    return path


class ExportOnnx(Method):
    name = "onnx.export"
    Params = ExportParams
    accepts = ("hf",)
    produces = "onnx"
    requires = ("onnxruntime", "onnxscript", "onnx")
    extra = "onnx"

    def bytes_per_weight(self, params, in_features, act_bytes):
        return None  # the weights are exported as they are

    def check(self, info: ModelInfo, params: ExportParams) -> list[str]:
        problems = super().check(info, params)
        if info.format == "hf" and info.dtype != "float32":
            problems.append(f"exports float32 models only (model is {info.dtype}); remove the cast, "
                            "quantize after export with ort.* steps")
        if params.provider == "cuda":
            from optkit.engines.onnxruntime.engine import resolve_provider

            try:
                resolve_provider("cuda")
            except ValueError as exc:
                problems.append(str(exc))
        return problems

    def apply(self, lm, params: ExportParams, auto_exclude=None):
        from optkit import registry

        started = time.perf_counter()
        owner = None
        if params.out_dir:
            folder = Path(params.out_dir)
            folder.mkdir(parents=True, exist_ok=True)
        else:  # the OrtLM holds the TemporaryDirectory, so the files live exactly as long as the model
            owner = tempfile.TemporaryDirectory(prefix="optkit-onnx-")
            folder = Path(owner.name)
        note("onnx.export: exporting with torch.onnx (dynamo)")
        path = export(lm, folder / "export", params.opset)
        note("onnx.export: validating against PyTorch logits")
        ort_lm = registry.engines.get("onnxruntime").open(path, like=lm, provider=params.provider,
                                                          threads=params.threads, optimization=params.optimization,
                                                          owner=owner)
        check = validate(lm, ort_lm, params)
        # every module now lives in the ONNX graph
        return ort_lm, step_record(self, params, started, ["<whole model>"], details={
            "onnx_file": str(path), "size_bytes": ort_lm.size_bytes(), "provider": ort_lm.provider,
            "graph_nodes": _node_count(path), "validation": check})


def _node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)
