"""onnx.export: the current PyTorch model -> model.onnx (optimum, task text-generation-with-past) run by
onnxruntime. The step then checks the export on fixed prompts (PyTorch vs ORT logits, and the ORT cache
path against a full forward) and fails beyond a tolerance, so a silently wrong graph never gets measured.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from optkit.errors import RunError
from optkit.methods.base import Method, ModelInfo, step_record
from optkit.progress import note

PROMPTS, PROMPT_LEN = 3, 16


class ExportParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    opset: int | None = Field(default=None, description="ONNX opset; None = optimum's default for the model")
    provider: Literal["cpu", "cuda", "auto"] = "cpu"
    threads: int = Field(default=0, ge=0, description="onnxruntime intra-op threads; 0 = its default")
    optimization: Literal["disable", "basic", "extended", "all"] = "all"
    atol: float = Field(default=1e-3, ge=0, description="allowed max |torch - ort| logit difference ...")
    rtol: float = Field(default=1e-4, ge=0, description="... plus this share of the largest |logit|")
    min_top1: float = Field(default=0.95, ge=0, le=1, description="share of positions with the same argmax")
    out_dir: str | None = Field(default=None, description="keep the .onnx here; default: a temp folder")


def validate(torch_lm, ort_lm, params: ExportParams, what: str = "ONNX export") -> dict:
    """Compare logits on fixed random prompts (any exported LoadedModel against the PyTorch one it came from;
    params: atol, rtol, min_top1); raise RunError naming the numbers when out of tolerance."""
    import torch

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, torch_lm.vocab_size, (PROMPTS, PROMPT_LEN), generator=gen)
    ref, _ = torch_lm.logits(ids)
    ref = ref.cpu()
    got, _ = ort_lm.logits(ids)
    diff = (got - ref).abs()
    scale = float(ref.abs().max())
    # the cache path that decoding uses: prefill all but the last token, then one step
    _, past = ort_lm.start(ids[:, :-1])
    stepped, _ = ort_lm.step(ids[:, -1:], past)
    out = {
        "prompts": f"{PROMPTS} x {PROMPT_LEN} random token ids (seed 0)",
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(diff.max()) / max(scale, 1e-12),  # relative to the largest |logit|
        "top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).float().mean()),
        "cache_max_abs_diff": float((stepped - ref[:, -1]).abs().max()),
        "allowed_abs_diff": params.atol + params.rtol * scale,
    }
    worst = max(out["max_abs_diff"], out["cache_max_abs_diff"])
    if worst > out["allowed_abs_diff"] or out["top1_agreement"] < params.min_top1:
        raise RunError(
            f"{what} does not match PyTorch: max |diff| {worst:.3g} (allowed {out['allowed_abs_diff']:.3g}), "
            f"top-1 agreement {out['top1_agreement']:.1%} (needed {params.min_top1:.0%}); "
            "raise params.atol/rtol if this is expected (e.g. fp16), else report the model as unsupported")
    return out


def export(lm, folder: Path, opset: int | None) -> Path:
    """Save the in-memory model as an HF folder, then let optimum export it with its KV cache inputs."""
    from optimum.exporters.onnx import main_export

    with tempfile.TemporaryDirectory(prefix="optkit-hf-") as hf:
        lm.model.save_pretrained(hf, safe_serialization=True)
        lm.tokenizer.save_pretrained(hf)
        main_export(hf, folder, task="text-generation-with-past", opset=opset, do_validation=False,
                    library_name="transformers", device="cpu")
    path = folder / "model.onnx"
    if not path.is_file():
        raise RunError(f"optimum wrote no model.onnx into {folder}; see the log for the exporter's error")
    return path


class ExportOnnx(Method):
    name = "onnx.export"
    Params = ExportParams
    accepts = ("hf",)
    produces = "onnx"
    requires = ("onnxruntime", "optimum", "onnx")
    extra = "onnx"

    def bytes_per_weight(self, params, in_features, act_bytes):
        return None  # the weights are exported as they are

    def check(self, info: ModelInfo, params: ExportParams) -> list[str]:
        problems = super().check(info, params)
        if info.format == "hf" and info.dtype != "float32":
            problems.append(f"exports float32 models only (model is {info.dtype}); remove the cast, "
                            "quantize after export with ort.* steps")
        if params.provider == "cuda":
            from optkit.backends.ort import resolve_provider

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
        note("onnx.export: exporting with optimum")
        path = export(lm, folder / "export", params.opset)
        note("onnx.export: validating against PyTorch logits")
        ort_lm = registry.backends.get("onnxruntime").open(path, like=lm, provider=params.provider,
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
