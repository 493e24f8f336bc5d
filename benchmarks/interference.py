"""Do optkit's speed-ups survive a busy machine? Runs one small recipe on SmolLM2 (fp32 baseline, bf16, torchao
int4 g32) quietly, then again with a CPU-burning process started only while the baseline is benchmarked (its
worker's log says when), and prints both sets of speed-ups with their flags. Every disturbed speed-up should be
within 10% of the quiet one, or flagged noisy with a reason that names the interference.

    OPTKIT_DATA=../shared/data .venv/bin/python benchmarks/interference.py [--quiet-runs 1] [--out /tmp/interf]

The last line is `worst unflagged change: N%` (largest |disturbed / quiet - 1| among unflagged speed-ups).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

RECIPE = """\
name: interference
model: {{checkpoint: {checkpoint}, dtype: float32}}
device: cpu
baseline: fp32
variants:
  - name: fp32
  - name: bf16
    steps: [{{method: cast, params: {{dtype: bfloat16}}}}]
  - name: torchao-int4-g32
    steps:
      - {{method: cast, params: {{dtype: bfloat16}}}}
      - {{method: torchao.int4_weight_only, params: {{group_size: 32}}}}
eval: {{perplexity: null, fidelity: null}}
bench: {{prompt_len: 128, gen_len: 32, warmup: 1, repeats: 4, max_repeats: 8, paired_rounds: {rounds}}}
"""
BURN = "import time\nwhile True:\n    pass\n"


def run(recipe: Path, out: Path, disturb: bool) -> dict:
    """optkit run; with disturb, one CPU burner from the moment the baseline starts benchmarking until its
    worker is done. Returns {variant: (speed-up, how, uncertain-because or None)} from the report."""
    cmd = [sys.executable, "-m", "optkit", "run", str(recipe), "--out", str(out), "--fresh"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    burner, log, done = None, out / "logs" / "fp32.log", out / "variants" / "fp32.json"
    while proc.poll() is None:
        if disturb and burner is None and log.is_file() and "[optkit] phase benchmarking" in log.read_text():
            burner = subprocess.Popen([sys.executable, "-c", BURN])
            print(f"  burner started while the baseline benchmarks (pid {burner.pid})", flush=True)
        if burner is not None and burner.poll() is None and done.is_file():
            burner.kill()
            print("  burner stopped: the baseline's worker is done", flush=True)
        time.sleep(0.2)
    if burner is not None and burner.poll() is None:
        burner.kill()
    if proc.returncode != 0:
        raise SystemExit(f"optkit run failed ({proc.returncode}); see {out / 'logs'}")
    from optkit.report.analysis import rows
    from optkit.results import read_report

    return {r.name: (r.speedup, r.speedup_how, r.speedup_noisy) for r in rows(read_report(out))
            if r.name != "fp32"}


def show(label: str, result: dict) -> None:
    print(label)
    for name, (speedup, how, why) in result.items():
        print(f"  {name:18s} {speedup:5.2f}x  {how:22s} " + (f"FLAGGED: {why}" if why else "unflagged"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default="smollm2-135m")
    ap.add_argument("--out", type=Path, default=Path("/tmp/optkit-interference"))
    ap.add_argument("--quiet-runs", type=int, default=1, help="quiet runs (each must raise no flag)")
    ap.add_argument("--paired-rounds", type=int, default=4, help="bench.paired_rounds (0: separate runs only)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    recipe = args.out / "interference.yaml"
    recipe.write_text(RECIPE.format(checkpoint=args.checkpoint, rounds=args.paired_rounds))
    quiet = []
    for i in range(args.quiet_runs):
        quiet.append(run(recipe, args.out / f"quiet{i}", disturb=False))
        show(f"quiet run {i + 1}:", quiet[-1])
    disturbed = run(recipe, args.out / "disturbed", disturb=True)
    show("disturbed run (a CPU burner while the baseline benchmarks):", disturbed)
    flags = sum(1 for q in quiet for _, _, why in q.values() if why)
    print(f"quiet runs: {len(quiet)}, flags raised in them: {flags}")
    worst = 0.0
    for name, (speedup, _, why) in disturbed.items():
        change = speedup / quiet[0][name][0] - 1
        print(f"  {name}: disturbed / quiet {change:+.1%}" + (" (flagged)" if why else ""))
        if not why:
            worst = max(worst, abs(change))
    print(f"worst unflagged change: {worst:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
