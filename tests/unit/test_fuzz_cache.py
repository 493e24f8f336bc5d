"""Fuzz every JSON file optkit reads back from its cache or a run folder with valid JSON of the wrong shape,
mutated real files, truncations and junk: the hash memo and the non-finite-weights memo (rebuilt, same answer),
the device-speed table (remeasured), eval cache entries (a miss), variant and baseline results (recomputed),
report.json and an artifact's optkit.json (one BadInput line). Thousands of cases, 0 tracebacks; the counts go
to the summary."""

from __future__ import annotations

import json
import math
import random

import pytest

from optkit.errors import BadInput

KEYS = ["name", "status", "accuracy", "value", "bench", "key", "key_parts", "median", "steps", "format", "source",
        "given", "model", "checkpoint", "needs", "bandwidth_gb_s", "matmul_gflop_s", "when", "task", "metric", "n",
        "higher_is_better", "variants", "environment", "run", "created", "baseline", "sha256", "kind", "details"]


def junk(rng: random.Random, depth: int = 0):
    """A random JSON value, biased to the names optkit's files use."""
    kind = rng.randrange(12 if depth < 4 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2**31, 2**64 + 1, -(2**70), 7])
    if kind == 3:
        return rng.choice([0.0, -0.0, 1e308, -1e-308, 0.5, math.nan, math.inf, -math.inf])
    if kind == 4:
        return rng.choice(["", "x", "NaN", "Infinity", "ok", "failed", "a" * 300, "\u0000", "replay", "hf"])
    if kind == 5:
        return "f" * 64 if rng.random() < 0.5 else "0" * 40
    if kind == 6:
        return []
    if kind < 9:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(KEYS): junk(rng, depth + 1) for _ in range(rng.randrange(5))}


