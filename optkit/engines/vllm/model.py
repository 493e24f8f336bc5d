"""A model served by vLLM, behind optkit's LoadedModel interface.

vLLM gives log-probs, not logits: perplexity reads each prompt token's log-prob (prompt_logprobs), fidelity the
top-256 per position (the baseline's top-k tokens outside them count as unknown: fidelity's KL is then a stated
lower bound), lm-eval's loglikelihood requests are scored whole and its generations decoded by vLLM's own greedy
sampler, with vLLM's tokenizer. The benchmark's start/step run real vLLM requests through its engine loop
(LLMEngine.add_request / step, what LLM.generate does inside): start adds one request per prompt row, sized by
expect_decode, and returns when every row has its first token; each step returns the next token of every row.
The "logits" they return are one-hot rows of the tokens vLLM's greedy sampler chose, so the benchmark's argmax
picks exactly vLLM's tokens.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from pathlib import Path

from optkit.engines.base import LoadedModel
from optkit.engines.vllm.runtime import TOP_K
from optkit.errors import RunError


class _Run:
    """The requests of one start(): tokens received and not yet handed out, per row."""

    def __init__(self, ids: list[str]):
        self.ids = ids
        self.queues = {rid: deque() for rid in ids}
        self.finished: set[str] = set()


class VllmLM(LoadedModel):
    engine = "vllm"

    def __init__(self, llm, folder: Path, fmt: str, dtype: str, device: str, config, params: int, startup: dict):
        self.llm, self.folder, self.format, self._dtype, self.device = llm, folder, fmt, dtype, device
        self.tokenizer = llm.get_tokenizer()  # vLLM's own tokenizer: what it serves with
        self.config, self.params, self.startup_seconds = config, params, startup
        self._budget: int | None = None
        self._run: _Run | None = None
        self._count = itertools.count()

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def max_batch(self) -> int | None:
        return self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.safetensors"))

    def logits(self, input_ids, past=None):
        raise RunError("vLLM reports log-probs, not logits: this caller needs an engine that gives full logits "
                       "(optkit's evaluators use token_logprobs / top_logprobs / loglikelihoods with vLLM)")

    # --- scoring: prompt log-probs ---------------------------------------------------------------------------
    def _prompt_logprobs(self, seqs: list[list[int]], k: int, last: bool = False):
        """Per sequence, per position 1..n-1 (and the position after the last token when `last`): (token ids,
        log-probs, ranks) vLLM reports there: the prompt token first, then the top-k (ranks 1..k)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k, logprobs=k if last else None,
                                detokenize=False, flat_logprobs=True)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(s)) for s in seqs], params, use_tqdm=False)
        result = []
        for out in outs:
            rows = [_rows(out.prompt_logprobs, i) for i in range(1, len(out.prompt_logprobs))]
            if last:
                rows.append(_rows(out.outputs[0].logprobs, 0))
            result.append(rows)
        return result

    def token_logprobs(self, ids: list[int]) -> list[float]:
        [rows] = self._prompt_logprobs([ids], 0)
        return [dict(zip(tok, lp))[want] for (tok, lp, _), want in zip(rows, ids[1:])]

    def top_logprobs(self, ids: list[int], k: int):
        import torch

        k = min(k, TOP_K)
        [rows] = self._prompt_logprobs([ids], k, last=True)
        values, index = [], []
        for tok, lp, rank in rows:
            # the prompt (or sampled) token comes first and again among the top-k when it is one of them
            top = sorted({t: (r, t, v) for t, v, r in zip(tok, lp, rank) if r is not None and r <= k}.values())
            index.append([t for _, t, _ in top])
            values.append([v for _, _, v in top])
        return torch.tensor(values, dtype=torch.float32), torch.tensor(index, dtype=torch.int64)

    def logprobs_at(self, ids: list[int], index):
        """The baseline's tokens where they are among vLLM's top-k (k = index's width, at most 256), NaN elsewhere."""
        import torch

        k = min(index.shape[-1], TOP_K)
        [rows] = self._prompt_logprobs([ids], k, last=True)
        values = torch.full(index.shape, math.nan, dtype=torch.float32)
        top1 = torch.empty(len(rows), dtype=torch.int64)
        for j, (tok, lp, rank) in enumerate(rows):
            known = dict(zip(tok, lp))
            values[j] = torch.tensor([known.get(int(t), math.nan) for t in index[j]])
            top1[j] = next(t for t, r in zip(tok, rank) if r == 1)
        return values, top1

    def loglikelihoods(self, requests):
        seqs = [ctx + cont for ctx, cont in requests]
        out = []
        for (ctx, cont), rows in zip(requests, self._prompt_logprobs(seqs, 1)):
            total, greedy = 0.0, True
            for pos, want in enumerate(cont, start=len(ctx)):
                tok, lp, rank = rows[pos - 1]  # rows[i] scores token i + 1
                found = dict(zip(tok, zip(lp, rank)))[want]
                total += found[0]
                greedy = greedy and found[1] == 1
            out.append((total, greedy))
        return out

    def generate_greedy(self, requests):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(max_tokens=n, temperature=0.0, stop=list(until) or None) for _, n, until in requests]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(ids)) for ids, _, _ in requests], params,
                                 use_tqdm=False)
        return [o.outputs[0].text for o in outs]

    # --- online serving: vLLM's server and client, after everything else ----------------------------------------
    def serve(self, spec, prompt_len: int, gen_len: int):
        """Stop this process's engine (the server loads the model again and would share memory and cores with
        it), then sweep (serving.py). The model cannot be used afterwards."""
        import gc

        from optkit.engines.vllm.serving import sweep

        self._abort()
        self.llm.llm_engine.engine_core.shutdown()
        self.llm = None
        gc.collect()
        return sweep(str(self.folder), self._dtype, spec.concurrency, spec.requests, prompt_len, gen_len,
                     run_timeout=spec.timeout_s)

    # --- decoding: vLLM's engine loop, token by token ----------------------------------------------------------
    def expect_decode(self, tokens: int) -> None:
        self._budget = tokens

    def _abort(self) -> None:
        run, self._run = self._run, None
        if run is not None:
            left = [rid for rid in run.ids if rid not in run.finished]
            if left:
                self.llm.llm_engine.abort_request(left)

    def _pull(self, run: _Run) -> None:
        for out in self.llm.llm_engine.step():
            queue = run.queues.get(out.request_id)
            if queue is None:  # an aborted request of an earlier start
                continue
            queue.extend(out.outputs[0].token_ids)
            if out.finished:
                run.finished.add(out.request_id)

    def _next(self, run: _Run):
        import torch

        while any(not q for q in run.queues.values()):
            if all(rid in run.finished for rid, q in run.queues.items() if not q):
                raise RunError("vLLM decoded fewer tokens than were asked for (more step() calls than "
                               "expect_decode announced)")
            self._pull(run)
        tokens = torch.tensor([run.queues[rid].popleft() for rid in run.ids])
        onehot = torch.zeros(len(tokens), self.vocab_size)
        onehot[torch.arange(len(tokens)), tokens] = 1.0
        return onehot, run

    def start(self, input_ids):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        self._abort()
        rows = input_ids.tolist()
        room = self.llm.llm_engine.vllm_config.model_config.max_model_len - max(len(r) for r in rows)
        budget = min(self._budget, room - 1) if self._budget else room - 1
        params = SamplingParams(max_tokens=budget + 1, min_tokens=budget + 1, ignore_eos=True, temperature=0.0,
                                detokenize=False, output_kind=RequestOutputKind.DELTA)
        ids = [f"optkit-{next(self._count)}" for _ in rows]  # outputs carry these (vLLM adds a suffix inside)
        for rid, row in zip(ids, rows):
            self.llm.llm_engine.add_request(rid, TokensPrompt(prompt_token_ids=row), params)
        self._run = _Run(ids)
        return self._next(self._run)

    def step(self, token_ids, past):
        return self._next(past)


def _rows(flat, i: int):
    """(token ids, log-probs, ranks) at position i of vLLM's FlatLogprobs."""
    lo, hi = flat.start_indices[i], flat.end_indices[i]
    return flat.token_ids[lo:hi], flat.logprobs[lo:hi], flat.ranks[lo:hi]
