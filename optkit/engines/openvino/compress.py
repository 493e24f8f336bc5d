"""ov.compress: NNCF weight compression through optimum-intel (OVWeightQuantizationConfig) to an OpenVINO IR folder:
int8 per channel (data-free), int4 with a group size (data-free, or data-aware with AWQ and / or scale estimation on
the calibration text), the rest of the model float32.

It runs as a step in optkit's environment (the variant's model as PyTorch holds it, saved as an HF folder) and
hands the export to the OpenVINO environment's interpreter (export.py), whose IR folder is the step's output: a
variant with this step sets engine: openvino, and the handoff loads that folder there (handoff.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Literal

from pydantic import Field

from optkit.calibration import CalibrationSpec
from optkit.engines.base import LoadedModel
from optkit.engines.method import Method, ModelInfo, Params
from optkit.errors import RunError
from optkit.results import StepRecord


class OvParams(Params):
    bits: Literal[4, 8] = 8
    group_size: int | None = Field(default=None, description="weights per scale; -1: per output channel (default "
                                   "for int8), 128 for int4")
    sym: bool = False
    ratio: float = Field(default=1.0, gt=0, le=1, description="share of the layers in int4; the rest int8")
    awq: bool = False
    scale_estimation: bool = False
    calibration: CalibrationSpec = Field(default_factory=lambda: CalibrationSpec(samples=32, seq_len=128))


class OvFolder(LoadedModel):
    """The step's output in optkit's environment: an IR folder, carried to the OpenVINO engine's worker."""

    engine, format = "openvino", "openvino"

    def __init__(self, folder: Path, like: LoadedModel):
        self.folder, self.device = folder, "cpu"
        self.tokenizer, self.config, self.params = like.tokenizer, like.config, like.params

    @property
    def dtype(self) -> str:
        return "float32"

    def logits(self, input_ids, past=None):
        raise RunError("an ov.compress model runs in OpenVINO's environment: set engine: openvino on the variant")

    start = step = logits

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("openvino_model.*"))

    def save(self, folder) -> str | None:
        import shutil

        shutil.copytree(self.folder, folder, dirs_exist_ok=True)
        return "openvino"


class OvCompress(Method):
    name = "ov.compress"
    Params = OvParams
    accepts = ("hf",)
    produces = "openvino"
    devices = ("cpu",)
    notes = ("NNCF compresses the linear (and embedding) weights; OpenVINO decompresses them on the fly",)

    def check(self, info: ModelInfo, params: OvParams) -> list[str]:
        problems = super().check(info, params)
        if params.include or params.exclude:
            problems.append("ov.compress takes no include / exclude (NNCF names layers its own way); use ratio")
        if (params.awq or params.scale_estimation) and params.bits != 4:
            problems.append("awq and scale_estimation are for int4 (bits: 4); int8 is data-free")
        g = self._group(params)
        if g != -1 and g < 1:
            problems.append(f"group_size {g}: give a positive number of weights per scale, or -1 (per channel)")
        widths = sorted({w for _, w in info.linears.values()})
        if g > 0 and widths and any(w % g for w in widths):
            problems.append(f"group_size {g} does not divide the input widths {widths}; use a divisor or -1")
        return problems

    @staticmethod
    def _group(params: OvParams) -> int:
        return params.group_size if params.group_size is not None else (-1 if params.bits == 8 else 128)

    def bytes_per_weight(self, params: OvParams, in_features: int, act_bytes: float) -> float | None:
        g = self._group(params)
        per_group = in_features if g == -1 else g
        scales = 2 + (0 if params.sym else params.bits / 8)  # an f16 scale (and a zero point) per group
        bits = params.bits * params.ratio + 8 * (1 - params.ratio)
        return bits / 8 + scales / per_group

    def apply(self, lm, params: OvParams, auto_exclude=None):
        from optkit import envs
        from optkit.engines.openvino import ENV

        started = time.perf_counter()
        env = envs.ready(ENV) or envs.build(ENV, say=lambda text: print(text, flush=True))
        texts = []
        if params.awq or params.scale_estimation:
            from optkit.calibration import calibration_batch

            texts = [lm.tokenizer.decode(row, skip_special_tokens=True)
                     for row in calibration_batch(lm, params.calibration).tolist()]
        options = {"bits": params.bits, "group_size": self._group(params), "sym": params.sym, "ratio": params.ratio,
                   "awq": params.awq, "scale_estimation": params.scale_estimation, "texts": texts}
        work = Path(tempfile.mkdtemp(prefix="optkit-ov-"))
        if lm.save(work / "hf") != "hf":
            raise RunError(f"ov.compress needs a float model it can save as an HF folder; this one is {lm.format}")
        out = work / "ir"
        done = subprocess.run([str(envs.python(env)), "-m", "optkit.engines.openvino.export", str(work / "hf"),
                               str(out), json.dumps(options)], env=envs.worker_env(env), stdout=subprocess.PIPE,
                              text=True)
        if done.returncode:
            raise RunError(f"ov.compress: the export in the OpenVINO environment failed (exit {done.returncode}); "
                           "see the log above")
        mark = json.loads(done.stdout.strip().splitlines()[-1])
        record = StepRecord(method=self.name, params=params.model_dump(exclude_defaults=True),
                            seconds=round(time.perf_counter() - started, 3),
                            modules_changed=list(mark.get("compressed", [])), notes=list(self.notes),
                            details={"compression": mark.get("compression"), "versions": mark.get("versions"),
                                     "calibration_texts": mark.get("calibration_texts", 0),
                                     "weight_types": mark.get("weight_types", {})})
        if not record.modules_changed:
            raise RunError("ov.compress changed no weights (NNCF found nothing to compress)")
        model = OvFolder(out, lm)
        weakref.finalize(model, shutil.rmtree, work, True)  # the scratch folder lives as long as the model
        return model, record
