"""Any LoadedModel as an lm-evaluation-harness model (lm_eval.api.model.TemplateLM): `wrap(lm)`.

It tokenizes the way lm-eval's own `hf` model does (context and continuation apart, the tokenizer's own rule for
special tokens, BOS - else EOS - as the rolling-window prefix), with the model's own tokenizer: for a GGUF in
llama.cpp that is llama.cpp's (engines/llamacpp/vocab.py), so requests carry the ids the file is served with.
Scoring uses only logits / start / step / repeat_cache (engines/base.py), so every engine runs lm-eval tasks
unchanged.
"""

from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache

# multiple-choice requests share a context; prefilling it once and scoring the choices on its cache pays only
# for long contexts: for short ones (arc, piqa, hellaswag) two forward calls per question cost more than
# batching whole requests 8 at a time
SHARED_MIN_CONTEXT = 256


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
            out = self._native(requests)
            if out is not None:
                self._cache(requests, out)
                return out
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
            self._cache(requests, out)
            return out

        def _cache(self, requests, out: list) -> None:
            for (key, _, _), res in zip(requests, out):
                if key is not None:
                    self.cache_hook.add_partial("loglikelihood", key, res)

        def _native(self, requests):
            """The engine's own scoring of whole requests (LoadedModel.loglikelihoods), context cut as _plain
            cuts it; None where the engine has none."""
            cut = []
            for _, ctx, cont in requests:
                whole = (list(ctx) + list(cont))[-(self.max_length + 1):]
                cut.append((whole[:len(whole) - len(cont)], list(cont)))
            return self.lm.loglikelihoods(cut)

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
            asks = []
            for req in requests:
                context, kwargs = req.args
                until = kwargs.get("until") or []
                until = [until] if isinstance(until, str) else list(until)
                max_gen = int(kwargs.get("max_gen_toks", 256))
                asks.append((self.tok_encode(context)[-max(1, self.max_length - max_gen):], max_gen, until))
            native = self.lm.generate_greedy(asks)  # the engine's own greedy decoding, where it has one
            texts = native if native is not None else [self._greedy(*ask) for ask in asks]
            results = []
            for text, (_, _, until) in zip(texts, asks):
                for u in until:
                    text = text.split(u)[0]
                results.append(text)
            return results

        def _greedy(self, ids: list[int], max_gen: int, until: list[str]) -> str:
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
            return self.tokenizer.decode(tokens)

    return OptkitLM


def wrap(lm, batch_size: int = 8):
    """Our loaded model as an lm_eval.api.model.LM."""
    return _lm_class()(lm, batch_size)
