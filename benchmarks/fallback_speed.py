"""What did auto_exclude's fallback cost in speed? Rebuilds, in one process, the original model, the model with
every targeted layer transformed, and the fallback's model (the layers a report says were kept stay as they
were), then times batch-1 decode of all three in interleaved rounds, so machine noise hits them alike.

    OPTKIT_DATA=../shared/data .venv/bin/python benchmarks/fallback_speed.py REPORT_DIR VARIANT [--rounds 6]

Reads the variant's first auto_exclude step from REPORT_DIR/report.json (checkpoint, dtype, method, params).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("variant")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=32, help="decode steps per timing (after a 128-token prompt)")
    args = ap.parse_args()

    import torch

    from optkit import checkpoints, loading, registry
    from optkit.engines.method import select
    from optkit.engines.torch.auto_exclude import decode_tokens_per_s
    from optkit.engines.torch.transform import linear_names
    from optkit.errors import quiet_libraries
    from optkit.results import read_report

    quiet_libraries()
    rep = read_report(args.report)
    cand = next((v for v in rep.variants if v.name == args.variant), None)
    record = next((s for s in (cand.steps if cand else []) if "auto_exclude" in s.details), None)
    if record is None:
        print(f"{args.variant}: no variant with an auto_exclude step in {args.report}", file=sys.stderr)
        return 2
    model_spec = rep.recipe["model"]
    lm = loading.load(checkpoints.resolve(model_spec["checkpoint"]), model_spec.get("dtype", "float32"))
    method = registry.get(record.method)
    params = method.Params.model_validate(record.params)
    targets = select(linear_names(lm.model), params)[0]
    kept = set(record.details["auto_exclude"]["kept"])
    builds = {"original": None, "all transformed": set(), f"fallback ({len(kept)} kept)": kept}
    built = {}
    for label, keep in builds.items():
        trial = lm.with_model(copy.deepcopy(lm.model))
        if keep is not None:
            method.transform(trial, params, [t for t in targets if t not in keep])
        built[label] = trial.model
    prompt = torch.randint(3, lm.vocab_size, (1, 128), generator=torch.Generator().manual_seed(0))
    speeds = {label: [] for label in built}
    for _ in range(args.rounds):  # one round each call, so every round is kept and printed
        for label, tps in zip(built, decode_tokens_per_s(list(built.values()), "cpu", prompt, args.steps, rounds=1)):
            speeds[label].append(tps)
    base = statistics.median(speeds["original"])
    print(f"{record.method} on {model_spec['checkpoint']}, batch-1 decode, {args.rounds} interleaved rounds, "
          f"{torch.get_num_threads()} threads")
    for label, vals in speeds.items():
        med = statistics.median(vals)
        print(f"  {label:24s} {med:6.1f} tokens/s  ({med / base:.2f}x)  rounds: {', '.join(f'{v:.1f}' for v in vals)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
