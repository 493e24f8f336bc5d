"""The search's pure parts: tensor groups from GGUF names, the greedy order by sensitivity per byte saved against a
hand computation, mixes along it, the forecast of the types a candidate gives each tensor, and candidate lists."""

import re

import pytest

from optkit.search.candidates import bytes_per_token, tensor_types, uniform
from optkit.search.mix import mixes, order
from optkit.search.sensitivity import groups, members, quantize_params
from optkit.searchrecord import GroupSensitivity
from optkit.searchspec import SearchSpec

CLASSES = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]


def smollm_like(layers=30, kind="Q4_1"):
    """Tensor name -> type as in the shipped SmolLM2 file (tied embedding in Q8_0, norms F32)."""
    types = {"token_embd.weight": "Q8_0", "output_norm.weight": "F32"}
    for i in range(layers):
        types.update({f"blk.{i}.{c}.weight": kind for c in CLASSES})
        types.update({f"blk.{i}.attn_norm.weight": "F32", f"blk.{i}.ffn_norm.weight": "F32"})
    return types


def test_groups_cover_every_matrix_once_and_no_norm():
    types = smollm_like()
    g = groups(types, blocks=4)
    assert len(g) == 7 * 4 + 1 and "token_embd" in g and "ffn_down 0-7" in g and "ffn_down 24-29" in g
    covered = [n for p in g.values() for n in members(p, types)]
    matrices = [n for n in types if "norm" not in n]
    assert sorted(covered) == sorted(matrices)  # each matrix in exactly one group
    assert members(g["attn_v 8-15"], types) == [f"blk.{i}.attn_v.weight" for i in range(8, 16)]
    assert not re.search(g["ffn_down 0-7"], "blk.10.ffn_down.weight")  # 1 and 0 must not match 10


def test_greedy_order_is_kl_per_byte_saved_without_timings():
    rows = [GroupSensitivity(group=n, pattern=n, tensors=1, weights=w, bytes_saved=b, kl=kl)
            for n, w, b, kl in [("a", 100, 1000, 0.010), ("b", 100, 4000, 0.020), ("c", 100, 500, 0.001),
                                ("d", 100, 0, 0.001)]]
    # by hand: a 1e-5, b 5e-6, c 2e-6; d saves no bytes: its weights stand in (100 * 1e-3): 1e-2
    assert [r.group for r in order(rows)] == ["c", "b", "a", "d"] and [r.rank for r in order(rows)] == [1, 2, 3, 4]


def test_timed_order_and_mixes_at_halvings_of_the_kl():
    rows = [GroupSensitivity(group=n, pattern=n, tensors=1, weights=100, bytes_saved=b, kl=kl, ms_saved=ms)
            for n, b, kl, ms in [("e", 10, 0.002, 0.1), ("f", 9000, 0.001, 0.0), ("g", 10, 0.004, 0.4),
                                 ("h", 10, 0.030, 0.5)]]
    # KL per ms saved by hand: g 0.01, e 0.02, h 0.06; f saves no time (whatever its bytes): last, never moved
    assert [r.group for r in order(rows)] == ["g", "e", "h", "f"]
    made = mixes(rows, "Q4_0", points=3)  # cuts at 1/8, 1/4, 1/2 of the movable KL 0.036
    assert [m.groups for m in made] == [["g"], ["g", "e"]]  # 1/2 (0.018) still stops before h: 0.006 + 0.030
    assert made[0].predicted_kl == pytest.approx(0.004) and made[1].low_share == pytest.approx(0.5)
    assert len({m.name for m in made}) == len(made)


def test_forecast_types_and_bytes_match_the_formats():
    types = smollm_like(layers=2)
    sizes = {n: (28_311_552 if n == "token_embd.weight" else 576 if "norm" in n else 331_776) for n in types}
    widths = {n: 576 for n in types}
    params = quantize_params("Q4_0", [groups(types, 1)["ffn_down 0-1"]], None, True, None)
    from optkit.recipe import Step, Variant

    mix = Variant(name="m", engine="llamacpp", steps=[Step(method="gguf.quantize", params=params)])
    moved = tensor_types(mix, types, widths)
    assert moved["blk.1.ffn_down.weight"] == "Q4_0" and moved["blk.1.ffn_up.weight"] == "Q4_1"
    assert moved["token_embd.weight"] == "Q8_0"
    # Q4_0 is 18 bytes per 32 weights, Q4_1 20, Q8_0 34; the tied embedding is read whole for the output
    expected = 28_311_552 * 34 / 32 + 331_776 * (2 * 18 + 12 * 20) / 32
    assert bytes_per_token(moved, sizes) == pytest.approx(expected)
    q4k = Variant(name="k", engine="llamacpp", steps=[Step(method="gguf.quantize", params={"type": "Q4_K_M"})])
    fell = tensor_types(q4k, types, widths)  # 576-wide rows do not fit 256-weight K blocks: llama.cpp's fallback
    assert fell["blk.0.ffn_up.weight"] == "Q5_0" and fell["token_embd.weight"] == "Q8_0"


def test_uniform_candidates_skip_the_sources_own_type_and_need_imatrix_where_llamacpp_does(tmp_path):
    from optkit import checkpoints

    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF")
    ckpt = checkpoints.Checkpoint(given=str(path), kind="gguf", format="gguf", location=str(path))
    spec = SearchSpec(types=["Q4_1", "Q4_0", "IQ2_XXS"], imatrix_types=["Q4_0"])
    names = [v.name for v in uniform(ckpt, spec, smollm_like())]
    assert names == ["q4_0", "q4_0-imatrix", "iq2_xxs-imatrix"]
    v = uniform(ckpt, spec, smollm_like())[0]
    assert v.engine == "llamacpp" and v.steps[0].params == {"type": "Q4_0", "allow_requantize": True}


