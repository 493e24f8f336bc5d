"""The figures issue 26's "done when" asks for, printed from real runs on the demo model (run it on a quiet machine;
each search is `optkit search` as a user runs it, in a fresh folder):

    OPTKIT_DATA=../shared/data .venv/bin/python benchmarks/search_demo.py [--runs 3] [--time 30] [--out DIR]
    OPTKIT_DATA=../shared/data .venv/bin/python benchmarks/search_demo.py --workloads-only

1. `optkit search smollm2-135m --budget 5% --time T` RUNS times (recipes/search-demo.yaml): per run the winner, its
   mix (the types its file holds and the groups moved), its decode speed-up over the shipped Q4_1 file (paired: the
   two in one process, interleaved rounds) with the interval, its perplexity change on 4,096 tokens with the paired
   CI, the wall time, the bookkeeping share; when no candidate reaches 1.3x, every candidate with where it stopped.
2. Whether the runs recommend the same file (or state the same tie).
3. recipes/workloads-demo.yaml run for a long-prompt workload (2,000-token prompts, 100 new tokens) and a chat one
   (200 / 200), both ranked by end-to-end latency: each recommendation with the measured time to first token and
   decode speed it rests on.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 1.3


def optkit(*args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "optkit", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        sys.exit(f"optkit {' '.join(args)} failed ({done.returncode}): {done.stderr[-3000:]}")
    return time.perf_counter() - started


def mix_text(cand) -> str:
    """The winner's recipe in words: its type and the tensors moved, and what its file holds."""
    from collections import Counter

    from optkit.gguf_header import read

    step = next((s for s in cand.steps if s["method"] == "gguf.quantize"), None)
    if step is None:
        return "the source file as it is"
    held = Counter(read(cand.file).tensor_types.values()) if cand.file and Path(cand.file).is_file() else {}
    moved = next(iter(step["params"].get("tensor_types", {})), None)
    return (f"gguf.quantize {step['params']['type']}" + (f" on tensors matching {moved}" if moved else "")
            + (", importance matrix" if step["params"].get("imatrix") else "")
            + (f"; file holds {dict(held)}" if held else ""))


def one_search(out: Path, minutes: float) -> dict:
    from optkit.results import read_report

    wall = optkit("search", "recipes/search-demo.yaml", "--time", str(minutes), "-o", str(out))
    report = read_report(out)
    res = report.search
    chosen = next(c for c in res.candidates if c.name == res.chosen)
    from optkit.report.wording import recommend, recommendation

    headline = recommend(report)[0]
    print(f"\n{out.name}: {wall / 60:.1f} min wall ({res.wall_s / 60:.1f} in the search), bookkeeping "
          f"{res.bookkeeping_s:.0f} s = {res.bookkeeping_s / res.wall_s:.1%} of the search's wall time")
    print(f"  recommendation: {headline}")
    sp = chosen.speedup
    speed = f"{sp.median:.2f}x (95% CI {sp.ci_low:.2f}-{sp.ci_high:.2f}, {sp.n} rounds)" if sp else "1.00x (the source)"
    ci = f" [{chosen.ppl_ci[0]:+.1%}, {chosen.ppl_ci[1]:+.1%}]" if chosen.ppl_ci else ""
    print(f"  winner {chosen.name}: {mix_text(chosen)}")
    print(f"    decode vs the shipped Q4_1 file, paired in one process: {speed}")
    print(f"    perplexity vs the source: {chosen.ppl_delta or 0:+.2%}{ci} on {chosen.ppl_tokens} tokens")
    reached = sp is not None and sp.median >= TARGET
    print(f"    >= {TARGET}x within the budget: {'yes' if reached else 'no'}")
    if not reached:
        from optkit.report.search import search_lines

        print("  every candidate and where it stopped:")
        print("\n".join("    " + line for line in search_lines(res)[1:]))
    tied = recommendation(report).tied
    return {"chosen": res.chosen, "tie": " and ".join([res.chosen, *tied]) if tied else None}


def workloads(out: Path) -> None:
    from optkit.report.wording import recommend
    from optkit.results import read_report

    for name, points in (("long-prompt", "2000/100"), ("chat", "200/200")):
        folder = out / f"workload-{name}"
        optkit("run", "recipes/workloads-demo.yaml", "--workload", points, "--objective", "latency", "-o",
               str(folder), "--fresh")
        report = read_report(folder)
        print(f"\n{name} ({points}, end-to-end latency): {recommend(report)[0]}")
        for c in report.variants:
            fig = c.bench.workload if c.bench else None
            if fig and fig.points:
                p = fig.points[0]
                print(f"  {c.name}: TTFT {p.ttft_ms.median:.0f} ms, decode {p.decode_tokens_per_s.median:.1f} tok/s, "
                      f"end to end {fig.value.median:.0f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--time", type=float, default=30.0, help="each search's time budget, minutes")
    ap.add_argument("--out", type=Path, default=Path("/tmp/optkit-search-demo"))
    ap.add_argument("--workloads-only", action="store_true")
    ap.add_argument("--no-workloads", action="store_true", help="the searches only")
    args = ap.parse_args()
    if not args.workloads_only:
        runs = [one_search(args.out / f"run{i + 1}", args.time) for i in range(args.runs)]
        same = len({(r["chosen"], r["tie"]) for r in runs}) == 1
        print(f"\nacross {len(runs)} runs the recommendation is {'the same' if same else 'NOT the same'}: "
              + "; ".join(f"{r['chosen']}" + (f" ({r['tie']} tie)" if r["tie"] else "") for r in runs))
    if not args.no_workloads:
        workloads(args.out)


if __name__ == "__main__":
    main()
