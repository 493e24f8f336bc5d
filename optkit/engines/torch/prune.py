"""Weight pruning: unstructured magnitude, 2:4 semi-structured magnitude, and Wanda.

Pruned weights are set to zero in the dense tensors, in the model's dtype and on its device; the scores that
choose them are computed in float32, one layer at a time. Each step records the achieved sparsity per layer in
StepRecord.details. lm_head is left alone unless an include pattern names it, and never pruned when it shares
its weight with the input embedding (tied, as in SmolLM2): that would prune the embedding too.

Wanda (Sun et al. 2023) is sequential as in the paper: decoder blocks are pruned in forward order, each one
calibrated on the outputs of the already pruned blocks before it (about three forward passes of the calibration
batch in all). Targets outside the blocks (lm_head, if included) get one full pass on the pruned model.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Literal

from pydantic import Field, model_validator

from optkit.calibration import CalibrationSpec, calibration_batch, calibration_text
from optkit.engines.method import ModelInfo, Params, select
from optkit.engines.torch.transform import ModuleTransform
from optkit.errors import BadInput
from optkit.progress import Counter
from optkit.results import SkippedModule

DENSE_NOTE = ("pruned weights are zeros in dense tensors: no speed-up and no memory saving (on CPU, or anywhere "
              "yet); 2:4 could be accelerated on CUDA with torch.sparse.to_sparse_semi_structured, not wired up yet")
# Global scope ranks every targeted weight in one fp32 tensor up to this many (0.5 GB; SmolLM2-135M's layers hold
# ~106M, so ~0.85 GB peak with the copies); bigger models estimate the threshold from a uniform sample of this size.
GLOBAL_SAMPLE = 1 << 27
CHUNK = 4  # calibration samples per forward pass


class SparsityParams(Params):
    sparsity: float = Field(gt=0, lt=1, description="fraction of weights set to zero")


class MagnitudeParams(SparsityParams):
    scope: Literal["layer", "global"] = Field("layer", description="one threshold per layer, or one for all")


class WandaParams(Params):
    sparsity: float | None = Field(None, gt=0, lt=1, description="required for unstructured; 2:4 is always 0.5")
    pattern: Literal["unstructured", "2:4"] = "unstructured"
    calibration: CalibrationSpec = Field(default_factory=lambda: CalibrationSpec(samples=16, seq_len=256))

    @model_validator(mode="after")
    def _sparsity_fits_pattern(self):
        if self.pattern == "unstructured" and self.sparsity is None:
            raise ValueError("sparsity is required for pattern unstructured")
        if self.pattern == "2:4" and self.sparsity not in (None, 0.5):
            raise ValueError("pattern 2:4 always prunes half the weights; drop sparsity or set it to 0.5")
        return self


class _Prune(ModuleTransform):
    Params = SparsityParams
    notes = (DENSE_NOTE,)  # weights stay float ("hf"), so a later step may still quantize or prune

    def two_four(self, params: Params) -> bool:
        """Whether every targeted layer needs in_features divisible by 4."""
        return False

    def bytes_per_weight(self, params, in_features, act_bytes):
        return None  # dense zeros still move

    def check(self, info: ModelInfo, params: Params) -> list[str]:
        problems = super().check(info, params)
        if problems or not self.two_four(params):
            return problems
        targets, _ = select(list(info.linears), params)
        bad = [n for n in targets if info.linears[n][1] % 4 and not _head_skipped(n, params)]
        if not bad:
            return []
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        return [f"2:4 needs in_features divisible by 4; {shown} ha{'s' if len(bad) == 1 else 've'} "
                f"in_features {sorted({info.linears[n][1] for n in bad})}; exclude them"]

    def transform(self, lm, params: Params, targets: list[str]) -> list[SkippedModule]:
        import torch

        self.details = {}  # prune() may add to it
        kept, skipped = _split_head(lm.model, params, targets)
        weights = {}
        for name in kept:
            w = lm.model.get_submodule(name).weight
            if not w.dtype.is_floating_point or type(w) not in (torch.Tensor, torch.nn.Parameter):
                skipped.append(SkippedModule(module=name, reason=f"weight is {type(w).__name__} {w.dtype}, not float"))
            else:
                weights[name] = w
        with torch.no_grad():
            self.prune(lm, params, weights, skipped)
        zeros = {n: int((w == 0).sum()) for n, w in weights.items()}
        total = sum(w.numel() for w in weights.values())
        self.details.update(sparsity={n: round(zeros[n] / w.numel(), 4) for n, w in weights.items()},
                            overall_sparsity=round(sum(zeros.values()) / total, 4) if total else 0.0)
        return skipped

    def prune(self, lm, params: Params, weights: dict, skipped: list[SkippedModule]) -> None:
        raise NotImplementedError


class Magnitude(_Prune):
    """Zero the smallest |w|: per layer (each layer hits the sparsity) or global (one threshold for all layers,
    so sensitive layers keep more weights; the overall sparsity is exact, ties shared out in proportion)."""

    name = "prune.magnitude"
    Params = MagnitudeParams

    def prune(self, lm, params: MagnitudeParams, weights, skipped):
        ws = list(weights.values())
        counts = [round(params.sparsity * w.numel()) for w in ws]
        for w, k in zip(ws, _global_counts(ws, params.sparsity) if params.scope == "global" else counts):
            if k:
                w.view(-1)[w.abs().float().flatten().topk(k, largest=False).indices] = 0


class TwoFour(_Prune):
    """2:4 semi-structured: in every 4 consecutive weights along the input dimension keep the 2 largest |w|."""

    name = "prune.2to4"
    Params = Params

    def two_four(self, params):
        return True

    def prune(self, lm, params, weights, skipped):
        for w in weights.values():
            _two_four(w, w.abs().float())


class Wanda(_Prune):
    """Wanda: score |W_ij| * ||X_j||_2 (X_j: input feature j over the calibration tokens), compared within each
    output row; unstructured (the lowest `sparsity` share of each row) or 2:4 (the 2 lowest of every 4)."""

    name = "prune.wanda"
    Params = WandaParams

    def two_four(self, params: WandaParams) -> bool:
        return params.pattern == "2:4"

    def check(self, info: ModelInfo, params: WandaParams) -> list[str]:
        problems = super().check(info, params)
        try:
            calibration_text(params.calibration.path)
        except BadInput as exc:
            problems.append(str(exc))
        return problems

    def prune(self, lm, params: WandaParams, weights, skipped):
        batch = calibration_batch(lm, params.calibration)

        def prune_group(names: list[str], norms: dict) -> None:
            for name in names:
                w = weights[name]
                if name not in norms:
                    skipped.append(SkippedModule(module=name, reason="not called in the forward pass: no activations"))
                elif params.pattern == "2:4":
                    _two_four(w, score_wanda(w, norms[name]))
                else:
                    k = round(params.sparsity * w.shape[1])
                    w.scatter_(1, score_wanda(w, norms[name]).topk(k, dim=1, largest=False).indices, 0)

        layers, by_block, rest = _blocks(lm.model, list(weights))
        if by_block:
            _walk_blocks(lm, batch.split(CHUNK), layers, by_block, prune_group)
        if rest:  # outside the decoder blocks (lm_head, if included): one full pass on the pruned model
            prune_group(rest, _full_pass_norms(lm, batch.split(CHUNK), rest))
        self.details["calibration_tokens"] = batch.numel()
        self.details["activations"] = "sequential: each block calibrated with the blocks before it already pruned"


def score_wanda(weight, input_norm):
    """The Wanda score for a [out, in] weight and the [in] L2 norms of its input features."""
    import torch

    return weight.abs().float() * input_norm.to(weight.device, torch.float32)


def _two_four(w, score) -> None:
    out, inp = w.shape
    drop = score.reshape(out, inp // 4, 4).topk(2, dim=-1, largest=False).indices
    w.view(out, inp // 4, 4).scatter_(-1, drop, 0)


def _global_counts(weights: list, sparsity: float) -> list[int]:
    """How many weights to zero in each layer so that one |w| threshold gives `sparsity` overall."""
    import torch

    total = sum(w.numel() for w in weights)
    gen = torch.Generator().manual_seed(0)
    if total <= GLOBAL_SAMPLE:
        values = torch.cat([w.detach().abs().float().flatten() for w in weights])
    else:  # a uniform sample estimates the threshold; the counts below still use every weight
        picks = [torch.randint(w.numel(), (GLOBAL_SAMPLE * w.numel() // total,), generator=gen) for w in weights]
        values = torch.cat([w.detach().flatten()[i.to(w.device)].abs().float() for w, i in zip(weights, picks)])
    t = values.kthvalue(max(1, round(sparsity * values.numel()))).values
    below = [int((w.abs().float() < t).sum()) for w in weights]
    ties = [int((w.abs().float() == t).sum()) for w in weights]
    need = min(max(round(sparsity * total) - sum(below), 0), sum(ties))  # ties at t (common in bf16) shared out
    share = [need * n // max(sum(ties), 1) for n in ties]
    left = need - sum(share)
    for j, n in enumerate(ties):  # the rounding remainder, to the first layers with ties to spare
        extra = min(n - share[j], left)
        share[j], left = share[j] + extra, left - extra
    return [b + s for b, s in zip(below, share)]


def _blocks(model, names: list[str]):
    """Split targets into those in the blocks of one ModuleList (model.layers: {index: names}) and the rest."""
    import torch

    layers, by_block, rest = None, {}, []
    for name in names:
        m = re.match(r"(.+?)\.(\d+)\.", name)
        parent = model.get_submodule(m.group(1)) if m else None
        if isinstance(parent, torch.nn.ModuleList) and (layers is None or parent is layers):
            layers = parent
            by_block.setdefault(int(m.group(2)), []).append(name)
        else:
            rest.append(name)
    return layers, by_block, rest


class _Stop(Exception):
    pass


def _walk_blocks(lm, chunks, layers, by_block: dict, prune_group) -> None:
    """One dense pass records how the model calls each block (hidden states, mask, rotary embeddings: they may
    differ per block); then, block by block, collect input norms on the current hidden states, prune, and run
    the pruned block to make the next block's input. About three forward passes in all."""
    import torch

    first, last = min(by_block), max(by_block)
    hidden, calls = [], []  # per chunk: the first block's input; block index -> how it is called, minus that input

    def capture(i):
        def fn(mod, args, kwargs):
            if i == first:
                hidden.append(args[0] if args else kwargs["hidden_states"])
            calls[-1][i] = (bool(args), args[1:], {k: v for k, v in kwargs.items() if k != "hidden_states"})
            if i == last:
                raise _Stop
        return fn

    handles = [layers[i].register_forward_pre_hook(capture(i), with_kwargs=True) for i in range(first, last + 1)]
    try:
        with torch.inference_mode():
            for chunk in chunks:
                calls.append({})
                try:
                    lm.model(input_ids=chunk.to(lm.device), use_cache=False)
                except _Stop:
                    pass
    finally:
        for h in handles:
            h.remove()
    count = Counter("wanda: calibrating and pruning blocks", last - first + 1)
    for i in range(first, last + 1):
        count.advance()
        if i in by_block:
            with _collect(lm.model, by_block[i]) as sq, torch.inference_mode():
                for h, c in zip(hidden, calls):
                    _call(layers[i], h, *c[i])
            prune_group(by_block[i], {n: v.sqrt() for n, v in sq.items()})
        if i < last:
            with torch.inference_mode():
                hidden = [_call(layers[i], h, *c[i]) for h, c in zip(hidden, calls)]


