"""What optkit search records in report.json (`Report.search`): every candidate with the stage it left at and why,
the per-tensor sensitivity its mixes came from, and where the time went."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from optkit.finite import Data, Num
from optkit.stats import Stats


class GroupSensitivity(Data):
    """One tensor group (a tensor class over a block of layers) quantized alone to the search's low type, the rest
    of the model as it was: the KL of its next-token distribution from the source's on calibration text."""

    group: str = Field(description="e.g. 'ffn_down 0-7' or 'token_embd'")
    pattern: str = Field(description="regex on GGUF tensor names selecting the group")
    tensors: int
    weights: int
    bytes_saved: int = Field(description="file bytes the low type saves on these tensors (negative: it costs)")
    kl: Num = Field(description="mean KL(source || group quantized) per token, nats")
    kl_se: Num | None = None
    ms_saved: Num | None = Field(default=None, description="decode ms per token the move saves: its weights times "
                                   "the per-weight saving measured for its tensors' type (Sensitivity.type_ms_saved)")
    rank: int = Field(default=0, description="position in the greedy order (1: moved to the low type first)")
    kind: str | None = Field(default=None, description="the type a mix keeps these tensors in when it does not move "
                             "them (the source's, or the search's keep type); types joined by '+' when they differ")


class Sensitivity(Data):
    """What a sensitivity job measured (optkit/search/sensitivity.py)."""

    low: str = Field(description="the type each group was quantized to alone")
    source_types: dict[str, int] = Field(default_factory=dict, description="the source's tensor types, counted")
    tokens: int = Field(default=0, description="calibration tokens the KL was measured on")
    imatrix: bool = False
    source_ms: Num | None = Field(default=None, description="the source's decode ms per token, timed against each "
                                    "type's move below")
    type_ms_saved: dict[str, Num] = Field(default_factory=dict, description="source tensor type -> decode ms per "
                                            "token saved when every tensor of it moves to the low type (head to head)")
    uniform_speedup: dict[str, Num] = Field(default_factory=dict, description="type -> decode speed-up of the whole "
                                            "file in it over the source, head to head (the forecast's order)")
    keep_type: str | None = Field(default=None, description="the type mixes keep their other groups in; None: "
                                  "each tensor's type in the source")
    groups: list[GroupSensitivity] = Field(default_factory=list)
    seconds: Num = 0.0


class SearchCandidate(Data):
    """One candidate of optkit search: how it is built, how far it got and why it stopped there."""

    name: str
    kind: Literal["source", "uniform", "mix", "recipe"]
    engine: str | None = None
    steps: list[dict[str, Any]] = Field(default_factory=list, description="recipe steps that rebuild it")
    low_share: Num | None = Field(default=None, description="mix: share of the mixable weights in the low type")
    stage: str = Field(description="the last stage it reached: forecast, kl, perplexity, benchmark")
    left: str | None = Field(default=None, description="why it left at that stage; None: it finished")
    predicted_kl: Num | None = Field(default=None, description="mix: the sum of its groups' sensitivities")
    kl: Num | None = None
    ppl_delta: Num | None = Field(default=None, description="perplexity vs the source, at the last stage scored")
    ppl_ci: tuple[Num, Num] | None = None
    ppl_tokens: int | None = None
    bytes_per_token: Num | None = Field(default=None, description="weights read per decoded token (forecast)")
    bound_tokens_per_s: Num | None = Field(default=None, description="memory bandwidth / bytes_per_token")
    timed_speedup: Num | None = Field(default=None, description="forecast: decode speed-up over the source as the "
                                      "sensitivity job timed it (uniform: its whole file; mix: the source's time less "
                                      "what its groups' moves saved)")
    speedup: Stats | None = Field(default=None, description="objective speed-up vs the source, paired in one process")
    size_mb: Num | None = None
    file: str | None = None


class StageTime(Data):
    stage: str
    candidates: int
    wall_s: Num
    worker_s: Num = Field(description="seconds the workers spent building and measuring (inside their processes)")


class SearchResult(Data):
    """optkit search's record: every candidate with the stage it left at and why, the per-tensor sensitivity it
    built mixes from, and where the time went."""

    source: str
    max_ppl_increase: Num
    time_budget_s: Num
    objective: str = "decode"
    candidates: list[SearchCandidate] = Field(default_factory=list)
    sensitivity: Sensitivity | None = None
    stages: list[StageTime] = Field(default_factory=list)
    wall_s: Num = 0.0
    bookkeeping_s: Num = Field(default=0.0, description="the search's own time outside any run and job: planning, "
                                 "choosing, writing")
    chosen: str | None = None
    notes: list[str] = Field(default_factory=list)
