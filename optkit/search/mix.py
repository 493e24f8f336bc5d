"""The budgeted choice of a mix: groups ordered by sensitivity per unit of gain, least KL for the most gain first,
and mixes cut along that order at geometrically spaced shares of the predicted KL.

The gain is the decode time a group's move saves, where the sensitivity job timed it (its weights times the
per-weight saving measured for its type, head to head on this machine), else the bytes the low type takes off the
file, as the issue first put it. On SmolLM2 the two disagree: Q4_1 -> Q4_0 saves a tenth of the bytes but most of
the time (llama.cpp repacks Q4_0 for AVX2), while the tied embedding's Q8_0 -> Q4_0 saves the most bytes and, per
KL, far less time. A group whose move saves nothing comes last, and mixes never reach it.

A mix's predicted KL is the sum of its groups' own: for small perturbations the KL of independent changes adds up
closely enough to order candidates; the screen and perplexity stages measure the real one. The cut points are
halvings of the total (1/2, 1/4, ... of moving every group): a budget of a few percent is usually a small share of
it (on SmolLM2 all of them in Q4_0 sum to 0.47 nats, and the uniform Q4_0 file is +8-14%).
"""

from __future__ import annotations

from dataclasses import dataclass

from optkit.results import GroupSensitivity


@dataclass
class Mix:
    name: str
    groups: list[str]  # moved to the low type
    patterns: list[str]
    predicted_kl: float
    low_share: float  # of the weights the groups cover


def gain(r: GroupSensitivity, timed: bool) -> float:
    """What moving the group buys: decode ms saved where timed, else bytes saved (its weights where it saves none);
    0 when it buys nothing."""
    if timed:
        return max(0.0, r.ms_saved or 0.0)
    return float(r.bytes_saved if r.bytes_saved > 0 else r.weights * 1e-3)


def order(rows: list[GroupSensitivity]) -> list[GroupSensitivity]:
    """Greedy order: KL per unit of gain, smallest first, groups that gain nothing last; rank set on each row (1 =
    first to move)."""
    timed = bool(rows) and all(r.ms_saved is not None for r in rows)

    def cost(r: GroupSensitivity) -> float:
        g = gain(r, timed)
        return r.kl / g if g > 0 else float("inf")

    ranked = sorted(rows, key=lambda r: (cost(r), r.group))
    for i, r in enumerate(ranked, 1):
        r.rank = i
    return ranked


def mixes(rows: list[GroupSensitivity], low: str, points: int) -> list[Mix]:
    """`points` mixes along the greedy order, at predicted KL 1/2, 1/4, ... 1/2**points of moving every group that
    gains anything, each the longest prefix of the order under that KL; empty and repeated mixes dropped, and the
    full one (the uniform candidate covers it)."""
    ranked = order(rows)
    timed = bool(rows) and all(r.ms_saved is not None for r in rows)
    useful = [r for r in ranked if gain(r, timed) > 0]
    total_kl = sum(r.kl for r in useful) or 1.0
    weights = sum(r.weights for r in ranked) or 1
    out: list[Mix] = []
    seen: set[int] = set()
    for k in range(points, 0, -1):
        limit = total_kl / 2 ** k
        n, acc = 0, 0.0
        while n < len(useful) and acc + useful[n].kl <= limit:
            acc += useful[n].kl
            n += 1
        if n in seen or n == 0 or n == len(ranked):
            continue
        seen.add(n)
        chosen = useful[:n]
        share = sum(r.weights for r in chosen) / weights
        name = f"mix-{low.lower()}-{round(share * 100):02d}"
        while any(m.name == name for m in out):
            name += "b"
        out.append(Mix(name=name, groups=[r.group for r in chosen], patterns=[r.pattern for r in chosen],
                       predicted_kl=acc, low_share=share))
    return out
