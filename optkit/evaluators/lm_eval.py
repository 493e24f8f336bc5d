"""lm-evaluation-harness tasks on the already-loaded variant (no save and reload): which task a name means
(offline copies when OPTKIT_DATA is set), running it through lm_eval_model.wrap(lm), and its results as
EvalResults with per-document samples. Short names such as arc_easy run the shipped offline tasks
(tasks/optkit_*.yaml) when OPTKIT_DATA is set, else the hub's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from optkit.errors import BadInput, RunError
from optkit.evaluators.lm_eval_model import wrap
from optkit.recipe import TaskSpec
from optkit.results import EvalResult

TASK_DIR = Path(__file__).parent / "tasks"
# short name -> the data file each offline task needs (the first split listed is the one scored)
OFFLINE = {"arc_easy": "arc_easy/test.jsonl", "arc_challenge": "arc_challenge/test.jsonl",
           "hellaswag": "hellaswag/validation.jsonl", "piqa": "piqa/validation.jsonl",
           "lambada_openai": "lambada_openai/test.jsonl", "wikitext": "wikitext-2/test.txt"}
BOOTSTRAP_ITERS = 1000  # only non-mean metrics (lambada perplexity) bootstrap; lm-eval's 100000 is slow on CPU


def resolve(name: str) -> tuple[str, bool]:
    """User task name -> (lm-eval task name, offline?). One-line BadInput when offline data is missing."""
    short = name.removeprefix("optkit_")
    root = os.environ.get("OPTKIT_DATA")
    if short not in OFFLINE or (not root and short == name):
        return name, False  # a hub task, run by lm-eval as usual
    if not root:
        raise BadInput(f"task {name} reads local data but OPTKIT_DATA is not set; set OPTKIT_DATA to a folder "
                       f"holding {OFFLINE[short]} (laid out like shared/data), or use the hub task name "
                       f"{short} on a machine with network")
    path = Path(root).expanduser() / OFFLINE[short]
    if not path.is_file():
        raise BadInput(f"task {name}: {path} not found (OPTKIT_DATA={root}); set OPTKIT_DATA to a folder holding "
                       f"{OFFLINE[short]}, or unset it to use the hub task {short} on a machine with network")
    return f"optkit_{short}", True


def check_names(names: list[str]) -> tuple[int, str, str] | None:
    """(index, name, why) of the first task lm-eval does not know, or None. Offline names are known by
    definition; any other name costs one index of lm-eval's task registry (a few seconds), so only then."""
    hub = [(i, n) for i, n in enumerate(names) if not resolve(n)[1]]
    if not hub:
        return None
    from lm_eval.tasks import TaskManager

    known = TaskManager().all_tasks
    for i, name in hub:
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, [*known, *OFFLINE], n=1)
            hint = f"did you mean {close[0]!r}?" if close else "`lm_eval ls tasks` lists them"
            return i, name, f"unknown lm-eval task {name!r}; {hint} (offline with OPTKIT_DATA: {', '.join(OFFLINE)})"
    return None


