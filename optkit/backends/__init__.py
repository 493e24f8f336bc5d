"""Engines: one module each (torch.py, ort.py, ...), behind the LoadedModel interface of base.py, found by
name through registry.backends (built-ins, or the `optkit.backends` entry-point group)."""
