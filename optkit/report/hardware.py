"""Speed is compared within a hardware class only: a variant's speed-up is against the baseline benchmarked on
the same class (the baseline itself, or its benchmark again in report.class_baselines, which the executor runs
on each other class a sweep used). With one class, as under the local executor, nothing here changes a report;
with several, the tables gain a hardware column and a legend that groups the variants by class."""

from __future__ import annotations

from optkit.results import Report, VariantResult


def of(c: VariantResult) -> str | None:
    return c.node.hardware_class if c.node and c.bench else None


def classes(report: Report) -> list[str]:
    """The classes the variants were benchmarked on, the baseline's first."""
    found = [of(c) for c in sorted(report.variants, key=lambda c: c.name != report.baseline)]
    return list(dict.fromkeys(k for k in found if k))


def baselines(report: Report) -> dict[str, VariantResult]:
    """hardware class -> the baseline benchmarked there (ok and with a benchmark)."""
    out = {of(c): c for c in report.class_baselines if c.status == "ok" and of(c)}
    base = next((c for c in report.variants if c.name == report.baseline), None)
    if base is not None and base.status == "ok" and of(base):
        out[of(base)] = base
    return out


def several(report: Report) -> bool:
    return len(classes(report)) > 1


def letters(report: Report) -> dict[str, str]:
    return {k: chr(ord("A") + i) if i < 26 else str(i + 1) for i, k in enumerate(classes(report))}


def add_column(report: Report, headers: list[str], body: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """A "hardware" column (the class's letter) after the status, when there are several classes."""
    if not several(report):
        return headers, body
    names = letters(report)
    body = [cells[:2] + [names.get(of(c), "-")] + cells[2:] for cells, c in zip(body, report.variants)]
    return headers[:2] + ["hardware"] + headers[2:], body


def legend(report: Report) -> list[str]:
    """One line per class: its letter, what it is, its variants, and where its baseline speed comes from."""
    if not several(report):
        return []
    base, own = baselines(report), {c.name: of(c) for c in report.variants}
    out = ["Hardware classes (decode tok/s compare within a class; speed-ups are against the baseline "
           "benchmarked on the same class):"]
    for k, letter in letters(report).items():
        members = ", ".join(n for n, cls in own.items() if cls == k)
        ref = base.get(k)
        where = "no baseline benchmarked here, so no speed-ups" if ref is None else \
            f"baseline {report.baseline}: {ref.bench.decode_tokens_per_s.median:.1f} tok/s on {ref.node.host}"
        out.append(f"  {letter}  {k}: {members} ({where})")
    return out
