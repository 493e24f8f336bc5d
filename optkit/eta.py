"""How long a run has left, for its progress lines. Before any variant has finished, each variant's time is guessed
from the forecast (forecast.py: the bytes a decoded token moves and the FLOPs a prompt costs on this device,
over what the recipe asks to evaluate and benchmark); once variants finish, their own times take over: each
remaining variant is expected to take its guess scaled by how far the finished ones were off theirs, or, without
guesses, the mean time of the finished ones. Several variants running at once (the Ray executor) share the queue.

Everything here is arithmetic on a clock passed in, so tests drive it with a fake one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

STARTUP_S = 8.0  # a worker's start before its first step: Python, torch and transformers imported, the model loaded
# (half of it again where the baseline is rebuilt in the variant's process for the paired rounds)
EFFICIENCY = 0.5  # the share of the roofline bound (decode) and of peak matmul FLOP/s (prefill) real kernels reach


@dataclass
class Eta:
    guess: dict[str, float | None] = field(default_factory=dict)  # key -> forecast seconds, where the forecast had
    # one; None: a build no forecast prices, so neither the forecast nor other variants' times say how long it takes
    clock: Callable[[], float] = time.time
    started: dict[str, float] = field(default_factory=dict)  # key -> when it started
    took: dict[str, float | None] = field(default_factory=dict)  # finished key -> its seconds (None: it failed)
    keys: list[str] = field(default_factory=list)  # every key the run will finish, in order

    def add(self, key: str) -> None:
        if key not in self.keys:
            self.keys.append(key)

    def start(self, key: str) -> None:
        self.add(key)
        self.started.setdefault(key, self.clock())

    def finish(self, key: str, ok: bool = True) -> None:
        """A failed variant counts as done, but its time says nothing about the others'."""
        self.add(key)
        began = self.started.get(key)
        self.took[key] = self.clock() - began if ok and began is not None else None

    def expected(self, key: str) -> float | None:
        """Seconds the variant `key` should take in all, or None when nothing tells."""
        if self._unpriced(key):
            return None
        # a finished variant's time, except a build no forecast prices: its minutes say nothing about the others'
        done = {k: s for k, s in self.took.items() if s is not None and not self._unpriced(k)}
        if not done:
            return self.guess.get(key)
        guessed = {k: s for k, s in done.items() if self.guess.get(k) is not None}
        if self.guess.get(key) is not None and guessed:
            return self.guess[key] * sum(guessed.values()) / max(sum(self.guess[k] for k in guessed), 1e-9)
        return sum(done.values()) / len(done)

    def _unpriced(self, key: str) -> bool:
        return key in self.guess and self.guess[key] is None

    def left(self, key: str | None = None) -> float | None:
        """Seconds left for one running variant, or (key None) for the whole run; None when unknown."""
        now = self.clock()
        if key is not None:
            if key in self.took:
                return 0.0
            full = self.expected(key)
            return None if full is None else max(0.0, full - (now - self.started.get(key, now)))
        running = [k for k in self.started if k not in self.took]
        queued = [k for k in self.keys if k not in self.started and k not in self.took]
        parts = [self.left(k) for k in running] + [self.expected(k) for k in queued]
        if any(p is None for p in parts):
            return None
        ahead = [self.left(k) for k in running]
        # running variants go on side by side; the queue drains through as many slots as are busy now
        return max(ahead, default=0.0) + sum(self.expected(k) for k in queued) / max(1, len(running))

    def text(self) -> str:
        """"about 3:20 left (forecast)", "about 0:40 left", or "" when unknown or nothing is left."""
        if self.keys and all(k in self.took for k in self.keys):
            return ""
        seconds = self.left()
        if seconds is None:
            return ""
        source = " (forecast)" if not any(s is not None for s in self.took.values()) else ""
        return f"about {clock_text(seconds)} left{source}"


def clock_text(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour on."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def variant_seconds(tokens_per_s: float, params: int, gflops: float, bandwidth_gb_s: float, recipe,
                    paired: bool) -> float:
    """A variant's time from its forecast batch-1 decode bound and the model's weight count: start-up, perplexity
    (its sliding windows' forward passes), fidelity, and the benchmark (the roofline's own measurement of the
    device, then warm-up and repeats of prefill + decode at each batch size, at least min_seconds of decode each; a
    decode step at batch b taken as long as at batch 1, memory-bound), then the paired rounds against the baseline,
    rebuilt first. lm-eval tasks are not counted: their cost depends on the task."""
    flops = gflops * 1e9 * EFFICIENCY

    def prefill(tokens: int) -> float:
        return 2 * params * tokens / flops

    seconds = STARTUP_S
    ev = recipe.eval
    if ev and ev.perplexity:
        seconds += prefill(int(ev.perplexity.max_tokens * ev.perplexity.window / ev.perplexity.stride))
    if ev and ev.fidelity:
        seconds += prefill(ev.fidelity.samples * ev.fidelity.seq_len)
    bench = recipe.bench
    if bench:
        if bench.roofline:  # roofline.device_peaks, 6 copies of 2 x 512 MiB and 6 matmuls: an upper bound, since it
            # is measured once per machine and dtype and cached, but charged to every variant here
            seconds += 6 * 2 * 2**29 / (bandwidth_gb_s * 1e9) + 6 * 2 * 1024**3 / (gflops * 1e9)
        decode = tokens_per_s * EFFICIENCY
        for b in bench.batch_sizes:
            one = prefill(b * bench.prompt_len) + bench.gen_len / decode  # b sequences, one step at a time
            seconds += bench.warmup * one + max(bench.repeats * one, bench.min_seconds)
        seconds += sum(bench.repeats * prefill(n) for n in (bench.prompt_lens or []))
        if paired and bench.paired_rounds:  # the baseline rebuilt, then both models each round, and a warm-up
            seconds += STARTUP_S / 2 + 2 * (bench.paired_rounds + 1) * (prefill(bench.prompt_len)
                                                                         + bench.gen_len / decode)
    return seconds


def guesses(plan) -> dict[str, float | None]:
    """variant name -> forecast seconds; none when the forecast cannot be made cheaply or at all (an optkit artifact
    as the checkpoint, a device this machine does not have): the first variant's own time then sets the pace. None
    for a variant whose build no forecast prices (Method.unpriced_build): a guess without the build would read
    minutes short (18 minutes of GPTQ after SmoothQuant on SmolLM2 showed as "about 0:12 left")."""
    unpriced = {j.variant.name: None for j in plan.jobs if any(_unpriced(s.method) for s in j.variant.steps)}
    return _forecast(plan) | unpriced


def _forecast(plan) -> dict[str, float]:
    from optkit.forecast import forecast

    if plan.checkpoint.kind == "gguf" and not any(j.engine == "torch" for j in plan.jobs):
        return {}  # the forecast reads the converted folder, which preflight made only for a PyTorch variant
    try:
        f = forecast(plan)
    except Exception:  # a guess for a progress line is never worth failing or delaying a run over
        return {}
    if not f.variants or not f.params:
        return {}
    return {e.name: variant_seconds(e.bound_tokens_per_s, f.params, f.matmul_gflop_s, f.bandwidth_gb_s, plan.recipe,
                                    paired=e.name != plan.recipe.baseline) for e in f.variants}


def _unpriced(method: str) -> bool:
    from optkit import registry

    try:
        return registry.methods.cls(method).unpriced_build
    except Exception:  # an unknown method fails in preflight, not here
        return False
