"""Evaluators: evaluate(lm, spec) -> list[EvalResult], the same for every backend."""