def test_timed_forecast_orders_candidates_and_prices_mixes_against_the_kept_file():
    from types import SimpleNamespace

    from optkit.search.mix import Mix
    from optkit.search.stages import _mix_speedup, priority
    from optkit.searchrecord import SearchCandidate, Sensitivity

    row = {"pattern": "x", "tensors": 1, "weights": 10, "bytes_saved": 1, "kl": 0.01}
    sens = Sensitivity(low="Q4_0", source_ms=8.0, keep_type="Q8_0", uniform_speedup={"Q8_0": 1.25, "Q6_K": 0.8},
                       groups=[GroupSensitivity(group="a", ms_saved=2.0, **row),
                               GroupSensitivity(group="b", ms_saved=1.0, **row)])
    mix = Mix(name="m", groups=["a"], patterns=["x"], predicted_kl=0.01, low_share=0.5)
    # kept groups in Q8_0, timed 1.25x the source; the move saves 2 of the Q8_0 file's 8 ms: 1.25 * 8 / 6
    assert _mix_speedup(sens, mix, sens.uniform_speedup) == pytest.approx(1.25 * 8 / 6)
    assert _mix_speedup(sens.model_copy(update={"keep_type": None}), mix, {}) == pytest.approx(8 / 6)
    assert _mix_speedup(sens, mix, {}) is None  # the kept file never timed
    rec = {"q8_0": dict(kind="uniform", timed_speedup=1.25, bytes_per_token=2e8),  # twice the bytes, timed fastest
           "q4_k_m": dict(kind="uniform", timed_speedup=1.1, bytes_per_token=1e8),
           "mix": dict(kind="mix", low_share=0.5, timed_speedup=1.2, bytes_per_token=1.5e8),
           "torch-bf16": dict(kind="uniform", bytes_per_token=3e8)}  # another engine: never timed, last
    s = SimpleNamespace(records={n: SearchCandidate(name=n, stage="forecast", **f) for n, f in rec.items()})
    assert sorted(rec, key=lambda n: priority(s, n)) == ["q8_0", "mix", "q4_k_m", "torch-bf16"]


def test_mixes_do_not_move_with_the_timing_of_another_types_group():
    """Three searches timed SmolLM2's Q8_0 embedding's saving at 0.72-1.61 ms and built different mixes: placing it
    among the Q4_1 groups rested on that timing. Now each cut is spent two ways, from KL and weights alone."""
    def rows(embd_ms):
        out = [GroupSensitivity(group=n, pattern=n, tensors=1, weights=100, bytes_saved=10, kl=kl, ms_saved=0.2,
                                kind="Q4_1") for n, kl in [("a", 0.002), ("b", 0.004), ("c", 0.008), ("d", 0.016)]]
        return out + [GroupSensitivity(group="embd", pattern="embd", tensors=1, weights=400, bytes_saved=200,
                                       kl=0.010, ms_saved=embd_ms, kind="Q8_0")]

    slow, fast = mixes(rows(0.05), "Q4_0", points=2), mixes(rows(5.0), "Q4_0", points=2)
    assert [m.groups for m in slow] == [m.groups for m in fast]
    # movable KL 0.040: the cut at 1/4 (0.010) takes a, b (0.006; c would make 0.014), or the embedding alone
    # (0.010, nothing left for the Q4_1 order); the cut at 1/2 (0.020) takes a, b, c (0.014), or the embedding
    # and a, b (0.016)
    assert [m.groups for m in slow] == [["a", "b"], ["embd"], ["a", "b", "c"], ["embd", "a", "b"]]
    assert slow[3].predicted_kl == pytest.approx(0.016) and slow[3].low_share == pytest.approx(600 / 800)
    assert len({m.name for m in slow}) == len(slow)


def test_a_mix_leaves_before_the_benchmark_when_a_deeper_one_of_its_type_is_within_budget():
    from types import SimpleNamespace

    from optkit.search.stages import nested
    from optkit.searchrecord import SearchCandidate

    moved = {"q4_0-14": ("Q4_0", {"a", "b"}), "q4_0-32": ("Q4_0", {"a", "b", "c"}),
             "q4_0-52": ("Q4_0", {"a", "b", "c", "d"}), "q4_0-71": ("Q4_0", {"embd", "a", "b", "c"}),
             "iq4_nl-25": ("IQ4_NL", {"a", "b", "c"}), "q8_0": None}
    records = {n: SearchCandidate(name=n, stage="perplexity", kind="mix" if m else "uniform")
               for n, m in moved.items()}
    records["q4_0-71"].left = "perplexity +12.3%: over the 5% budget"  # deeper, but out: it removes nobody
    s = SimpleNamespace(records=records, moved={n: (m[0], frozenset(m[1])) for n, m in moved.items() if m},
                        alive=lambda: [n for n, r in records.items() if r.left is None],
                        leave=lambda n, stage, why: setattr(records[n], "left", why))
    nested(s)
    assert [n for n, r in records.items() if r.left is None] == ["q4_0-52", "iq4_nl-25", "q8_0"]
    assert records["q4_0-14"].left.startswith("forecast slower: q4_0-52 moves its groups and 2 more to Q4_0")
