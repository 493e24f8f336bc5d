"""Names -> lazily imported classes, for methods and engines alike. Built-ins are listed here; plugins come
from entry-point groups (`optkit.methods`, `optkit.backends`; name = "module:Class"), never from strings in
user files. Importing a class imports no heavy library: each class names the modules it `requires` and the
pip extra that brings them, checked when it is asked for."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from functools import cache

from optkit.errors import BadInput

METHODS = {
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
    "gguf.export": "optkit.methods.gguf:Export",
    "gguf.quantize": "optkit.methods.gguf:Quantize",
    "llmc.rtn": "optkit.methods.llmc:Rtn",
    "llmc.gptq": "optkit.methods.llmc:Gptq",
    "llmc.awq": "optkit.methods.llmc:Awq",
    "llmc.smoothquant": "optkit.methods.llmc:SmoothQuant",
}
BACKENDS = {
    "torch": "optkit.backends.torch:TorchEngine",
    "onnxruntime": "optkit.backends.ort:OrtEngine",
    "llamacpp": "optkit.backends.llamacpp:LlamaCppEngine",
}


class Registry:
    def __init__(self, group: str, builtins: dict[str, str], kind: str):
        self.group, self.builtins, self.kind = group, builtins, kind

    @cache  # noqa: B019 - one table per registry for the life of the process, as entry points are
    def table(self) -> dict[str, str]:
        from importlib.metadata import entry_points

        table = dict(self.builtins)
        for ep in entry_points(group=self.group):
            table.setdefault(ep.name, ep.value)
        return table

    def names(self) -> list[str]:
        return sorted(self.table())

    def cls(self, name: str):
        """The class behind a name, imported but not checked for its extra (cheap: for declarations)."""
        table = self.table()
        if name not in table:
            close = difflib.get_close_matches(name, table, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else f"known {self.kind}s: {', '.join(self.names())}"
            raise BadInput(f"unknown {self.kind} {name!r}; {hint}")
        module, attr = table[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def get(self, name: str):
        """An instance; unknown names get a did-you-mean, missing extras the pip command."""
        cls = self.cls(name)
        missing = [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if missing:
            extra = cls.extra or missing[0]
            raise BadInput(f"{self.kind} {name!r} needs {', '.join(missing)}; run: pip install 'optkit[{extra}]'")
        return cls()


methods = Registry("optkit.methods", METHODS, "method")
backends = Registry("optkit.backends", BACKENDS, "engine")


def names() -> list[str]:
    return methods.names()


def get(name: str):
    """A method instance (the registry most callers want)."""
    return methods.get(name)
