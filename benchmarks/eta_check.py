"""How good is the first ETA? The progress lines' time left comes from the forecast (eta.guesses) until a variant
finishes. This prints, for a finished run, each variant's forecast seconds beside the seconds its worker took
(VariantResult.seconds: start-up, build, evaluation, benchmark) and their ratio, and the run's total both ways.
Only the first variant's guess is ever shown alone; after it, the guesses are scaled by how far it was off, so the
spread of the ratios (not their level) is what the later ETAs inherit.

    OPTKIT_DATA=../shared/data .venv/bin/python benchmarks/eta_check.py recipes/demo.yaml reports/demo

Run it on a quiet machine: on a busy one the workers' times stretch and the ratios say more about the load.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipe", type=Path)
    parser.add_argument("run_dir", type=Path, help="a finished run of that recipe (its report.json)")
    args = parser.parse_args()

    from optkit import pipeline
    from optkit.eta import clock_text, guesses
    from optkit.recipe import load_recipe
    from optkit.results import read_report

    plan = pipeline.plan(load_recipe(args.recipe), str(args.recipe), base_dir=args.recipe.parent)
    guess = guesses(plan)
    took = {v.name: v.seconds for v in read_report(args.run_dir).variants if v.status == "ok"}
    if not guess:
        print("no forecast for this recipe (an artifact as the checkpoint, or a GGUF file no variant runs in PyTorch)")
        return
    width = max(len(n) for n in guess)
    print(f"{'variant':<{width}}  forecast   actual   actual/forecast")
    for name, seconds in guess.items():
        real = took.get(name)
        ratio = f"{real / seconds:.2f}" if real else "-"
        print(f"{name:<{width}}  {clock_text(seconds):>8}  {clock_text(real) if real else '-':>7}   {ratio}")
    both = [n for n in guess if n in took]
    forecast, actual = sum(guess[n] for n in both), sum(took[n] for n in both)
    print(f"{'total':<{width}}  {clock_text(forecast):>8}  {clock_text(actual):>7}   {actual / forecast:.2f}")


if __name__ == "__main__":
    main()
