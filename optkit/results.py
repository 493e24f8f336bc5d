"""Typed results and report.json. Users' CI parses report.json: add fields freely, rename nothing. A float that
is NaN or infinite is written as the string "NaN" / "Infinity" / "-Infinity" (finite.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from optkit.files import atomic_write
from optkit.finite import Data, Num
from optkit.searchrecord import SearchResult, Sensitivity
from optkit.stats import Stats

REPORT_SCHEMA_VERSION = 1


class Roofline(Data):
    """What bounds decode here (meters/roofline.py): the machine's measured peaks against the model's bytes."""

    bandwidth_gb_s: Num
    matmul_gflop_s: Num
    matmul_dtype: str
    params: int = Field(description="logical weight count (before quantization)")
    weight_bytes: int
    kv_bytes_per_token: int = Field(description="KV cache bytes of one sequence at the mean decode context")
    bound_tokens_per_s: Num = Field(description="batch-1 decode speed if only weight + KV bytes mattered")
    achieved_fraction: Num | None = None
    ridge_flops_per_byte: Num
    verdicts: list[str] = Field(default_factory=list)


class SkippedModule(Data):
    module: str
    reason: str


class StepRecord(Data):
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    seconds: Num = 0.0
    modules_changed: list[str] = Field(default_factory=list)
    modules_skipped: list[SkippedModule] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict, description="method-specific, e.g. per-layer sparsity")


class EvalResult(Data):
    task: str
    metric: str
    value: Num
    stderr: Num | None = None
    n: int
    higher_is_better: bool
    details: dict[str, Any] = Field(default_factory=dict)


class Energy(Data):
    status: Literal["ok", "unavailable"]
    joules_per_token: Num | None = None  # decode, batch 1, whole counter (idle included)
    reason: str | None = None
    source: str | None = None
    prefill_joules_per_token: Num | None = Field(default=None, description="per prompt token, batch 1")
    idle_watts: Num | None = Field(default=None, description="measured before the benchmark")
    joules_per_token_above_idle: Num | None = Field(default=None, description="decode energy minus idle x time")
    sampled_vs_counter: Num | None = Field(default=None, description="power-sampling integral / counter delta "
                                             "over the same decode runs; near 1 when the counter is right")


class ThroughputPoint(Data):
    batch_size: int
    decode_tokens_per_s: Stats  # all sequences together
    prefill_ms: Stats
    decode_seconds: Num | None = Field(default=None, description="decode time measured in all repetitions")


class PrefillPoint(Data):
    prompt_len: int
    prefill_ms: Stats  # batch 1: time to first token


class PairedSpeed(Data):
    """The variant and the baseline decoding in alternating rounds in one process: each round's ratio is one
    sample, so drift of the machine between variants cancels and a disturbance hits both halves of a round."""

    baseline: str
    rounds: int = 0
    decode_speedup: Stats | None = Field(default=None, description="variant tokens/s / baseline tokens/s, per round")
    prefill_speedup: Stats | None = Field(default=None, description="baseline prefill ms / variant prefill ms")
    skipped: str | None = Field(default=None, description="why no rounds were run (e.g. both do not fit in memory)")
    objective: Stats | None = Field(default=None, description="speed-up on the workload's objective, per round")
    objective_name: str | None = Field(default=None, description="decode, latency, ttft or throughput")
    run: int | None = Field(default=None, description="rounds run, contended or collapsed ones included")
    retried: int = Field(default=0, description="rounds run again: contended, or one side collapsed")
    round_s: Num | None = Field(default=None, description="least seconds of each side's half of a round")


class WorkloadPointFigures(Data):
    """One workload point's timings: batch = the workload's concurrency, `prompt` tokens in, `output` tokens out."""

    prompt: int
    output: int
    weight: Num = 1.0
    ttft_ms: Stats
    decode_tokens_per_s: Stats
    e2e_ms: Stats | None = None


class WorkloadFigures(Data):
    """The workload's objective for one variant (recipe `workload:`; optkit/workload.py), per pass over its points,
    and each point's time to first token, decode and end-to-end latency."""

    objective: str
    unit: str
    concurrency: int = 1
    value: Stats
    points: list[WorkloadPointFigures] = Field(default_factory=list)


