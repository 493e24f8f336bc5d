"""Which of optkit's speed measures agrees with a bare llama.cpp loop? Four ways to compare two GGUF files A and B
(e.g. the shipped Q4_1 file and a Q8_0 one), each taken once per cycle, cycles repeated, every process fresh:

  paired-vs-baseline  what the report ranked by before issue 26: each file in its own process decodes in rounds
                      alternating with the fp32 PyTorch baseline (bench.paired_speedup, `--paired-rounds` rounds of
                      `--gen-len` tokens), and the two files are compared as the ratio of their two ratios
  own-benchmark       each file's own `run_bench` in its own process (what `optkit bench` prints)
  bare                llama-cpp-python's own generate loop, no optkit code (optkit/engines/llamacpp/bare.py)
  head-to-head        both files in one process, interleaved rounds of at least `--round-s` seconds each
                      (duel.head_to_head: what the recommendation ranks competing candidates by now)

    python benchmarks/speed_measures.py A.gguf B.gguf [--threads 2] [--cycles 3] [--paired-rounds 3]

Prints per cycle and, at the end, per measure the median B/A decode ratio with its range over cycles. On a shared
machine run it several times: only figures taken close together compare, which is why every cycle takes all four.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHECKPOINT = "smollm2-135m"


def _like():
    """A loaded model whose tokenizer and config the GGUF files share (the fp32 PyTorch baseline)."""
    from optkit import checkpoints, loading

    return loading.load(checkpoints.resolve(CHECKPOINT), "float32", "cpu", engine="torch")


def _spec(args):
    from optkit.recipe import BenchSpec

    return BenchSpec(prompt_len=128, gen_len=args.gen_len, warmup=1, repeats=3, paired_rounds=args.paired_rounds,
                     threads=args.threads, min_seconds=2.0)


def child(args) -> dict:
    """One measure of one or two files in this (fresh) process."""
    from optkit.engines.llamacpp.engine import LlamaCppLM

    if args.child == "bare":
        from optkit.engines.llamacpp.bare import bare

        return {"tps": bare(args.files[0], args.threads, 5)["decode_tokens_per_s"]}
    files = [LlamaCppLM(f, threads=args.threads) for f in args.files]
    spec = _spec(args)
    if args.child == "paired":
        return legacy_paired(files[0], _like(), spec)
    if args.child == "own":
        from optkit.bench import run_bench

        return {"tps": run_bench(files[0], spec.model_copy(update={"roofline": False})).decode_tokens_per_s.median}
    from optkit.duel import head_to_head
    from optkit.workload import resolve

    duel = head_to_head(files[0], files[1], ("A", "B"), resolve(None, spec), spec, min_round_s=args.round_s)
    st = duel.speedup  # A over B; printed as B/A like the other measures
    return {"ratio": 1 / st.median, "low": 1 / st.ci_high, "high": 1 / st.ci_low, "rounds": st.n,
            "retried": duel.retried}


def legacy_paired(lm, base, spec) -> dict:
    """bench.paired_speedup as it was before issue 26: paired_rounds single repetitions of gen_len tokens per side,
    order swapped every round, the median per-round ratio; also each side's own tokens/s per round, so the
    baseline's speed can be compared between the processes whose ratios the report compared."""
    from optkit.meters.decode import Samples, one_rep, prompts
    from optkit.meters.energy import EnergyCounter

    for m in (lm, base):
        m.set_threads(spec.threads)
    prompt, energy = prompts(lm, 1, spec.prompt_len), EnergyCounter("cpu")
    mine, theirs = Samples(), Samples()
    for model in (lm, base):
        one_rep(model, prompt, spec.gen_len, energy, Samples())
    for i in range(spec.paired_rounds):
        for model, into in ((lm, mine), (base, theirs))[:: 1 if i % 2 == 0 else -1]:
            one_rep(model, prompt, spec.gen_len, energy, into)
    return {"ratio": statistics.median(v / b for v, b in zip(mine.tps, theirs.tps)), "rounds": spec.paired_rounds,
            "variant": mine.tps, "fp32": theirs.tps}


def _run(args, kind: str, files: list[str]) -> dict:
    cmd = [sys.executable, __file__, *files, "--child", kind, "--threads", str(args.threads), "--gen-len",
           str(args.gen_len), "--paired-rounds", str(args.paired_rounds), "--round-s", str(args.round_s)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{kind} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--gen-len", type=int, default=64)
    ap.add_argument("--paired-rounds", type=int, default=3)
    ap.add_argument("--round-s", type=float, default=1.0)
    ap.add_argument("--only", default="paired,own,bare,duel", help="measures to take, comma-separated")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    a, b = args.files
    wanted = args.only.split(",")
    ratios: dict[str, list[float]] = {k: [] for k in wanted}
    for cycle in range(args.cycles):
        line = []
        order = wanted if cycle % 2 == 0 else wanted[::-1]  # drift over a cycle hits the measures evenly
        for kind in order:
            if kind == "duel":
                got = _run(args, "duel", [a, b])
                ratios[kind].append(got["ratio"])
                line.append(f"head-to-head {got['ratio']:.3f} [{got['low']:.3f}-{got['high']:.3f}] "
                            f"({got['rounds']} rounds)")
                continue
            per = [_run(args, kind, [f]) for f in ((a, b) if cycle % 2 == 0 else (b, a))]
            per = per if cycle % 2 == 0 else per[::-1]
            key = "ratio" if kind == "paired" else "tps"
            ratios[kind].append(per[1][key] / per[0][key])
            what = "vs fp32" if kind == "paired" else "tok/s"
            line.append(f"{kind} A {per[0][key]:.2f} B {per[1][key]:.2f} {what} -> B/A {ratios[kind][-1]:.3f}")
            if kind == "paired":  # the baseline is another object in each file's process: how far apart were they?
                fp32 = [statistics.median(p["fp32"]) for p in per]
                line[-1] += f" (fp32 in A's process {fp32[0]:.1f}, in B's {fp32[1]:.1f} tok/s)"
        print(f"cycle {cycle + 1}: " + "; ".join(line), flush=True)
    for kind, rs in ratios.items():
        print(f"{kind:8s} B/A decode: median {statistics.median(rs):.3f} (range {min(rs):.3f}-{max(rs):.3f}, "
              f"{len(rs)} cycles)")


if __name__ == "__main__":
    main()
