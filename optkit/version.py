"""optkit's version, in a module of its own so that the files that record it (artifacts, reports, cache keys) need
not import the package's face, which reaches the whole API. pyproject.toml carries the same string."""

__version__ = "0.1.0"