class SideFigures(Data):
    """One model's medians over the clean rounds of a head-to-head, in the same units as its benchmark."""

    name: str
    objective: Num = Field(description="the workload's objective (tokens/s or ms, see HeadToHead.unit)")
    decode_tokens_per_s: Num
    ttft_ms: Num
    e2e_ms: Num


class HeadToHead(Data):
    """Two variants timed against each other in one process, interleaved rounds on the workload (optkit/duel.py):
    the comparison a decision between them rests on."""

    a: str
    b: str
    objective: str = Field(description="the workload objective ranked by: decode, latency, ttft or throughput")
    unit: str = ""
    rounds: int = Field(default=0, description="rounds run, retried ones included")
    retried: int = Field(default=0, description="rounds not used: contended, or one half collapsed")
    collapsed: int = Field(default=0, description="rounds where one half ran over 2x slower than that model's fast "
                           "halves (never used, whatever else is left)")
    round_s: Num = Field(default=0.0, description="least seconds each half of a round ran")
    speedup: Stats | None = Field(default=None, description="a's objective speed-up over b per round (> 1: a faster)")
    decode_speedup: Stats | None = Field(default=None, description="a's decode tokens/s / b's, per round")
    ttft_speedup: Stats | None = Field(default=None, description="b's time to first token / a's, per round")
    sides: list[SideFigures] = Field(default_factory=list)
    skipped: str | None = Field(default=None, description="why no rounds were run")


class ServingPoint(Data):
    """One concurrency level of an online serving run, as the engine's own client reports it."""

    concurrency: int
    requests: int
    completed: int
    seconds: Num = Field(description="wall time of the whole point")
    request_throughput: Num = Field(description="completed requests per second")
    output_throughput: Num = Field(description="generated tokens per second over all requests")
    ttft_ms: dict[str, Num] = Field(default_factory=dict, description="time to first token: mean, p50, p90, p99")
    tpot_ms: dict[str, Num] = Field(default_factory=dict, description="time per output token after the first")
    itl_ms: dict[str, Num] = Field(default_factory=dict, description="inter-token latency")


class ServingRun(Data):
    """An online serving sweep (bench.serving): the engine's server on 127.0.0.1, its own client."""

    server: str | None = Field(default=None, description="what served and what measured (e.g. vllm serve)")
    startup_seconds: Num | None = Field(default=None, description="the server's start, apart from the points")
    prompt_len: int = 0
    gen_len: int = 0
    points: list[ServingPoint] = Field(default_factory=list)
    note: str | None = Field(default=None, description="why no sweep ran, or why it stopped before its last point")


class BenchResult(Data):
    prefill_ms: Stats
    decode_tokens_per_s: Stats
    peak_memory_mb: Num | None = None
    peak_memory_source: str | None = None
    size_mb: Num | None = None
    energy: Energy
    prompt_len: int
    gen_len: int
    batch_size: int = 1
    threads: int | None = None
    throughput: list[ThroughputPoint] = Field(default_factory=list, description="the batch-size curve")
    roofline: Roofline | None = None
    e2e_ms: Stats | None = Field(default=None, description="batch 1: prefill + gen_len decode steps, the wall "
                                 "time a user waits for the whole answer")
    prefill_by_prompt_len: list[PrefillPoint] = Field(default_factory=list, description="batch-1 time to first "
                                                      "token at each of bench.prompt_lens (and prompt_len)")
    paired: PairedSpeed | None = Field(default=None, description="speed-ups against the baseline measured in "
                                       "alternating rounds in this variant's process (bench.paired_rounds)")
    batch_notes: list[str] = Field(default_factory=list, description="batch sizes asked for and not measured, "
                                   "and why (e.g. more sequences than the engine decodes together)")
    workload: WorkloadFigures | None = Field(default=None, description="the recipe's workload: its objective and "
                                             "each point's timings (the default workload: batch-1 decode)")
    serving: ServingRun | None = Field(default=None, description="the online serving sweep (bench.serving)")


