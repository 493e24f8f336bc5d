"""llm-compressor (`oneshot`): calibration-based quantization into a compressed-tensors folder.

llmc.rtn (QuantizationModifier: round to nearest), llmc.gptq (GPTQModifier), llmc.awq (AWQModifier, then
round to nearest on the smoothed weights) and llmc.smoothquant (SmoothQuantModifier, then W8A8 int8 by RTN or
GPTQ). Calibration is optkit's calibration text (the one Wanda and auto_exclude use: samples x seq_len tokens at
seeded offsets, each led by the tokenizer's prefix); `ignore` is every targeted layer's complement under
include/exclude (lm_head is excluded by default, as llm-compressor's examples do: SmolLM2 and others tie it to
the embedding).

The step writes the model with `save_pretrained(save_compressed=True)`, the folder vLLM and plain transformers
load, then opens that folder through the PyTorch engine: the variant is measured as it ships, and the logits of
the reloaded model are checked against the in-memory one (the same check onnx.export makes). On CPU, transformers
runs these layers by dequantizing their weights (W8A8 also fake-quantizes activations): accuracy is the
scheme's, speed is not what vLLM's kernels give, and the report says so instead of ranking on it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from optkit.calibration import CalibrationSpec, calibration_batch, calibration_file
from optkit.engines.method import Method, ModelInfo, Params, select, step_record
from optkit.engines.torch.transform import linear_names
from optkit.errors import BadInput, RunError
from optkit.progress import note
from optkit.results import SkippedModule

GROUPS = (32, 64, 128, 256)


class LlmcParams(Params):
    exclude: list[str] = Field(default_factory=lambda: ["lm_head"],
                               description="regexes on module names to leave in float (default: lm_head)")
    scheme: Literal["W4A16", "W8A16", "W8A8", "FP8_DYNAMIC"] = "W4A16"
    group_size: int | None = Field(default=128, ge=1, description="weights per scale (W4A16/W8A16); "
                                                                   "None = one scale per output channel")
    symmetric: bool = True
    calibration: CalibrationSpec = Field(default_factory=lambda: CalibrationSpec(samples=64, seq_len=256))
    out_dir: str | None = Field(default=None, description="keep the compressed-tensors folder here; "
                                                          "default: a temp folder")

    @model_validator(mode="after")
    def _scheme_fits(self):
        if self.scheme in ("W8A8", "FP8_DYNAMIC") and "group_size" in self.model_fields_set and self.group_size:
            raise ValueError(f"{self.scheme} has one weight scale per output channel; drop group_size")
        if self.scheme in ("W8A8", "FP8_DYNAMIC") and not self.symmetric:
            raise ValueError(f"{self.scheme} is symmetric only (vLLM's kernels); drop symmetric: false")
        return self

    def weight_group(self) -> int | None:
        return self.group_size if self.scheme in ("W4A16", "W8A16") else None


class GptqParams(LlmcParams):
    actorder: Literal["none", "static", "group", "weight"] = Field(
        default="static", description="activation ordering: columns quantized by decreasing Hessian diagonal; "
        "static (llm-compressor's default) keeps groups contiguous, so kernels serve it as they serve none")
    dampening_frac: float = Field(default=0.01, gt=0, lt=1, description="added to the Hessian diagonal")
    block_size: int = Field(default=128, ge=1)


class AwqParams(LlmcParams):
    scheme: Literal["W4A16"] = "W4A16"
    symmetric: bool = False  # AWQ's own convention: asymmetric int4
    duo_scaling: bool = True
    n_grid: int = Field(default=20, ge=1, description="scale grid points searched per layer group")


class SmoothQuantParams(LlmcParams):
    scheme: Literal["W8A8"] = "W8A8"
    group_size: int | None = None
    smoothing_strength: float = Field(default=0.8, gt=0, lt=1)
    quantizer: Literal["rtn", "gptq"] = Field(default="rtn", description="how the smoothed weights are quantized")


def _scheme(params: LlmcParams) -> dict:
    """A QuantizationModifier/GPTQModifier's scheme arguments: a preset name (W8A8, FP8_DYNAMIC) or one config
    group for weight-only int4/int8 with the group size and symmetry asked for."""
    if params.scheme in ("W8A8", "FP8_DYNAMIC"):
        return {"scheme": params.scheme, "targets": ["Linear"]}
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    g = params.weight_group()
    weights = QuantizationArgs(num_bits=4 if params.scheme == "W4A16" else 8, type="int", symmetric=params.symmetric,
                               strategy="group" if g else "channel", group_size=g)
    return {"config_groups": {"group_0": QuantizationScheme(targets=["Linear"], weights=weights)}}


class _Llmc(Method):
    Params = LlmcParams
    accepts = ("hf",)
    produces = "compressed-tensors"
    requires = ("llmcompressor", "compressed_tensors")
    extra = "llmc"
    calibrated = True  # reads calibration text
    unpriced_build = True  # oneshot's passes over the calibration text: no forecast prices them (eta.py)
    # no speed note on the step: whether the timing is compressed-tensors' serving speed depends on the engine that
    # measures it (PyTorch: no, formats.py's speed_note, shown by the report; vLLM: yes)

    def bytes_per_weight(self, params: LlmcParams, in_features, act_bytes):
        # None: unchanged. transformers decompresses compressed-tensors to float weights on load on CPU, so the
        # engine optkit measures in moves the same bytes as before (vLLM would move 4 or 8 bits + scales)
        return None

    def check(self, info: ModelInfo, params: LlmcParams) -> list[str]:
        problems = super().check(info, params)
        # FP8 on a CPU: whether it runs as it ships is the measuring engine's call (Engine.check_served)
        if info.dtype not in ("float32", "bfloat16", "float16"):
            problems.append(f"needs a float model (it is {info.dtype})")
        g = params.weight_group()
        targets = select(list(info.linears), params)[0]
        if info.linears and not targets:
            problems.append("include/exclude leave no linear layer to quantize")
        if g:
            bad = [n for n in targets if info.linears[n][1] % g]
            if bad:
                widths = sorted({info.linears[n][1] for n in bad})
                every = sorted({info.linears[n][1] for n in targets})
                fits = [s for s in GROUPS if all(w % s == 0 for w in every)]
                fix = f"use group_size {' or '.join(map(str, fits))}" if fits else "exclude them"
                shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                problems.append(f"group_size {g} does not divide in_features {widths} of {shown}; {fix}")
        if params.out_dir and Path(params.out_dir).is_dir() and any(Path(params.out_dir).iterdir()):
            problems.append(f"out_dir {params.out_dir} is not empty; give a new or empty folder")
        if self.calibrated:
            try:
                calibration_file(params.calibration.path)
            except BadInput as exc:
                problems.append(str(exc))
        return problems

    def modifiers(self, params: LlmcParams, ignore: list[str]) -> list:
        raise NotImplementedError

    def apply(self, lm, params: LlmcParams, auto_exclude=None):
        import torch

        from optkit import registry
        from optkit.checkpoints import Checkpoint

        started = time.perf_counter()
        every = linear_names(lm.model)
        targets, skipped = select(every, params)
        if not targets:
            raise RunError(f"step {self.name}: include/exclude leave no linear layer to quantize")
        ignore = [n for n in every if n not in set(targets)]
        recipe = self.modifiers(params, ignore)
        dataset = None
        if self.calibrated:
            from datasets import Dataset

            batch = calibration_batch(lm, params.calibration)
            dataset = Dataset.from_dict({"input_ids": batch.tolist(),
                                         "attention_mask": torch.ones_like(batch).tolist()})
        _cpu_awq_workaround(lm.device)
        note(f"{self.name}: llm-compressor oneshot ({params.scheme})")
        from llmcompressor import oneshot

        t0 = time.perf_counter()
        try:
            oneshot(model=lm.model, dataset=dataset, recipe=recipe, shuffle_calibration_samples=False,
                    num_calibration_samples=params.calibration.samples if dataset is not None else 0,
                    max_seq_length=params.calibration.seq_len)
        except (ValueError, RuntimeError, TypeError, AssertionError) as exc:
            raise RunError(f"step {self.name}: llm-compressor failed: {str(exc).splitlines()[0][:300]}") from exc
        oneshot_s = time.perf_counter() - t0
        owner = None
        if params.out_dir:
            folder = Path(params.out_dir)
            if folder.exists() and any(folder.iterdir()):
                raise RunError(f"out_dir {folder} is not empty; give a new or empty folder")
        else:
            owner = tempfile.TemporaryDirectory(prefix="optkit-llmc-")
            folder = Path(owner.name) / "model"
        reference = _probe(lm)  # before saving: what the reloaded folder must reproduce
        note(f"{self.name}: saving compressed-tensors to {folder}")
        lm.model.save_pretrained(folder, save_compressed=True)
        lm.tokenizer.save_pretrained(folder)
        note(f"{self.name}: reloading the folder with plain transformers and checking its logits")
        new = registry.engines.get("torch").load(
            Checkpoint(str(folder), "folder", str(folder), "compressed-tensors"), dtype=lm.dtype, device=lm.device)
        new.params = lm.params
        new._owner = owner  # the engine's load set new.source_folder: the folder goes with the model
        check = _reload_check(lm, new, reference)
        changed = [n for n in targets if getattr(new.model.get_submodule(n), "quantization_scheme", None) is not None]
        skipped += [SkippedModule(module=n, reason="llm-compressor left it unquantized") for n in targets
                    if n not in set(changed)]
        if not changed:
            raise RunError(f"step {self.name} quantized no modules ({len(targets)} targeted); check include/exclude")
        details = {"scheme": params.scheme, "group_size": params.weight_group(), "symmetric": params.symmetric,
                   "oneshot_seconds": round(oneshot_s, 1), "folder": str(folder),
                   "size_bytes": new.size_bytes(),
                   "reload_check": check, "ignore": ignore}
        if dataset is not None:
            details["calibration_tokens"] = params.calibration.samples * params.calibration.seq_len
        lm.model = None  # the in-memory copy is no longer needed
        return new, step_record(self, params, started, changed, skipped, list(self.notes), details)


def _probe(lm) -> dict:
    """Logits on fixed random prompts, full forward and through the cache (prefill all but the last token, one
    step): the two paths evaluation and decoding use."""
    import torch

    from optkit.common.validation import PROMPT_LEN, PROMPTS

    ids = torch.randint(3, lm.vocab_size, (PROMPTS, PROMPT_LEN), generator=torch.Generator().manual_seed(0))
    full, _ = lm.logits(ids)
    _, past = lm.start(ids[:, :-1])
    stepped, _ = lm.step(ids[:, -1:], past)
    return {"ids": ids, "full": full.float().cpu(), "stepped": stepped.float().cpu()}


def _reload_check(lm, new, reference: dict, atol: float = 1e-4, rtol: float = 1e-5) -> dict:
    """The reloaded folder against the in-memory model on both paths. Each path is compared with itself: with
    int8 activations the cache path and the full forward differ in their own right (a float difference in
    attention rounds an activation to another int8 step), in memory and reloaded alike."""
    got = _probe(new)
    scale = float(reference["full"].abs().max())
    out = {"prompts": PROMPTS_TEXT, "max_abs_diff": float((got["full"] - reference["full"]).abs().max()),
           "cache_max_abs_diff": float((got["stepped"] - reference["stepped"]).abs().max()),
           "top1_agreement": float((got["full"].argmax(-1) == reference["full"].argmax(-1)).float().mean()),
           "allowed_abs_diff": atol + rtol * scale}
    worst = max(out["max_abs_diff"], out["cache_max_abs_diff"])
    if worst > out["allowed_abs_diff"] or out["top1_agreement"] < 1.0:
        raise RunError(f"the reloaded compressed-tensors folder does not reproduce the model llm-compressor "
                       f"quantized: max |logit diff| {worst:.3g} (allowed {out['allowed_abs_diff']:.3g}), top-1 "
                       f"agreement {out['top1_agreement']:.1%}; a transformers / compressed-tensors mismatch?")
    return out


PROMPTS_TEXT = "3 x 16 random token ids (seed 0), full forward and cache path"


def _cpu_awq_workaround(device: str) -> None:
    """llm-compressor 0.14's AWQ pins cached activations unconditionally; with a CPU-only torch that raises
    "Cannot access accelerator device when none is available". Pinning only speeds up transfers: skip it there."""
    import torch

    if device.startswith("cuda") or torch.accelerator.is_available():
        return
    from llmcompressor.pipelines.cache import IntermediatesCache

    IntermediatesCache.pin_memory = lambda self, *a, **k: None


class Rtn(_Llmc):
    name = "llmc.rtn"
    calibrated = False  # weight-only RTN needs no data (W8A8 uses dynamic per-token activation scales)

    def modifiers(self, params, ignore):
        from llmcompressor.modifiers.quantization import QuantizationModifier

        return [QuantizationModifier(ignore=ignore, **_scheme(params))]


class Gptq(_Llmc):
    name = "llmc.gptq"
    Params = GptqParams

    def check(self, info, params: GptqParams):
        problems = super().check(info, params)
        if params.scheme == "FP8_DYNAMIC":
            problems.append("GPTQ does not calibrate FP8 weights; use llmc.rtn with scheme FP8_DYNAMIC")
        return problems

    def modifiers(self, params: GptqParams, ignore):
        from llmcompressor.modifiers.gptq import GPTQModifier

        return [GPTQModifier(ignore=ignore, dampening_frac=params.dampening_frac, block_size=params.block_size,
                             actorder=None if params.actorder == "none" else params.actorder, **_scheme(params))]


class Awq(_Llmc):
    name = "llmc.awq"
    Params = AwqParams

    def modifiers(self, params: AwqParams, ignore):
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.transform.awq import AWQModifier

        return [AWQModifier(duo_scaling=params.duo_scaling, n_grid=params.n_grid),
                QuantizationModifier(ignore=ignore, **_scheme(params))]


class SmoothQuant(_Llmc):
    name = "llmc.smoothquant"
    Params = SmoothQuantParams

    def modifiers(self, params: SmoothQuantParams, ignore):
        from llmcompressor.modifiers.gptq import GPTQModifier
        from llmcompressor.modifiers.quantization import QuantizationModifier
        from llmcompressor.modifiers.smoothquant import SmoothQuantModifier

        quant = GPTQModifier if params.quantizer == "gptq" else QuantizationModifier
        return [SmoothQuantModifier(smoothing_strength=params.smoothing_strength),
                quant(ignore=ignore, **_scheme(params))]

