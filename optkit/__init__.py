"""optkit: make an LLM cheaper and faster to serve without silently making it worse."""

__version__ = "0.1.0"
