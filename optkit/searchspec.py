"""What `optkit search` (or a recipe's `search:` section) asks for: the accuracy budget against the file the user
started from, the time budget, the engines and types to explore, and the per-tensor mixes' settings; and what one
sensitivity job (search/sensitivity.py, run by a worker) measures. Only pydantic here, outside the search/ folder
because recipe.py and job.py, below the search, hold these specs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from optkit.calibration import CalibrationSpec
from optkit.units import parse_fraction

# uniform llama.cpp types tried by default: the 8- to 4-bit range a +5% budget can hold; those marked with an
# importance matrix are tried with and without one (it helps the symmetric 4-bit and K types most)
GGUF_TYPES = ["Q8_0", "Q6_K", "Q5_1", "Q5_0", "Q5_K_M", "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0", "IQ4_NL", "IQ4_XS"]
# the search's stages, each a pipeline run in a folder of its own under the search's output
STAGES = {"screen": "1-screen", "perplexity": "2-perplexity", "benchmark": "3-benchmark"}
WITH_IMATRIX = ["Q4_K_M", "Q4_0", "IQ4_NL", "IQ4_XS"]


def _fraction(value):
    return parse_fraction(value)


class MixSpec(BaseModel):
    """Mixed per-tensor GGUF types: each group (a tensor class over a block of layers) quantized alone to `low`
    gives its sensitivity; mixes move the least sensitive groups per byte saved to `low`, the rest kept."""

    model_config = ConfigDict(extra="forbid")
    low: list[str] = Field(default_factory=lambda: ["Q4_0"], min_length=1, description="the fast types groups move "
                           "to (each costs one sensitivity pass)")
    high: str | None = Field(default=None, description="the type groups keep; default: their type in a quantized "
                             "source (no requantization loss), Q8_0 from a float one")
    blocks: int = Field(default=4, ge=1, le=64, description="layer blocks per tensor class (groups = classes x "
                        "blocks, plus the embeddings and output)")
    points: int = Field(default=6, ge=1, le=16, description="mixes built along the greedy order")
    imatrix: bool = Field(default=True, description="quantize the low groups with an importance matrix")


class SearchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_ppl_increase: float = Field(default=0.05, description="perplexity budget against the source, e.g. '5%'")
    max_acc_drop: float | None = Field(default=None, ge=0, description="largest absolute drop of any eval.tasks "
                                       "accuracy against the source, e.g. '2%' (tasks run on benchmarked ones)")
    time_budget_min: float = Field(default=30.0, gt=0, description="wall-clock minutes; candidates that would not fit "
                                   "leave, said so")
    engines: list[Literal["llamacpp", "torch", "onnxruntime"]] = Field(
        default_factory=lambda: ["llamacpp"], min_length=1, description="engines whose formats to explore: llamacpp "
        "(types and mixes), torch (bf16, torchao int4, dynamic int8), onnxruntime (int4, dynamic int8)")
    types: list[str] = Field(default_factory=lambda: list(GGUF_TYPES), description="uniform llama.cpp types to try")
    imatrix_types: list[str] = Field(default_factory=lambda: list(WITH_IMATRIX), description="of those, also tried "
                                     "with an importance matrix")
    imatrix: CalibrationSpec = Field(default_factory=lambda: CalibrationSpec(samples=32, seq_len=256),
                                     description="calibration text for importance matrices (WikiText-2 validation)")
    mixes: MixSpec | None = Field(default_factory=MixSpec, description="mixed per-tensor types (null: none)")
    calibration: CalibrationSpec = Field(default_factory=lambda: CalibrationSpec(samples=4, seq_len=128),
                                         description="text the per-group sensitivity KL is measured on")
    screen_tokens: int = Field(default=512, ge=64, description="first, cheap stage: KL and perplexity on this many "
                               "test tokens")
    ppl_tokens: int = Field(default=4096, ge=256, description="perplexity on this many test tokens for survivors")
    max_benchmarked: int = Field(default=6, ge=1, description="most candidates taken to the full benchmark")

    _fractions = field_validator("max_ppl_increase", "max_acc_drop", mode="before")(
        lambda v: None if v is None else _fraction(v))


class SensitivitySpec(BaseModel):
    """A sensitivity job: the groups, the low type, how the rest is kept."""

    low: str
    groups: dict[str, str] = Field(description="group name -> regex on tensor names")
    keep_type: str | None = Field(default=None, description="type of every other tensor (default: as in the source, "
                                  "or Q8_0 where `uniform` timed it faster than the source here)")
    calibration: CalibrationSpec
    imatrix: CalibrationSpec | None = None
    uniform: list[str] = Field(default_factory=list, description="whole-file types timed head to head with the "
                               "source, for the forecast's order")
