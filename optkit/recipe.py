"""Recipe: the typed, strict description of what to try, and its YAML loader.

Every error names the file, the line, the field and the fix, because a recipe is
usually written by hand and read by CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from optkit.calibration import CalibrationSpec
from optkit.errors import BadInput
from optkit.searchspec import SearchSpec
from optkit.units import parse_fraction
from optkit.yamlcheck import check_expansion, hint, line_of

SCHEMA_VERSION = 1
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME_MAX = 100  # a variant's files are <name>.json, .<name>.job.json.XXXXXXXX, <name>@<class>.log: under 255 bytes
DEFAULT_TIMEOUT_S = 3 * 3600.0  # a variant still running after 3 hours is stuck, not slow (recipe: timeout_s)
TRUST_REFUSED = "cannot be set in a recipe"
TRUST_FLAGS = {"trust_pickle": "--allow-pickle", "allow_pickle": "--allow-pickle",
               "trust_remote_code": "--trust-remote-code"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelSpec(Strict):
    checkpoint: str = Field(description="HF hub id, local HF folder, .gguf file, optkit artifact or alias")
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    revision: str | None = Field(default=None, min_length=1, description="a hub id's branch, tag or commit "
                                 "(default: main); the commit it resolves to is recorded in the report")

    @model_validator(mode="before")
    @classmethod
    def _no_trust(cls, data: Any) -> Any:
        """Trust comes from the person running optkit, per invocation, never from a file: a recipe or an
        artifact someone hands you must not be able to switch on pickle loading or remote code."""
        if isinstance(data, dict):
            for key, flag in TRUST_FLAGS.items():
                if key in data:
                    raise ValueError(f"{TRUST_REFUSED} (a file must not grant itself trust); remove it and pass "
                                     f"{flag} on the command line if you trust the checkpoint")
        return data


class AutoExcludeSpec(Strict):
    """Sensitivity-guided fallback: keep the most sensitive layers in higher precision until the budget holds."""

    max_ppl_increase: float = Field(default=0.05, description="budget on calibration perplexity, e.g. '5%'")
    max_excluded: float = Field(default=0.25, gt=0, le=1, description="most layers to keep, as a share of targets")
    calibration: CalibrationSpec = Field(default_factory=lambda: CalibrationSpec(samples=4, seq_len=256))
    rank_samples: int = Field(default=1, ge=1, description="calibration samples used to rank layers (1 per layer pass)")
    cost: Literal["time", "none"] = Field(
        default="time", description="time: rank layers by KL per ms of decode time their quantization saves (measured "
        "in place during decoding), so cheap sensitive layers are kept first; none: by KL alone")

    _fraction = field_validator("max_ppl_increase", mode="before")(parse_fraction)


class Step(Strict):
    method: str
    params: dict[str, Any] = Field(default_factory=dict)
    auto_exclude: AutoExcludeSpec | None = None


class Variant(Strict):
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX)
    engine: str | None = Field(default=None, description="the engine the checkpoint starts in (default: its "
                               "format's own; a .gguf file: PyTorch), e.g. llamacpp for a GGUF file as shipped")
    steps: list[Step] = Field(default_factory=list)
    timeout_s: float | None = Field(default=None, gt=0, description="kill the variant (its whole process group) "
                                    "after this long (default: the recipe's timeout_s)")


class PerplexitySpec(Strict):
    dataset: Literal["wikitext-2"] = "wikitext-2"
    path: str | None = Field(default=None, description="a local text file instead of the dataset")
    max_tokens: int = Field(default=4096, ge=16)
    window: int = Field(default=512, ge=8)
    stride: int = Field(default=256, ge=1)

    @model_validator(mode="after")
    def _stride_fits(self) -> PerplexitySpec:
        if self.stride > self.window:
            raise ValueError(f"stride ({self.stride}) must not exceed window ({self.window})")
        return self


class TaskSpec(Strict):
    """An lm-evaluation-harness task; short names (arc_easy, hellaswag, ...) run offline when OPTKIT_DATA is set."""

    name: str = Field(min_length=1)
    limit: int | None = Field(default=None, ge=1, description="first N documents (all when unset)")
    num_fewshot: int = Field(default=0, ge=0)
    batch_size: int = Field(default=8, ge=1)


class FidelitySpec(Strict):
    """Next-token distributions of each variant against the baseline's on a fixed prompt set."""

    samples: int = Field(default=8, ge=1, description="prompts, spread evenly over the text")
    seq_len: int = Field(default=128, ge=2, description="tokens per prompt; every position is compared")
    path: str | None = Field(default=None, description="a local text file instead of WikiText-2 test")


