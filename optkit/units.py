"""The recipe's quantities as users write them: a fraction or a percentage ('5%' and 0.05 are the same budget)."""

from __future__ import annotations

from typing import Any


def parse_fraction(value: Any) -> float:
    """'5%' -> 0.05; a bare number is already a fraction (0.05). Anything else (a list, null, true, nan) is a
    ValueError, which pydantic turns into a one-line error naming the field."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"must be a number or a percentage like '5%', not {type(value).__name__} {value!r}")
    try:
        if isinstance(value, str):
            text = value.strip()
            number = float(text[:-1]) / 100.0 if text.endswith("%") else float(text)
        else:
            number = float(value)
    except (ValueError, OverflowError):
        raise ValueError(f"must be a number or a percentage like '5%', not {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"must be a finite number, not {value!r}")
    return number
