"""Engines: one folder per engine family, everything of that family inside it (the engine, its methods, its
file formats' readers, its reference loops). base.py holds the LoadedModel / Engine contracts, method.py the
Method contract; registry.ENGINES names the built-in folders."""