def _call(layer, hidden, positional: bool, args, kwargs):
    out = layer(hidden, *args, **kwargs) if positional else layer(*args, hidden_states=hidden, **kwargs)
    return out[0] if isinstance(out, tuple) else out


def _full_pass_norms(lm, chunks, names: list[str]) -> dict:
    import torch

    with _collect(lm.model, names) as sq, torch.inference_mode():
        for chunk in chunks:
            lm.model(input_ids=chunk.to(lm.device), use_cache=False)
    return {n: v.sqrt() for n, v in sq.items()}


@contextmanager
def _collect(model, names: list[str]):
    """Forward hooks summing the squares of each input feature of the named modules (in float32)."""
    sq = {}

    def hook(name):
        def fn(mod, args, output):
            x = args[0].detach().float()
            sq[name] = sq.get(name, 0) + x.pow(2).reshape(-1, x.shape[-1]).sum(0)
        return fn

    handles = [model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        yield sq
    finally:
        for h in handles:
            h.remove()


def _head_skipped(name: str, params: Params) -> bool:
    """lm_head is pruned only when an include pattern matches it (an empty include matches nothing here)."""
    return name.rsplit(".", 1)[-1] == "lm_head" and not any(re.search(p, name) for p in params.include)


def _split_head(model, params: Params, targets: list[str]) -> tuple[list[str], list[SkippedModule]]:
    """Drop lm_head from the targets unless included, and always when tied to the input embedding."""
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    tied = head is not None and emb is not None and head.weight.data_ptr() == emb.weight.data_ptr()
    kept, skipped = [], []
    for name in targets:
        if model.get_submodule(name) is head and tied:
            skipped.append(SkippedModule(module=name, reason="lm_head shares its weight with the input embedding "
                                         "(tied); pruning it would prune the embedding too"))
        elif _head_skipped(name, params):
            skipped.append(SkippedModule(module=name, reason="lm_head is not pruned by default (the output layer is "
                                         "sensitive); add an include pattern naming it to prune it"))
        else:
            kept.append(name)
    return kept, skipped
