"""optkit: make an LLM cheaper and faster to serve without silently making it worse.

The Python API (api.py) is reachable from here: optkit.run, evaluate, bench, quantize, prune, export, gate,
gate_rules, search and Report. They are imported on first use, so `import optkit` (and `optkit --help`) loads
no library."""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING

from optkit.version import __version__

_API = ("run", "evaluate", "bench", "quantize", "prune", "export", "gate", "gate_rules", "search", "Report")
__all__ = ["__version__", *_API]

if TYPE_CHECKING:
    from optkit.api import Report, bench, evaluate, export, gate, gate_rules, prune, quantize, run, search  # noqa: F401


def __getattr__(name: str):
    if name in _API:
        from optkit import api

        return getattr(api, name)
    raise AttributeError(f"module 'optkit' has no attribute {name!r}")


class _Package(types.ModuleType):
    """optkit.gate, optkit.bench and optkit.search are API functions and also the names of modules (gate.py,
    bench.py, the search/ package). Importing a submodule sets it as an attribute of its package, which would turn
    optkit.gate into the module the first time anything imported optkit.gate; the modules stay reachable by their
    full names (sys.modules, `from optkit.gate import evaluate`), the package attribute stays the function."""

    def __setattr__(self, name: str, value) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