class EvalSpec(Strict):
    perplexity: PerplexitySpec | None = Field(default_factory=PerplexitySpec)
    tasks: list[TaskSpec] | None = None
    fidelity: FidelitySpec | None = Field(default_factory=FidelitySpec, description="KL divergence and top-1 "
                                          "agreement vs the baseline (runs when the plan has a baseline and others)")
    cache: bool = Field(default=True, description="reuse task and perplexity results of an unchanged model "
                        "(under $OPTKIT_CACHE/eval; OPTKIT_NO_CACHE=1 turns it off too)")


class ServingSpec(Strict):
    """An online serving run after the benchmark, where the engine has a server optkit drives (vLLM: its
    OpenAI-compatible server on 127.0.0.1 and `vllm bench serve` as the client): one point per concurrency,
    bench.prompt_len-token random prompts, bench.gen_len new tokens each, bounded in requests and time."""

    concurrency: list[int] = Field(default=[1, 4, 16], min_length=1, max_length=8,
                                   description="requests in flight together, one sweep point each")
    requests: int = Field(default=32, ge=1, le=10000, description="requests sent at each point")
    timeout_s: float = Field(default=600, gt=0, description="the most seconds one point may take")

    @field_validator("concurrency")
    @classmethod
    def _positive(cls, levels: list[int]) -> list[int]:
        if any(c < 1 for c in levels):
            raise ValueError("concurrency must be at least 1")
        return sorted(set(levels))


class BenchSpec(Strict):
    prompt_len: int = Field(default=128, ge=1)
    gen_len: int = Field(default=64, ge=2)
    warmup: int = Field(default=1, ge=0)
    repeats: int = Field(default=5, ge=1)
    max_repeats: int = Field(default=15, ge=1, description="extra repeats allowed when a measurement is noisy")
    batch_sizes: list[int] = Field(default=[1], min_length=1, description="decode throughput curve (batch 1 always)")
    prompt_lens: list[int] | None = Field(default=None, description="batch-1 time to first token at each of these "
                                          "prompt lengths too (prompt_len is always measured)")
    min_seconds: float = Field(default=2.0, ge=0, description="least decode time measured per batch size, on top "
                               "of `repeats`: fast models get more repetitions instead of a few lucky ones")
    roofline: bool = True
    paired_rounds: int = Field(default=4, ge=0, description="after its benchmark, each variant decodes in this many "
                               "rounds alternating with the baseline, in one process: the speed-ups the report "
                               "quotes, immune to drift between variants (0: off; skipped when both do not fit)")

    @field_validator("batch_sizes", "prompt_lens")
    @classmethod
    def _positive(cls, sizes: list[int] | None, info) -> list[int] | None:
        if sizes is None:
            return None
        if any(b < 1 for b in sizes):
            raise ValueError(f"{info.field_name.replace('_', ' ')} must be at least 1")
        return sorted(set(sizes) | ({1} if info.field_name == "batch_sizes" else set()))
    threads: int | None = Field(default=None, ge=1)
    serving: ServingSpec | None = Field(default=None, description="an online serving sweep after the benchmark "
                                        "(engines with a server: vLLM; others say they have none)")

    def prefill_lens(self) -> list[int]:
        return sorted(set(self.prompt_lens or []) | {self.prompt_len})


class WorkloadPoint(Strict):
    """One kind of request in the traffic: prompt and output length, and its share of the requests."""

    prompt: int = Field(ge=1, description="prompt tokens")
    output: int = Field(ge=1, description="new tokens generated")
    weight: float = Field(default=1.0, gt=0, description="relative share of requests (a histogram bin's count)")


Objective = Literal["decode", "latency", "ttft", "throughput"]


class WorkloadSpec(Strict):
    """The traffic the recommendation and the frontier rank for. The objective: decode (generated tokens/s once the
    prompt is in, today's ranking), latency (end-to-end ms per request: prompt then every new token), ttft (time to
    first token) or throughput (generated tokens/s over whole requests, prefill included, at `concurrency`).
    Unset: one point, bench's prompt_len and gen_len, concurrency 1, objective decode (the demo's shape)."""

    requests: list[WorkloadPoint] = Field(min_length=1, max_length=8, description="weighted (prompt, output) points; "
                                          "a histogram is its bins' centres weighted by their counts")
    concurrency: int = Field(default=1, ge=1, description="requests served together (decoded as one batch)")
    objective: Objective = "decode"