def mutate(value, rng: random.Random):
    """A real file's content with one value somewhere replaced by junk (or a key dropped)."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        out = dict(value)
        if rng.random() < 0.15:
            del out[key]
        else:
            out[key] = mutate(out[key], rng)
        return out
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return value[:i] + [mutate(value[i], rng)] + value[i + 1:]
    return junk(rng)


def contents(rng: random.Random, real: list, count: int):
    """Texts: junk JSON, mutated real files, truncated real files, deep nesting, non-JSON."""
    texts = [json.dumps(r) for r in real]
    for i in range(count):
        kind = i % 5
        if kind == 0:
            yield json.dumps(junk(rng))
        elif kind in (1, 2) and real:
            yield json.dumps(mutate(rng.choice(real), rng))
        elif kind == 3 and texts:
            text = rng.choice(texts)
            yield text[: rng.randrange(len(text) + 1)]
        else:
            yield rng.choice(["[" * 100_000, "{" * 5000, "\xff\xfe", "", "nul", "1e999", '{"a": 1}{', "[]" * 3])


class Tally:
    def __init__(self, name: str):
        self.name, self.cases, self.outcomes, self.tracebacks = name, 0, {}, []

    def run(self, fn, text: str, label: str = "") -> None:
        self.cases += 1
        try:
            outcome = fn()
        except BadInput as exc:
            assert "\n" not in str(exc) and "; " in str(exc), str(exc)
            outcome = "refused with one line"
        except Exception as exc:  # noqa: BLE001 - what the fuzzer counts
            self.tracebacks.append(f"{label} {text[:80]!r}: {type(exc).__name__}: {exc}"[:300])
            return
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def line(self) -> str:
        parts = ", ".join(f"{n} {k}" for k, n in sorted(self.outcomes.items()))
        return f"{self.name}: {self.cases} cases ({parts}), {len(self.tracebacks)} tracebacks"


def check(tally: Tally, record_property, least: int = 500) -> None:
    record_property("fuzz", tally.line())
    assert tally.cases >= least and not tally.tracebacks, tally.tracebacks[:10]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv("OPTKIT_CACHE", str(folder))
    return folder


def test_fuzz_hash_memo_and_finite_memo(tmp_path, cache, tiny_model, record_property):
    from optkit.checkpoints import content_hash
    from optkit.finite import check_weights

    model = tmp_path / "model"
    model.mkdir()
    for f in tiny_model.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    truth = content_hash(str(model))
    real = [json.loads((cache / "hashes.json").read_text())]
    check_weights(str(model))
    real.append(json.loads((cache / "finite.json").read_text()))
    tally, rng = Tally("hash and finite-weights memos"), random.Random(0)
    for text in contents(rng, real, 1000):
        for name in ("hashes.json", "finite.json"):
            (cache / name).write_text(text)

        def both():
            digest = content_hash(str(model))
            assert isinstance(digest, str) and len(digest) == 64  # an entry of our shape is believed: it is a memo
            check_weights(str(model))
            return "same hash" if digest == truth else "hash from a memo entry of the right shape"

        tally.run(both, text)
    check(tally, record_property, 1000)


def test_fuzz_device_speed_table(cache, monkeypatch, record_property):
    from optkit.meters import roofline

    monkeypatch.setattr(roofline, "device_peaks", lambda device, dtype: (10.0, 100.0))
    roofline.device_speed("cpu")
    real = [json.loads((cache / "device-speed.json").read_text())]
    tally, rng = Tally("device-speed table"), random.Random(1)
    for text in contents(rng, real, 1500):
        (cache / "device-speed.json").write_text(text)

        def speed():
            bandwidth, gflops, where = roofline.device_speed("cpu")
            assert all(math.isfinite(v) and v > 0 for v in (bandwidth, gflops)), (bandwidth, gflops)
            return "cached" if where.startswith("cached") else "measured again"

        tally.run(speed, text)
    check(tally, record_property, 1500)


def test_fuzz_eval_cache_entries(cache, record_property):
    from optkit.evaluators import cache as evcache
    from optkit.results import EvalResult

    key = "k" * 32
    good = [EvalResult(task="t", metric="token_perplexity", value=3.5, stderr=0.1, n=10, higher_is_better=False)]
    evcache.store(key, good)
    real = [json.loads((evcache.root() / f"{key}.json").read_text())]
    tally, rng = Tally("eval cache entries"), random.Random(2)
    for text in contents(rng, real, 1500):
        (evcache.root() / f"{key}.json").write_text(text)

        def load():
            hit = evcache.load(key)
            assert hit is None or all(isinstance(r, EvalResult) for r in hit)
            return "a miss" if hit is None else "a hit"

        tally.run(load, text)
    check(tally, record_property, 1500)


def test_fuzz_run_folder_results_and_reports(tmp_path, record_property):
    from optkit.results import Report, VariantResult, read_report
    from optkit.reuse import previous

    variant = VariantResult(name="base", status="ok", key="a" * 24, key_parts={"recipe": "b" * 24})
    report = Report(run="r", created="now", checkpoint="c", baseline="base", variants=[variant],
                    environment={"optkit": "0", "python": "3", "device": "cpu"})
    real = [json.loads(variant.model_dump_json()), json.loads(report.model_dump_json())]
    results, reports, rng = Tally("run-folder results"), Tally("report.json"), random.Random(3)
    path = tmp_path / "variants" / "base.json"
    path.parent.mkdir()
    for text in contents(rng, real, 1500):
        path.write_text(text)
        (tmp_path / "report.json").write_text(text)
        results.run(lambda: "recomputed" if previous(path) is None else "kept if its key matches", text)
        reports.run(lambda: "read" if isinstance(read_report(tmp_path), Report) else "?", text)
    check(results, record_property, 1500)
    check(reports, record_property, 1500)


def test_fuzz_artifact_manifest(tmp_path, tiny_model, record_property):
    from optkit import artifacts, checkpoints

    folder = tmp_path / "art"
    folder.mkdir()
    real = [{"optkit": "0.1.0", "format": "replay", "model_format": "hf", "engine": "torch", "dtype": "float32",
             "needs": [], "source": {"given": str(tiny_model), "kind": "folder", "format": "hf", "sha256": "f" * 64,
                                     "last_seen": str(tiny_model)},
             "model": {"checkpoint": str(tiny_model)}, "steps": [{"method": "cast"}], "records": []}]
    tally, rng = Tally("artifact optkit.json"), random.Random(4)
    for text in contents(rng, real, 1000):
        (folder / "optkit.json").write_text(text)

        def read():
            ckpt = checkpoints.resolve(str(folder))
            manifest = artifacts.read(folder)
            assert isinstance(manifest["needs"], list) and ckpt.kind == "artifact"
            return "read"

        tally.run(read, text)
    check(tally, record_property, 1000)
