"""lm-evaluation-harness tasks on the already-loaded variant (no save and reload).

`wrap(lm)` adapts any LoadedModel (engines/base.py: tokenizer, logits, start/step, repeat_cache) to lm-eval's LM API,
tokenizing the way lm-eval's own `hf` model does so scores compare with published ones. Short names such
as arc_easy run the shipped offline tasks (tasks/optkit_*.yaml) when OPTKIT_DATA is set, else the hub's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import nullcontext
from functools import lru_cache
from pathlib import Path

from optkit.errors import BadInput, RunError
from optkit.recipe import TaskSpec
from optkit.results import EvalResult

TASK_DIR = Path(__file__).parent / "tasks"
# short name -> the data file each offline task needs (the first split listed is the one scored)
OFFLINE = {"arc_easy": "arc_easy/test.jsonl", "arc_challenge": "arc_challenge/test.jsonl",
           "hellaswag": "hellaswag/validation.jsonl", "piqa": "piqa/validation.jsonl",
           "lambada_openai": "lambada_openai/test.jsonl", "wikitext": "wikitext-2/test.txt"}
# multiple-choice requests share a context; prefilling it once and scoring the choices on its cache pays only
# for long contexts: for short ones (arc, piqa, hellaswag) two forward calls per question cost more than
# batching whole requests 8 at a time
SHARED_MIN_CONTEXT = 256
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


def _max_length(lm) -> int:
    config = lm.config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        if isinstance(getattr(config, attr, None), int):
            return getattr(config, attr)
    return 2048  # lm-eval's hf default


@lru_cache(maxsize=1)
def _lm_class():
    """Built on first use so importing optkit never imports lm_eval or torch."""
    import torch
    from lm_eval.api.model import TemplateLM
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    from optkit.progress import Counter

    class OptkitLM(TemplateLM):
        def __init__(self, lm, batch_size: int = 8):
            super().__init__()
            self.lm, self.batch_size, self.max_length = lm, batch_size, _max_length(lm)
            self.tokenizer = lm.tokenizer

        @property
        def eot_token_id(self) -> int:
            return self.tokenizer.eos_token_id

        @property
        def prefix_token_id(self) -> int:
            # as lm-eval's hf model: BOS if the tokenizer has one, else EOS
            bos = self.tokenizer.bos_token_id
            return bos if bos is not None else self.eot_token_id

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            # None keeps the tokenizer's own default, as lm-eval's hf model does without add_bos_token
            extra = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
            return self.tokenizer.encode(string, **extra)

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            # multiple-choice requests share their context: prefill it once and score the choices on its cache
            out: list = [None] * len(requests)
            groups: dict[tuple, list[int]] = {}
            for i, (_, ctx, cont) in enumerate(requests):
                if len(ctx) >= SHARED_MIN_CONTEXT and len(ctx) + len(cont) <= self.max_length + 1:
                    groups.setdefault(tuple(ctx), []).append(i)
            shared = [(list(ctx), idx) for ctx, idx in groups.items() if len(idx) > 1]
            with Counter("lm-eval: shared contexts scored", len(shared)) if len(shared) > 1 else nullcontext() as c:
                for ctx, idx in shared:
                    self._shared(ctx, idx, requests, out)
                    c and c.advance()
            rest = [i for i in range(len(requests)) if out[i] is None]
            for i, res in zip(rest, self._plain([requests[i] for i in rest], disable_tqdm)):
                out[i] = res
            for (key, _, _), res in zip(requests, out):
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, res)
            return out

        def _shared(self, ctx: list[int], idx: list[int], requests, out: list) -> None:
            last, past = self.lm.start(torch.tensor([ctx]))
            past = self.lm.repeat_cache(past, len(idx))
            if past is None:
                return  # a cache the engine cannot copy per choice (e.g. ONNX Runtime): score the plain way
            conts = [requests[i][2] for i in idx]
            width = max(len(c) for c in conts)
            logits, _ = self.lm.logits(torch.tensor([c + [self.eot_token_id] * (width - len(c)) for c in conts]), past)
            for row, cont, i in zip(logits, conts, idx):
                # the first choice token is predicted by the context's last position
                preds = torch.cat([last.float().to(row.device), row[:len(cont) - 1]])
                out[i] = self._score(preds, cont)

        def _score(self, logits, cont: list[int]) -> tuple[float, bool]:
            logp = torch.log_softmax(logits.float(), dim=-1)
            target = torch.tensor(cont, device=logp.device)
            return float(logp.gather(1, target[:, None]).sum()), bool((logp.argmax(-1) == target).all())

        def _plain(self, requests, disable_tqdm: bool = False):
            # longest first, so each batch holds similar lengths and right padding wastes little; padding on
            # the right never changes a causal model's logits at the real positions
            # requests whose model input is the same token sequence (choices that differ only in their last
            # token, e.g. one-token answers) share one forward pass, as lm-eval's hf model does
            same: dict[tuple, list[int]] = {}
            for i, (_, ctx, cont) in enumerate(requests):
                same.setdefault(tuple((ctx + cont)[-(self.max_length + 1):][:-1]), []).append(i)
            inputs = sorted(same, key=len, reverse=True)
            out: list = [None] * len(requests)
            bar = Counter("lm-eval: requests scored", len(requests)) if not disable_tqdm and len(requests) > 1 \
                else None
            for lo in range(0, len(inputs), self.batch_size):
                chunk = inputs[lo:lo + self.batch_size]
                width = max(len(x) for x in chunk)
                batch = torch.tensor([list(x) + [self.eot_token_id] * (width - len(x)) for x in chunk])
                logits, _ = self.lm.logits(batch)
                for row, inp in zip(logits, chunk):
                    for i in same[inp]:
                        cont = requests[i][2]
                        out[i] = self._score(row[len(inp) - len(cont):len(inp)], cont)
                if bar:
                    bar.advance(sum(len(same[inp]) for inp in chunk))
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
            results = []
            for req in requests:
                windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                    token_list=self.tok_encode(req.args[0]), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)]
                results.append(sum(ll for ll, _ in self._loglikelihood_tokens(
                    [(None, c, t) for c, t in windows], disable_tqdm=True)))
            return results

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            results = []
            for req in requests:
                context, kwargs = req.args
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                max_gen = int(kwargs.get("max_gen_toks", 256))
                ids = self.tok_encode(context)[-max(1, self.max_length - max_gen):]
                logits, past = self.lm.start(torch.tensor([ids]))
                tokens: list[int] = []
                for _ in range(max_gen):  # greedy; sampling options are ignored
                    nxt = int(logits[0].argmax())
                    if nxt == self.eot_token_id:
                        break
                    tokens.append(nxt)
                    if until and any(u in self.tokenizer.decode(tokens) for u in until):
                        break
                    logits, past = self.lm.step(torch.tensor([[nxt]]), past)
                text = self.tokenizer.decode(tokens)
                for u in until:
                    text = text.split(u)[0]
                results.append(text)
            return results

    return OptkitLM


def wrap(lm, batch_size: int = 8):
    """Our loaded model as an lm_eval.api.model.LM."""
    return _lm_class()(lm, batch_size)


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