def write_task_dir(dest: Path, data_root: str | Path) -> Path:
    """Copy the shipped task YAML into dest with @DATA@ filled in (lm-eval does not expand variables)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    quoted = str(Path(data_root).expanduser().resolve()).replace("\\", "\\\\").replace('"', '\\"')
    for src in TASK_DIR.glob("*.yaml"):
        (dest / src.name).write_text(src.read_text().replace("@DATA@", quoted))
    shutil.copy(TASK_DIR / "optkit_utils.py", dest / "optkit_utils.py")  # `!function` resolves next to the YAML
    return dest


def _results(name: str, task: str, out: dict, spec: TaskSpec, offline: bool) -> list[EvalResult]:
    scores, better = out["results"][task], out["higher_is_better"][task]
    samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
    n = int(out["n-samples"][task]["effective"])
    results = []
    for key, value in scores.items():
        metric, _, filt = key.partition(",")
        if not filt or "_stderr" in metric or not isinstance(value, (int, float)):
            continue
        se = scores.get(f"{metric}_stderr,{filt}")
        per = [s.get(metric) for s in samples]
        details = {"lm_eval_task": task, "num_fewshot": spec.num_fewshot, "limit": spec.limit,
                   "data": "offline (OPTKIT_DATA)" if offline else "hub",
                   "doc_ids": [s["doc_id"] for s in samples]}
        if all(isinstance(v, (int, float)) and v in (0, 1) for v in per):
            details["samples"] = [int(v) for v in per]  # correct or not: flips between variants count from this
        elif all(isinstance(v, (int, float)) for v in per):
            details["samples"] = [round(float(v), 5) for v in per]
        elif metric == "perplexity":  # per-doc loglikelihood comes as (ll, greedy)
            details["samples"] = [round(float(v[0]), 5) for v in per]
        if metric == "acc" and all(isinstance(s.get("filtered_resps"), list) for s in samples):
            # chosen answer: argmax of the raw choice loglikelihoods (multiple-choice tasks)
            lls = [[r[0] if isinstance(r, (list, tuple)) else r for r in s["filtered_resps"]] for s in samples]
            if all(isinstance(x, float) for row in lls for x in row) and all(len(r) > 1 for r in lls):
                details["chosen"] = [max(range(len(r)), key=r.__getitem__) for r in lls]
        results.append(EvalResult(
            task=name.removeprefix("optkit_"), metric=metric if filt == "none" else f"{metric}[{filt}]",
            value=float(value), stderr=float(se) if isinstance(se, (int, float)) else None, n=n,
            higher_is_better=bool(better.get(metric, True)), details=details))
    return results


def evaluate(lm, specs: TaskSpec | list[TaskSpec]) -> list[EvalResult]:
    """Run each task with lm-eval on the loaded model; one EvalResult per (task, metric)."""
    specs = [specs] if isinstance(specs, TaskSpec) else list(specs)
    resolved = [(s, *resolve(s.name)) for s in specs]  # fail on missing data before any heavy work
    import lm_eval
    from lm_eval.tasks import TaskManager

    results: list[EvalResult] = []
    with tempfile.TemporaryDirectory(prefix="optkit-tasks-") as tmp:
        offline = any(off for _, _, off in resolved)
        include = str(write_task_dir(Path(tmp), os.environ["OPTKIT_DATA"])) if offline else None
        # indexing lm-eval's ~15k built-in tasks takes seconds: skip it when only offline tasks run
        manager = TaskManager(include_path=include,
                              include_defaults=not all(off for _, _, off in resolved))
        for spec, task, off in resolved:
            if task not in manager.all_tasks:
                raise BadInput(f"unknown lm-eval task {spec.name!r}; offline: {', '.join(OFFLINE)} "
                               f"(with OPTKIT_DATA), or any task `lm_eval ls tasks` lists")
            try:
                out = lm_eval.simple_evaluate(
                    model=wrap(lm, spec.batch_size), tasks=[task], limit=spec.limit, num_fewshot=spec.num_fewshot,
                    log_samples=True, task_manager=manager, bootstrap_iters=BOOTSTRAP_ITERS, verbosity="ERROR")
            except (ConnectionError, OSError) as exc:
                if off:
                    raise
                raise RunError(f"task {spec.name}: cannot load its data from the hub ({type(exc).__name__}); set "
                               f"OPTKIT_DATA to a local data folder (offline: {', '.join(OFFLINE)})") from exc
            results += _results(spec.name, task, out, spec, off)
    return results


def cache_what(spec: TaskSpec) -> dict:
    """What a task result depends on besides the model: its settings, its definition and its data files."""
    import hashlib

    task, offline = resolve(spec.name)
    what = {"kind": "lm_eval", "task": task, "limit": spec.limit, "num_fewshot": spec.num_fewshot}
    if offline:
        short = task.removeprefix("optkit_")
        data = Path(os.environ["OPTKIT_DATA"]).expanduser() / OFFLINE[short]
        st = data.stat()
        shipped = sorted(TASK_DIR.glob(f"{task}*.yaml")) + [TASK_DIR / "optkit_utils.py"]
        what |= {"data": [str(data.resolve()), st.st_size, st.st_mtime_ns],
                 "definition": hashlib.sha256(b"".join(p.read_bytes() for p in shipped)).hexdigest()}
    return what
