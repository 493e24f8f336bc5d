"""Transforms: quantizers, pruners and exporters share the contract in base.py."""
