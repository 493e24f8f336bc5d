"""Method names -> lazily imported classes. Built-ins are listed here; plugins come from the
`optkit.methods` entry-point group (name = "module:Class"), never from strings in user files."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from functools import cache

from optkit.errors import BadInput

BUILTINS = {
    "cast": "optkit.methods.casts:Cast",
    "torchao.int8_weight_only": "optkit.methods.torchao:Int8WeightOnly",
    "torchao.int8_dynamic": "optkit.methods.torchao:Int8Dynamic",
    "torchao.int4_weight_only": "optkit.methods.torchao:Int4WeightOnly",
    "torchao.float8_dynamic": "optkit.methods.torchao:Float8Dynamic",
    "torch.dynamic_int8": "optkit.methods.torch_dynamic:DynamicInt8",
    "bnb.int8": "optkit.methods.bnb:LLMInt8",
    "bnb.4bit": "optkit.methods.bnb:FourBit",
    "prune.magnitude": "optkit.methods.prune:Magnitude",
    "prune.2to4": "optkit.methods.prune:TwoFour",
    "prune.wanda": "optkit.methods.prune:Wanda",
    "onnx.export": "optkit.methods.onnx_export:ExportOnnx",
    "ort.dynamic_int8": "optkit.methods.ort_quant:DynamicInt8",
    "ort.int4": "optkit.methods.ort_quant:Int4",
    "ort.static_int8": "optkit.methods.ort_static:StaticInt8",
}


@cache
def _table() -> dict[str, str]:
    from importlib.metadata import entry_points

    table = dict(BUILTINS)
    for ep in entry_points(group="optkit.methods"):
        table.setdefault(ep.name, ep.value)
    return table


def names() -> list[str]:
    return sorted(_table())


def get(name: str):
    """Return a Method instance; unknown names get a did-you-mean, missing extras the pip command."""
    table = _table()
    if name not in table:
        close = difflib.get_close_matches(name, table, n=1, cutoff=0.5)
        hint = f"did you mean {close[0]!r}?" if close else f"known methods: {', '.join(names())}"
        raise BadInput(f"unknown method {name!r}; {hint}")
    module, attr = table[name].split(":")
    cls = getattr(importlib.import_module(module), attr)
    missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
    if missing:
        extra = cls.extra or missing[0]
        raise BadInput(f"method {name!r} needs {', '.join(missing)}; run: pip install 'optkit[{extra}]'")
    return cls()
