"""Evaluation text. Offline users point OPTKIT_DATA at a folder laid out like shared/data;
connected users get the hub's dataset through `datasets`."""

from __future__ import annotations

import os
from pathlib import Path

from optkit.errors import BadInput, RunError

WAYS = ("set OPTKIT_DATA to a folder holding wikitext-2/test.txt, "
        "or unset it to fetch wikitext-2-raw-v1 from the Hugging Face hub (needs network and `datasets`)")


def text_file(path: str | None, field: str = "eval.perplexity.path") -> Path | None:
    """The local file a text comes from (checked, not read), or None for the hub's WikiText-2."""
    if path:
        p = Path(path).expanduser()
        if not p.is_file():
            raise BadInput(f"text file not found: {p}; fix {field}")
        return p
    root = os.environ.get("OPTKIT_DATA")
    if root:
        p = Path(root).expanduser() / "wikitext-2" / "test.txt"
        if not p.is_file():
            raise BadInput(f"{p} not found (OPTKIT_DATA={root}); {WAYS}")
        return p
    return None


def wikitext_test(path: str | None = None) -> tuple[str, str]:
    """Return (text, source description)."""
    p = text_file(path)
    if p is not None:
        return p.read_text(encoding="utf-8"), str(p) if path else f"{p} (tokenized WikiText-2 test)"
    try:
        from datasets import load_dataset

        rows = load_dataset("wikitext", "wikitext-2-raw-v1", split="test")
    except Exception as exc:  # no network, no datasets, hub errors: all end the same way for the user
        raise RunError(f"cannot load WikiText-2 from the hub ({type(exc).__name__}); {WAYS}") from exc
    return "\n\n".join(rows["text"]), "hub: wikitext/wikitext-2-raw-v1 test"
