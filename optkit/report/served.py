"""Is this the model as served? The tokenizer each variant was scored with, held against its serving engine's,
and for a GGUF source its two engines' next-token agreement, gathered per source model from the variants
(results.TokenizerCheck, results.LogitAgreement) for the text report and report.html (its template shows them)."""

from __future__ import annotations

from optkit.results import LogitAgreement, Report, TokenizerCheck


def tokenizer_checks(report: Report) -> list[tuple[TokenizerCheck, list[str]]]:
    """Each distinct check (model, tokenizer, result) with the variants it covers, in report order."""
    seen: dict[tuple, tuple[TokenizerCheck, list[str]]] = {}
    for c in report.variants:
        for check in c.tokenizer_checks:
            key = (check.model, check.scored_with, check.result, check.detail)
            seen.setdefault(key, (check, []))[1].append(c.name)
    return list(seen.values())


def agreements(report: Report) -> list[LogitAgreement]:
    seen: dict[str, LogitAgreement] = {}
    for c in report.variants:
        if c.logit_agreement is not None:
            seen.setdefault(c.logit_agreement.model, c.logit_agreement)
    return list(seen.values())


def _agreement_words(a: LogitAgreement) -> str:
    if a.kl_mean is None:
        return f"{a.result} ({a.detail})"
    return (f"{a.result}: KL {a.kl_mean:.3g} nats (max {a.kl_max:.3g}), top-1 {a.top1_agreement:.1%} over "
            f"{a.tokens} positions ({a.bound})")


def served_lines(report: Report) -> list[str]:
    """One line per check worth reading: every one that did not agree, and a summary of those that did."""
    checks = tokenizer_checks(report)
    found = agreements(report)
    if not checks and not found:
        return []
    good = [c for c, _ in checks if c.result in ("agrees", "native")]
    out = [f"Served-model checks: {len(good)} of {len(checks)} tokenizer(s) match the serving engine's"
           + (" (llama.cpp's own ids for GGUF files)" if any(c.result == "native" for c in good) else "")]
    out += [f"  tokenizer {c.result}: {c.model} scored with {c.scored_with} ({', '.join(names)}): {c.detail}"
            for c, names in checks if c.result not in ("agrees", "native")]
    out += [f"  logit agreement of {a.model} (llama.cpp vs PyTorch): {_agreement_words(a)}" for a in found]
    return out
