"""The budgeted choice of a mix: the groups kept in the source's main type ordered by KL per weight, the groups kept
in other types moved together, and mixes cut at geometrically spaced shares of the predicted KL. KL and weights
alone place a group; the timings only drop groups whose move saves nothing (mixes() says why).

The gain is the decode time a group's move saves, where the sensitivity job timed it (its weights times the
per-weight saving measured for its type, head to head on this machine), else the bytes the low type takes off the
file. On SmolLM2 the two disagree: Q4_1 -> Q4_0 saves a tenth of the bytes but most of the time (llama.cpp repacks
Q4_0 for AVX2), while the tied embedding's Q8_0 -> Q4_0 saves the most bytes and, per KL, far less time. Within one
type the gain is proportional to the weights either way, so the order is the same.

A mix's predicted KL is the sum of its groups' own: for small perturbations the KL of independent changes adds up
closely enough to order candidates; the screen and perplexity stages measure the real one. The cut points are
halvings of the total (1/2, 1/4, ... of moving every group): a budget of a few percent is usually a small share of
it (on SmolLM2 all of them in Q4_0 sum to 0.47 nats, and the uniform Q4_0 file is +8-14%).
"""

from __future__ import annotations

from dataclasses import dataclass

from optkit.searchrecord import GroupSensitivity


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


def _cost(r: GroupSensitivity, timed: bool) -> float:
    g = gain(r, timed)
    return r.kl / g if g > 0 else float("inf")


def split(rows: list[GroupSensitivity]) -> tuple[list[GroupSensitivity], list[GroupSensitivity]]:
    """(the main type's groups that gain anything, least KL per weight first; the other types' groups that gain
    anything, least KL per unit of gain first). The main type is the one holding most of those groups' weights.
    Groups without a recorded type (an older sensitivity file) are all "main", in the order of KL per unit of gain
    across types, as timed."""
    timed = bool(rows) and all(r.ms_saved is not None for r in rows)
    useful = sorted((r for r in rows if gain(r, timed) > 0), key=lambda r: (_cost(r, timed), r.group))
    if any(r.kind is None for r in useful):
        return useful, []
    weight_of: dict[str, int] = {}
    for r in useful:
        weight_of[r.kind] = weight_of.get(r.kind, 0) + r.weights
    main = max(sorted(weight_of), key=lambda k: weight_of[k]) if weight_of else None
    base = sorted((r for r in useful if r.kind == main), key=lambda r: (r.kl / max(1, r.weights), r.group))
    return base, [r for r in useful if r.kind != main]


def order(rows: list[GroupSensitivity]) -> list[GroupSensitivity]:
    """The order mixes take groups in (split's two lists, then the groups that gain nothing, which mixes never
    move); rank set on each row (1 = first to move)."""
    base, extra = split(rows)
    taken = {id(r) for r in base + extra}
    ranked = base + extra + sorted((r for r in rows if id(r) not in taken), key=lambda r: r.group)
    for i, r in enumerate(ranked, 1):
        r.rank = i
    return ranked


def mixes(rows: list[GroupSensitivity], low: str, points: int) -> list[Mix]:
    """Mixes at predicted KL 1/2, 1/4, ... 1/2**points of moving every group that gains anything; empty and repeated
    mixes dropped, and the full one (the uniform candidate covers it).

    Only KL and weights place a group here, never a timing, so every search on the same source and calibration
    text builds the same mixes. Within the main type the timed saving is one figure per weight, so the greedy order
    among its groups is KL per weight whatever that figure was. Where a group kept in another type (SmolLM2's Q8_0
    embedding among its Q4_1 matrices) goes in that order rests on two timings, and three searches timed the
    embedding's saving at 0.72 to 1.61 ms: it landed 3rd to 17th, the cuts fell on different groups and each run
    built other mixes. So each cut is spent two ways: the longest prefix of the main type's order under it, and
    (where they fit) every other type's groups together plus the longest prefix under what is left. The stages
    after measure which of the two is faster and more accurate."""
    order(rows)  # each row's rank, for the report's table
    base, extra = split(rows)
    extra_kl = sum(r.kl for r in extra)
    total_kl = sum(r.kl for r in base + extra) or 1.0
    weights = sum(r.weights for r in rows) or 1
    out: list[Mix] = []
    seen: set[frozenset] = set()
    for k in range(points, 0, -1):
        limit = total_kl / 2 ** k
        for first, room in [([], limit)] + ([(extra, limit - extra_kl)] if extra and extra_kl <= limit else []):
            n, acc = 0, 0.0
            while n < len(base) and acc + base[n].kl <= room:
                acc += base[n].kl
                n += 1
            chosen = [*first, *base[:n]]
            key = frozenset(r.group for r in chosen)
            if key in seen or not chosen or len(chosen) == len(rows):
                continue
            seen.add(key)
            share = sum(r.weights for r in chosen) / weights
            name = f"mix-{low.lower()}-{round(share * 100):02d}"
            while any(m.name == name for m in out):
                name += "b"
            out.append(Mix(name=name, groups=[r.group for r in chosen], patterns=[r.pattern for r in chosen],
                           predicted_kl=sum(r.kl for r in chosen), low_share=share))
    return out