class NodeRecord(Data):
    """Where a variant ran. Speed-ups compare only variants of the same hardware_class."""

    host: str
    cpu_model: str | None = None
    cpus: int | None = Field(default=None, description="logical CPUs of the machine (a Ray node: its CPU resource)")
    threads: int | None = Field(default=None, description="torch threads of the benchmark (else of the worker)")
    gpu_model: str | None = None
    gpu_count: int = 0
    gpu_driver: str | None = None
    node_id: str | None = Field(default=None, description="the Ray node id (ray executor)")
    hardware_class: str = Field(description="GPU count and model, or CPU model and threads; OPTKIT_HARDWARE_CLASS "
                                "on the machine overrides it")


class PhaseTime(Data):
    phase: str  # building, evaluating, waiting, benchmarking
    start: Num  # unix time
    end: Num


class TokenizerCheck(Data):
    """The tokenizer a model is scored with, held against the one it is served with (llama.cpp's for a GGUF) on a
    fixed sample: ids with and without special tokens, and decode(encode(text))."""

    model: str = Field(description="the model (file or folder) whose tokenizer was checked")
    scored_with: str = Field(description="the tokenizer optkit scores it with")
    reference: str = Field(description="the tokenizer it was held against")
    samples: int
    mismatches: int
    round_trip_failures: int
    result: Literal["agrees", "disagrees", "skipped", "native"] = Field(
        description="native: scored with the serving engine's own tokenizer, nothing to compare")
    detail: str = Field(default="", description="the first difference, or why the check was skipped")
    seconds: Num = 0.0


class LogitAgreement(Data):
    """One GGUF file's weights in two engines (llama.cpp, and PyTorch on the dequantized copy) on the same ids:
    they are the same weights, so their next-token distributions must nearly agree."""

    model: str
    engines: list[str]
    prompts: int = 0
    tokens: int = 0
    kl_mean: Num | None = Field(default=None, description="mean KL(llama.cpp || PyTorch) per position, nats")
    kl_max: Num | None = None
    top1_agreement: Num | None = None
    bound: str = Field(default="", description="what counts as agreeing")
    result: Literal["agrees", "disagrees", "skipped"] = "skipped"
    detail: str = ""
    seconds: Num = 0.0


class EngineRun(Data):
    """Facts of the engine run apart from its steady-state speed (vLLM: start-up and compilation take minutes)."""

    environment: str | None = Field(default=None, description="the engine's own virtual environment (envs.py)")
    versions: dict[str, str] = Field(default_factory=dict, description="key package versions in that environment")
    startup_seconds: dict[str, float] = Field(default_factory=dict, description="starting the engine: total, and "
                                              "the parts the engine reports (compile, engine_init); eager=1: "
                                              "no compilation")
    settings: dict[str, str] = Field(default_factory=dict, description="what the engine computes with, as it "
                                     "reports it (OpenVINO: precision hint, KV cache precision, decoding path)")


