"""Loaded-model backends other than PyTorch (the TorchLM interface lives in optkit.backend)."""
