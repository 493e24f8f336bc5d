"""Does optkit's lm-eval adapter score like bare lm-eval, and how fast is it? Runs, in this process and one
after the other, (a) lm-eval's own `hf` model and (b) optkit's evaluator on the same HF folder, the same shipped
offline task YAML and the same limit, and prints both accuracies, per-document disagreements, both wall times
and the ratio optkit/bare. Model loading is timed apart from evaluation.

    OPTKIT_DATA=../shared/data .venv/bin/python benchmarks/lm_eval_parity.py [--checkpoint smollm2-135m]
        [--task arc_easy] [--limit 500] [--batch-size 8] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from optkit.engines.llamacpp.convert import hf_folder


def bare(folder: str, task: str, limit: int, batch_size: int, include: str) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    t0 = time.perf_counter()
    model = HFLM(pretrained=folder, dtype="float32", device="cpu", batch_size=batch_size)
    loaded = time.perf_counter()
    manager = TaskManager(include_path=include, include_defaults=False)
    out = lm_eval.simple_evaluate(model=model, tasks=[task], limit=limit, num_fewshot=0, log_samples=True,
                                  task_manager=manager, bootstrap_iters=1000, verbosity="ERROR")
    done = time.perf_counter()
    scores = out["results"][task]
    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    return {"acc": scores["acc,none"], "acc_norm": scores["acc_norm,none"], "load_s": loaded - t0,
            "eval_s": done - loaded, "per_doc": [int(s["acc"]) for s in samples]}


def optkit_side(ckpt, task: str, limit: int, batch_size: int) -> dict:
    from optkit import loading
    from optkit.evaluators.lm_eval import evaluate
    from optkit.recipe import TaskSpec

    t0 = time.perf_counter()
    lm = loading.load(ckpt, "float32", "cpu")
    loaded = time.perf_counter()
    res = {r.metric: r for r in evaluate(lm, [TaskSpec(name=task, limit=limit, batch_size=batch_size)])}
    done = time.perf_counter()
    return {"acc": res["acc"].value, "acc_norm": res["acc_norm"].value, "load_s": loaded - t0,
            "eval_s": done - loaded, "per_doc": res["acc"].details["samples"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default="smollm2-135m", help="alias, HF folder or .gguf")
    ap.add_argument("--task", default="arc_easy", help="a shipped offline task (multiple choice: acc, acc_norm)")
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, help="torch threads for both (default: torch's own)")
    args = ap.parse_args()
    if not os.environ.get("OPTKIT_DATA"):
        print("set OPTKIT_DATA to the offline data folder (e.g. ../shared/data)", file=sys.stderr)
        return 2

    import torch

    from optkit import checkpoints
    from optkit.errors import quiet_libraries
    from optkit.evaluators.lm_eval import resolve, write_task_dir

    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    task, offline = resolve(args.task)
    if not offline:
        print(f"{args.task} is not a shipped offline task", file=sys.stderr)
        return 2
    ckpt = hf_folder(checkpoints.resolve(args.checkpoint))
    print(f"checkpoint {args.checkpoint} -> {ckpt.location}; task {task}, limit {args.limit}, batch "
          f"{args.batch_size}, fp32 CPU, {torch.get_num_threads()} threads", flush=True)
    with tempfile.TemporaryDirectory(prefix="optkit-parity-") as tmp:
        include = str(write_task_dir(Path(tmp), os.environ["OPTKIT_DATA"]))  # the YAML optkit itself runs
        a = bare(ckpt.location, task, args.limit, args.batch_size, include)
        print(f"bare lm-eval done in {a['eval_s']:.1f}s", flush=True)
    b = optkit_side(ckpt, args.task, args.limit, args.batch_size)
    differ = sum(x != y for x, y in zip(a["per_doc"], b["per_doc"]))
    print(f"\n{'':10}{'acc':>8}{'acc_norm':>10}{'load s':>9}{'eval s':>9}")
    for name, r in (("bare", a), ("optkit", b)):
        print(f"{name:10}{r['acc']:8.4f}{r['acc_norm']:10.4f}{r['load_s']:9.1f}{r['eval_s']:9.1f}")
    print(f"\nacc difference optkit - bare: {b['acc'] - a['acc']:+.4f}, "
          f"acc_norm: {b['acc_norm'] - a['acc_norm']:+.4f}; "
          f"documents scored differently: {differ} of {len(a['per_doc'])}")
    print(f"eval time ratio optkit/bare: {b['eval_s'] / a['eval_s']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
