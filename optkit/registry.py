"""Names -> lazily imported classes, for methods and engines alike, typed: a name resolves only to a subclass
of the contract its registry holds (Method, Engine), so a plugin's entry point that gives something else is
refused with one line naming it.

Built-ins: every folder named in ENGINES under optkit/engines/ declares, in its __init__.py, its engine
(`ENGINE = "module:Class"`, or None for a folder of methods only) and its methods (`METHODS = {name: "module:
Class"}`). Plugins: the entry-point groups `optkit.engines` and `optkit.methods` (name = "module:Class"), never
strings in user files. Importing a class imports no heavy library: each class names the modules it `requires` and
the pip extra that brings them, checked when it is asked for."""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from functools import cache
from typing import Generic, TypeVar

from optkit.errors import BadInput

ENGINES = ("torch", "onnxruntime", "llamacpp", "llmcompressor", "vllm", "openvino")  # folders under optkit/engines/

T = TypeVar("T")


@cache
def _builtins() -> tuple[dict[str, str], dict[str, str]]:
    """(engines, methods) the built-in engine folders declare."""
    engines, methods = {}, {}
    for folder in ENGINES:
        manifest = importlib.import_module(f"optkit.engines.{folder}")
        if manifest.ENGINE:
            engines[folder] = manifest.ENGINE
        methods.update(manifest.METHODS)
    return engines, methods


class Registry(Generic[T]):
    """One kind of plugin: built-ins from the engine folders, plugins from an entry-point group, every class
    checked against `base` when it is imported."""

    def __init__(self, group: str, kind: str, base: str, builtin: int):
        self.group, self.kind, self._base, self._builtin = group, kind, base, builtin

    @property
    def base(self) -> type:
        module, attr = self._base.split(":")
        return getattr(importlib.import_module(module), attr)

    @cache  # noqa: B019 - one table per registry for the life of the process, as entry points are
    def table(self) -> dict[str, str]:
        from importlib.metadata import entry_points

        table = dict(_builtins()[self._builtin])
        for ep in entry_points(group=self.group):
            table.setdefault(ep.name, ep.value)
        return table

    def names(self) -> list[str]:
        return sorted(self.table())

    def cls(self, name: str) -> type[T]:
        """The class behind a name, imported but not checked for its extra (cheap: for declarations)."""
        table = self.table()
        if name not in table:
            close = difflib.get_close_matches(name, table, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}?" if close else f"known {self.kind}s: {', '.join(self.names())}"
            raise BadInput(f"unknown {self.kind} {name!r}; {hint}")
        target = table[name]
        module, _, attr = target.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as exc:
            raise BadInput(f"{self.kind} {name!r} points at {target!r} ({self.group}), which cannot be imported "
                           f"({type(exc).__name__}: {exc}); fix or uninstall the package that declares it") from None
        if not (isinstance(obj, type) and issubclass(obj, self.base)):
            raise BadInput(f"{self.kind} {name!r} ({target!r}, {self.group}) is not a subclass of "
                           f"{self.base.__name__}; fix or uninstall the package that declares it")
        return obj

    def get(self, name: str) -> T:
        """An instance; unknown names get a did-you-mean, missing extras the pip command."""
        cls = self.cls(name)
        # an engine with an environment of its own (envs.py) finds its libraries there, not in this one
        own = getattr(cls, "venv", None) is not None
        missing = [] if own else [m for m in cls.requires if importlib.util.find_spec(m) is None]
        if missing:
            extra = cls.extra or missing[0]
            raise BadInput(f"{self.kind} {name!r} needs {', '.join(missing)}; run: pip install 'optkit[{extra}]'")
        return cls()


engines: Registry = Registry("optkit.engines", "engine", "optkit.engines.base:Engine", 0)
methods: Registry = Registry("optkit.methods", "method", "optkit.engines.method:Method", 1)


def names() -> list[str]:
    return methods.names()


def get(name: str):
    """A method instance (the registry most callers want)."""
    return methods.get(name)
