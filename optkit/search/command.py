"""`optkit search SOURCE|RECIPE` and the workload options `optkit run` shares: the recipe a search runs, from a
checkpoint and options, or from a recipe with a `search:` section (its variants become extra candidates)."""

from __future__ import annotations

import re
from pathlib import Path

from optkit.errors import BadInput
from optkit.recipe import BenchSpec, Recipe, WorkloadSpec

# a search benchmarks more candidates than a demo: 3 clean repetitions, 4 rounds against the source in one process
SEARCH_BENCH = BenchSpec(prompt_len=128, gen_len=64, warmup=1, repeats=3, paired_rounds=4)


def with_workload(recipe: Recipe, points: str | None, objective: str | None, concurrency: int | None) -> Recipe:
    """The recipe with the command line's workload options over its own `workload:` (BadInput on a bad form)."""
    from optkit.workload import parse_points, resolve

    if points is None and objective is None and concurrency is None:
        return recipe
    base = resolve(recipe.workload, recipe.bench).model_dump()
    if points is not None:
        try:
            base["requests"] = [p.model_dump() for p in parse_points(points)]
        except ValueError as exc:
            raise BadInput(f"--workload: {exc}") from None
    if objective is not None:
        base["objective"] = objective
    if concurrency is not None:
        base["concurrency"] = concurrency
    return recipe.model_copy(update={"workload": WorkloadSpec.model_validate(base)})


def recipe_for(source: str, budget: str | None, minutes: float | None) -> tuple[Recipe, Path | None]:
    """(the recipe, the folder its relative paths are relative to): a YAML recipe with a search: section as it is,
    else a default search recipe around the checkpoint; --budget and --time override either."""
    from optkit.recipe import load_recipe, parse_recipe
    from optkit.searchspec import SearchSpec

    path = Path(source)
    if path.suffix in (".yaml", ".yml"):
        recipe, base_dir = load_recipe(path), path.parent
        if recipe.search is None:
            raise BadInput(f"{path}: no search: section; add `search: {{max_ppl_increase: 5%}}` or run it with "
                           "optkit run")
    else:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem if path.suffix else path.name).strip("-.") or "model"
        recipe = parse_recipe({"name": f"search-{stem}", "model": {"checkpoint": source},
                               "variants": [{"name": "source"}], "bench": SEARCH_BENCH.model_dump(),
                               "search": {}}, "command line")
        base_dir = None
    given = {k: v for k, v in (("max_ppl_increase", budget), ("time_budget_min", minutes)) if v is not None}
    if given:
        try:
            recipe.search = SearchSpec.model_validate(recipe.search.model_dump() | given)
        except ValueError as exc:
            raise BadInput(f"bad --budget or --time: {str(exc).splitlines()[-1].strip()}; write e.g. --budget 5% "
                           "--time 30") from None
    if recipe.bench is None:
        raise BadInput("a search ranks by speed: the recipe's bench: must not be null")
    return recipe, base_dir
