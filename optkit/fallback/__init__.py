"""Sensitivity-guided fallback (`auto_exclude`): search.py holds what every engine shares (calibration NLL and
log-probs through the LoadedModel interface, the grow/bisect search); torch.py and ort.py rank and build
candidates for PyTorch module transforms and ONNX Runtime quantizers."""
