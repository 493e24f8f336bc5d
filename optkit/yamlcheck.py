"""Where in a YAML file a problem is, and what to say about it: a pydantic error's location followed through the
YAML node tree to its line, the hint that names the fix (a misspelt key's closest allowed one), and the check that
aliases do not expand a short file into millions of values. recipe.py reads recipes through these."""

from __future__ import annotations

import difflib

import yaml
from pydantic import BaseModel

from optkit.errors import BadInput

MAX_VALUES = 20_000  # YAML values a recipe may expand to through aliases (a hand-written one has a few hundred)


def line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """Follow a pydantic error location through the YAML node tree to a 1-based line."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == key), None)
            if node is None:  # the key itself is missing: point at its parent
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            return line
        line = node.start_mark.line + 1
    return line


def hint(err: dict, model: type[BaseModel]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        allowed = _allowed_keys(model, err["loc"][:-1])
        close = difflib.get_close_matches(key, allowed, n=1)
        if close:
            return f"unknown key {key!r}; did you mean {close[0]!r}?"
        return f"unknown key {key!r}; remove it (allowed here: {', '.join(allowed)})"
    if kind == "missing":
        return "required field is missing; add it"
    msg = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    if isinstance(given, (dict, list)) and kind.endswith(("_type", "_parsing", "literal_error", "enum")):
        shape = "a mapping" if isinstance(given, dict) else "a list"
        return f"{msg}, not {shape} (a YAML alias *name stands for the whole value its anchor names); write a " \
               "single value here"
    return msg if ";" in msg else f"{msg}; fix this value"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for key in loc:
        if isinstance(key, int):
            continue
        field = model.model_fields.get(str(key))
        ann = field.annotation if field else None
        candidates = [ann, *getattr(ann, "__args__", ())]
        for cand in candidates:
            inner = [cand, *getattr(cand, "__args__", ())]
            sub = next((c for c in inner if isinstance(c, type) and issubclass(c, BaseModel)), None)
            if sub:
                model = sub
                break
    return list(model.model_fields)


def check_expansion(root: yaml.Node | None, source: str) -> None:
    """Aliases (*name) may share a value, but not explode one ("billion laughs": 9 aliases of 9 aliases of ...
    are a few lines of YAML and a billion values once validated or written to plan.json) or contain themselves."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise BadInput(f"{source}:{node.start_mark.line + 1}: a YAML alias refers to a value that contains it "
                           "(a recursive anchor); write the value out instead of the alias")
        open_nodes.add(key)
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_VALUES:
                raise BadInput(f"{source}:{node.start_mark.line + 1}: the recipe expands to more than {MAX_VALUES:,} "
                               "values through YAML aliases (*name); write the values out or share fewer")
        open_nodes.discard(key)
        sizes[key] = total
        return total

    if root is not None:
        size(root)