class GateSpec(Strict):
    max_ppl_increase: float | None = Field(default=None, description="e.g. '5%' or 0.05")
    min_speedup: float | None = Field(default=None, gt=0, description="decode tokens/s vs the baseline")
    max_acc_drop: float | None = Field(default=None, ge=0, description="largest absolute drop of any task "
                                       "accuracy (acc, acc_norm, ...), e.g. '2%' = 2 points")
    min_recovery: float | None = Field(default=None, gt=0, description="task accuracy / baseline's, e.g. 0.98")
    max_size_mb: float | None = Field(default=None, gt=0)
    max_memory_mb: float | None = Field(default=None, gt=0, description="peak memory during the benchmark")
    max_prefill_ms: float | None = Field(default=None, gt=0, description="time to first token (batch 1)")
    max_kl: float | None = Field(default=None, ge=0, description="mean KL(baseline || variant) of next-token "
                                 "distributions on the fidelity prompts, nats")
    min_top1_agreement: float | None = Field(default=None, ge=0, le=1, description="share of positions where the "
                                             "variant's most likely token is the baseline's, e.g. 0.9")
    variants: list[str] | None = Field(default=None, description="variants to gate (default: all but the baseline)")

    _fraction = field_validator("max_ppl_increase", "max_acc_drop", mode="before")(
        lambda v: None if v is None else parse_fraction(v)
    )

    def rules(self) -> bool:
        return any(v is not None for k, v in self.model_dump().items() if k != "variants")


class ExecutorSpec(Strict):
    """Where the variants run: one after another on this machine (local), or spread over a Ray cluster (ray)."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = Field(default=None, description="ray: an existing cluster (host:6379, or auto for the "
                                "one this machine joined); unset: start Ray on this machine for the run")
    retries: int = Field(default=0, ge=0, le=5, description="run a variant again when its worker process or node "
                         "died (killed, out of memory, node lost); errors and timeouts are not retried")
    cpus: int = Field(default=1, ge=1, description="ray: CPUs each variant holds, and its worker's threads while "
                      "building and evaluating (a benchmark on a CPU node has the whole node)")
    gpus: int = Field(default=1, ge=1, description="ray, device cuda: whole GPUs each variant holds (never a "
                      "fraction: two timings must not share a GPU)")
    shared: list[str] = Field(default_factory=list, description="ray: folders every node mounts at the same path; "
                              "with nodes on other machines, every local model and data path must lie under one")

    @model_validator(mode="after")
    def _address_is_ray(self) -> ExecutorSpec:
        if self.address and self.kind != "ray":
            raise ValueError("address is for the ray executor; set kind: ray or remove address")
        return self


class Recipe(Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = Field(pattern=NAME_PATTERN, max_length=NAME_MAX)
    model: ModelSpec
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    baseline: str | None = None
    variants: list[Variant] = Field(min_length=1)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    bench: BenchSpec | None = Field(default_factory=BenchSpec)
    gates: GateSpec | None = None
    executor: ExecutorSpec | None = None
    workload: WorkloadSpec | None = Field(default=None, description="the traffic to rank for (default: batch-1 "
                                          "decode after bench.prompt_len tokens, the demo's shape)")
    search: SearchSpec | None = Field(default=None, description="optkit search RECIPE: explore candidates within an "
                                      "accuracy and a time budget (optkit/search/); the variants are extra candidates")
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0, description="kill a variant still running after "
                             "this long (3 hours by default); a variant's own timeout_s wins")

    @model_validator(mode="after")
    def _names(self) -> Recipe:
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
        if self.baseline is None:
            self.baseline = names[0]
        elif self.baseline not in names:
            raise ValueError(f"baseline {self.baseline!r} is not a variant; choose one of {names}")
        if self.gates and self.gates.variants:
            unknown = [n for n in self.gates.variants if n not in names]
            if unknown:
                raise ValueError(f"gates.variants names unknown variants {unknown}; choose from {names}")
        return self


def parse_recipe(data: Any, source: str = "<recipe>", root: yaml.Node | None = None) -> Recipe:
    if not isinstance(data, dict):
        raise BadInput(f"{source}: a recipe must be a YAML mapping with at least 'name', 'model' and 'variants'")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # a misspelt key also shows up as a missing one: name the misspelling, it carries the fix
        err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        loc = tuple(err["loc"])
        if loc == ("model",) and TRUST_REFUSED in err["msg"]:  # point at the key itself, not its section
            loc += (next(k for k in TRUST_FLAGS if k in data["model"]),)
        field = ".".join(str(p) for p in loc) or "(top level)"
        line = line_of(root, loc)
        where = f"{source}:{line}" if line else source
        raise BadInput(f"{where}: {field}: {hint(err, Recipe)}") from None


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"recipe file not found: {path}; pass the path to a YAML recipe (examples in recipes/)")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise BadInput(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save the "
                       "recipe as UTF-8 YAML") from None
    return parse_text(text, str(path))


def parse_text(text: str, source: str = "<recipe>") -> Recipe:
    """A recipe from YAML text: every problem is one BadInput naming the source, line and fix."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(f"{where}: not valid YAML ({problem}); fix the syntax") from None
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # a scalar YAML cannot construct
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(f"{source}: a value cannot be read ({first}); fix or quote it") from None
    check_expansion(root, source)
    return parse_recipe(data, source, root)