class VariantResult(Data):
    name: str
    status: Literal["ok", "failed", "skipped"]
    error: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)
    accuracy: list[EvalResult] = Field(default_factory=list)
    bench: BenchResult | None = None
    seconds: Num = 0.0
    warnings: list[str] = Field(default_factory=list)
    node: NodeRecord | None = None
    timeline: list[PhaseTime] = Field(default_factory=list, description="when each phase ran, unix time")
    attempts: int = 1
    crashed: bool = Field(default=False, description="the worker process or its node died without a result "
                          "(killed, out of memory, node lost); a retry may succeed")
    engine: str | None = Field(default=None, description="the engine the variant was measured in (registry name)")
    format: str | None = Field(default=None, description="the model's format after its steps (formats.py)")
    file: str | None = Field(default=None, description="the file to deploy, where the model is one file an engine "
                             "loads as it is (a GGUF: the checkpoint itself, or kept in the run's artifacts/)")
    key: str | None = Field(default=None, description="hash of everything the result depends on (reuse.py); a rerun "
                            "without --fresh keeps the result only when it is unchanged")
    key_parts: dict[str, str | None] = Field(default_factory=dict, description="the key's parts: recipe, source, "
                                             "eval, bench, data, versions")
    tokenizer_checks: list[TokenizerCheck] = Field(
        default_factory=list, description="the tokenizer the variant was scored with, checked against the serving "
        "engine's on a fixed sample, at load and after each conversion")
    logit_agreement: LogitAgreement | None = Field(
        default=None, description="for a GGUF source: the file in llama.cpp vs its dequantized copy in PyTorch")
    head_to_head: HeadToHead | None = Field(default=None, description="a duel job's result: two variants timed "
                                            "against each other in one process")
    sensitivity: Sensitivity | None = Field(default=None, description="a sensitivity job's result (optkit search)")
    engine_run: EngineRun | None = Field(default=None, description="an engine with a costly start or an "
                                         "environment of its own: what starting it cost and what it ran in")

    def metric(self, task: str, metric: str) -> EvalResult | None:
        return next((r for r in self.accuracy if r.task == task and r.metric == metric), None)


class Environment(Data):
    optkit: str
    python: str
    torch: str | None = None
    transformers: str | None = None
    device: str
    device_name: str | None = None
    threads: int | None = None
    git_commit: str | None = None
    platform: str | None = None


class SourceRecord(Data):
    """The checkpoint every variant starts from, pinned: its content hash, or a hub id's resolved commit."""

    given: str
    kind: str
    location: str
    revision: str | None = Field(default=None, description="hub ids: the branch, tag or commit asked for")
    commit: str | None = Field(default=None, description="hub ids: the commit it resolved to (None: unknown)")
    sha256: str | None = Field(default=None, description="local files and folders: content hash")


class Report(Data):
    schema_version: int = REPORT_SCHEMA_VERSION
    run: str
    created: str
    checkpoint: str
    source: SourceRecord | None = None
    recipe: dict[str, Any] = Field(default_factory=dict)
    environment: Environment
    baseline: str
    variants: list[VariantResult]
    class_baselines: list[VariantResult] = Field(
        default_factory=list,
        description="the baseline benchmarked again on each other hardware class the run used (speed-ups are per "
        "class)")
    baseline_again: VariantResult | None = Field(
        default=None, description="the baseline benchmarked once more after the last variant, when some speed-up had "
        "to come from separate runs: drift of the machine beyond its spread flags those speed-ups noisy")
    duels: list[HeadToHead] = Field(default_factory=list, description="variants competing for the recommendation, "
                                    "timed against each other in interleaved rounds (the tie rule reads these)")
    search: SearchResult | None = Field(default=None, description="optkit search: every candidate tried, the stage "
                                        "it left at and why, and the per-tensor sensitivity")


def write_model(path: Path, model: BaseModel) -> None:
    atomic_write(path, model.model_dump_json(indent=2))


def read_report(path: str | Path) -> Report:
    from optkit.errors import BadInput

    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise BadInput(f"report not found: {path}; pass a run directory or its report.json (optkit run writes them)")
    try:
        return Report.model_validate(json.loads(path.read_text()))
    except (ValueError, TypeError, RecursionError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BadInput(f"{path}: not an optkit report ({first}); regenerate it with optkit run") from None


def json_schema() -> dict[str, Any]:
    return Report.model_json_schema()
