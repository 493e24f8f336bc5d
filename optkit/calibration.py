"""Calibration text for methods that look at activations (Wanda, sensitivity fallback, static int8):
N samples x seq_len tokens cut from a local text file, deterministic for a seed.

Default source: WikiText-2 *validation* from $OPTKIT_DATA (never the test split that perplexity scores).
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from optkit.errors import BadInput


class CalibrationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    samples: int = Field(default=32, ge=1, le=4096)
    seq_len: int = Field(default=256, ge=8, le=8192)
    seed: int = 0
    path: str | None = Field(default=None, description="a local text file (default: WikiText-2 validation)")


def calibration_file(path: str | None) -> Path:
    """The calibration text's file (checked, not read)."""
    if path:
        p = Path(path).expanduser()
    else:
        root = os.environ.get("OPTKIT_DATA")
        if not root:
            raise BadInput("calibration needs text: set OPTKIT_DATA to a folder holding wikitext-2/valid.txt, "
                           "or give calibration.path: a local text file")
        p = Path(root).expanduser() / "wikitext-2" / "valid.txt"
    if not p.is_file():
        raise BadInput(f"calibration text not found: {p}; fix calibration.path or OPTKIT_DATA")
    return p


def calibration_text(path: str | None) -> tuple[str, str]:
    p = calibration_file(path)
    return p.read_text(encoding="utf-8"), str(p)


def calibration_batch(lm, spec: CalibrationSpec):
    """-> LongTensor [samples, seq_len] of token windows at seeded random offsets, each led by the special
    tokens the model's tokenizer puts before a text (lm.prefix), so activations are those the model sees."""
    import torch

    text, source = calibration_text(spec.path)
    ids = lm.encode(text)
    prefix = lm.prefix
    if len(ids) < spec.seq_len + 1:
        raise BadInput(f"calibration text {source} has {len(ids)} tokens, fewer than seq_len {spec.seq_len}; "
                       "use a longer text or a smaller seq_len")
    rng = random.Random(spec.seed)
    starts = [rng.randrange(0, len(ids) - spec.seq_len) for _ in range(spec.samples)]
    return torch.tensor([prefix + ids[s:s + spec.seq_len - len(prefix)] for s in starts])
