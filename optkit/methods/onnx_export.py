"""onnx.export: the current PyTorch model -> model.onnx (optimum, task text-generation-with-past) run by
onnxruntime. The step then checks the export on fixed prompts (PyTorch vs ORT logits, and the ORT cache
path against a full forward) and fails beyond a tolerance, so a silently wrong graph never gets measured.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from optkit.errors import BadInput, RunError
from optkit.methods.base import Method, ModelInfo
from optkit.results import StepRecord

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


def validate(torch_lm, ort_lm, params: ExportParams) -> dict:
    """Compare logits on fixed random prompts; raise RunError naming the numbers when out of tolerance."""
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
            f"ONNX export does not match PyTorch: max |diff| {worst:.3g} (allowed {out['allowed_abs_diff']:.3g}), "
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
    requires = ("onnxruntime", "optimum", "onnx")
    extra = "onnx"
    linear_only = False
    quantizes = False
    to_onnx = True
    replaces_model = True

    def check(self, info: ModelInfo, params: ExportParams) -> list[str]:
        problems = []
        if info.onnx:
            problems.append("the model is already ONNX; remove the second onnx.export")
        if info.quantized:
            problems.append("PyTorch-quantized weights do not export; put onnx.export first, then ort.* steps")
        if info.dtype != "float32":
            problems.append(f"exports float32 models only (model is {info.dtype}); remove the cast, "
                            "quantize after export with ort.* steps")
        if params.provider == "cuda":
            from optkit.backends.ort import resolve_provider

            try:
                resolve_provider("cuda")
            except ValueError as exc:
                problems.append(str(exc))
        return problems

    def convert(self, lm, params: ExportParams, auto_exclude=None):
        from optkit.backends.ort import OrtLM

        started = time.perf_counter()
        owner = None
        if params.out_dir:
            folder = Path(params.out_dir)
            folder.mkdir(parents=True, exist_ok=True)
        else:  # the OrtLM holds the TemporaryDirectory, so the files live exactly as long as the model
            owner = tempfile.TemporaryDirectory(prefix="optkit-onnx-")
            folder = Path(owner.name)
        path = export(lm, folder / "export", params.opset)
        ort_lm = OrtLM(path, lm.tokenizer, lm.config, lm.params, params.provider, params.threads,
                       params.optimization, owner)
        check = validate(lm, ort_lm, params)
        return ort_lm, StepRecord(
            method=self.name,
            params=params.model_dump(exclude_defaults=True),
            seconds=round(time.perf_counter() - started, 3),
            modules_changed=["<whole model>"],  # every module now lives in the ONNX graph
            details={"onnx_file": str(path), "size_bytes": ort_lm.size_bytes(), "provider": ort_lm.provider,
                     "graph_nodes": _node_count(path), "validation": check},
        )


def export_folder(checkpoint: str, out: Path, opset: int | None = None, dtype: str = "float32",
                  device: str = "cpu") -> StepRecord:
    """`optkit export`: run the onnx.export step (with its validation) on a checkpoint and write the result
    as a folder (model.onnx, config, tokenizer, optkit-export.json) that optkit loads as a checkpoint.
    Written beside `out` and renamed into place, so a failed export leaves no half folder."""
    from optkit import models, pipeline, registry
    from optkit.backends.ort import EXPORT_FACTS

    ckpt = models.resolve(checkpoint)
    if ckpt.kind == "onnx":
        raise BadInput(f"checkpoint {checkpoint!r} is already an ONNX export; use it as a checkpoint directly")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BadInput(f"output {out} already exists and is not an empty folder; pick a new -o folder")
    method = registry.get("onnx.export")
    params = ExportParams(opset=opset, provider=device)
    torch_device = pipeline.resolve_device(device)
    ckpt = models.prepare(ckpt)
    problems = method.check(pipeline.model_info(ckpt, dtype, torch_device, False), params)
    if problems:
        raise BadInput(f"cannot export {checkpoint!r}: {problems[0]}")
    lm = models.load(ckpt, dtype, torch_device)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        params.out_dir = str(work)
        _, record = method.convert(lm, params)
        folder = work / "export"
        lm.tokenizer.save_pretrained(folder)  # optimum copies it too; this makes sure the folder is complete
        record.details["onnx_file"] = str(out / "model.onnx")
        facts = {"source": ckpt.given, "params": lm.params, "record": record.model_dump()}
        (folder / EXPORT_FACTS).write_text(json.dumps(facts, indent=2))
        if out.exists():
            out.rmdir()
        os.replace(folder, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return record


def _node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)
