"""The budgeted choice of a mix: groups ordered by sensitivity per byte saved (the least KL for the most bytes the
low type takes off the file first), and mixes cut along that order at evenly spaced shares of the predicted KL.

A mix's predicted KL is the sum of its groups' own: for small perturbations the KL of independent changes adds up
closely enough to order candidates; the kl and perplexity stages then measure the real one. Where the low type
saves no bytes on a group (it is as large as the group's type), its weights stand in for the bytes, so a faster
kernel at equal size is still worth a place in the order.
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


def order(rows: list[GroupSensitivity]) -> list[GroupSensitivity]:
    """Greedy order: KL per byte saved, smallest first; rank set on each row (1 = first to move)."""
    def cost(r: GroupSensitivity) -> float:
        gain = r.bytes_saved if r.bytes_saved > 0 else r.weights * 1e-3
        return r.kl / max(gain, 1.0)

    ranked = sorted(rows, key=lambda r: (cost(r), r.group))
    for i, r in enumerate(ranked, 1):
        r.rank = i
    return ranked


def mixes(rows: list[GroupSensitivity], low: str, points: int) -> list[Mix]:
    """`points` mixes along the greedy order, at predicted KL 1/(points+1) ... points/(points+1) of moving every
    group, each the longest prefix of the order under that KL; duplicates and the empty and full mixes dropped
    (the full one is the uniform candidate)."""
    ranked = order(rows)
    total_kl = sum(r.kl for r in ranked) or 1.0
    weights = sum(r.weights for r in ranked) or 1
    out: list[Mix] = []
    seen: set[int] = set()
    for k in range(1, points + 1):
        limit = total_kl * k / (points + 1)
        n, acc = 0, 0.0
        while n < len(ranked) and acc + ranked[n].kl <= limit:
            acc += ranked[n].kl
            n += 1
        if n in seen or n == 0 or n == len(ranked):
            continue
        seen.add(n)
        chosen = ranked[:n]
        share = sum(r.weights for r in chosen) / weights
        out.append(Mix(name=f"mix-{low.lower()}-{round(share * 100):02d}", groups=[r.group for r in chosen],
                       patterns=[r.pattern for r in chosen], predicted_kl=acc, low_share=share))
    return out
