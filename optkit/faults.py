"""Test-only fault injection, read by the worker process alone: OPTKIT_TEST_FAULTS="name=fault,..." makes the
named variants yield a NaN perplexity (nan_ppl), an infinite prefill latency (inf_latency), die while writing
their result (die_mid_write) or never write it (hang), so the executors' tests can check that one bad variant costs
only that variant.
Never set it outside tests."""

from __future__ import annotations

from pathlib import Path

from optkit.results import VariantResult

ENV = "OPTKIT_TEST_FAULTS"


def inject(cand: VariantResult, out: Path) -> None:
    """Test-only fault injection (ENV, read by the worker alone): a NaN perplexity, an infinite latency, or a
    worker killed while writing its result, or one that never ends (a time limit's test must not depend on how
    fast the work is), for the executors' fault tests. Never set it outside tests."""
    import os

    faults = dict(item.split("=", 1) for item in os.environ.get(ENV, "").split(",") if "=" in item)
    fault = faults.get(cand.name)
    if fault == "nan_ppl":
        for res in cand.accuracy:
            if res.metric == "token_perplexity":
                res.value = float("nan")
    elif fault == "inf_latency" and cand.bench is not None:
        cand.bench.prefill_ms = cand.bench.prefill_ms.model_copy(update={"median": float("inf"), "p90": float("inf")})
    elif fault == "hang":
        import time

        time.sleep(24 * 3600)
    elif fault == "die_mid_write":
        text = cand.model_dump_json(indent=2)
        out.write_text(text[: len(text) // 2])  # not atomic on purpose: what a crash during a plain write leaves
        os.kill(os.getpid(), 9)
