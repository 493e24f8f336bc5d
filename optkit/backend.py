"""The one small interface every loaded model exposes, so evaluators and meters never branch on backend."""

from __future__ import annotations

import io


class TorchLM:
    """A PyTorch causal LM (plain, torchao or dynamically quantized) with its tokenizer."""

    backend = "torch"

    def __init__(self, model, tokenizer, device: str = "cpu"):
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        # logical weight count as loaded, before any quantization packs weights out of sight
        self.params = sum({p.data_ptr(): p.numel() for p in model.parameters()}.values())

    @property
    def dtype(self) -> str:
        import torch

        floats = [p.dtype for p in self.model.parameters() if p.dtype.is_floating_point]
        return str(floats[0] if floats else torch.float32).removeprefix("torch.")

    @property
    def config(self):
        """The HF config: what bench and roofline read, whatever runs the model."""
        return self.model.config

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def logits(self, input_ids, past=None):
        """Forward pass: returns (logits as float32 on the model device, new cache)."""
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=input_ids.to(self.device), past_key_values=past, use_cache=past is not None)
        return out.logits.float(), out.past_key_values

    def start(self, input_ids):
        """Prefill: run the prompt, return (last-position logits, cache)."""
        import torch
        from transformers import DynamicCache

        with torch.inference_mode():
            out = self.model(input_ids=input_ids.to(self.device), past_key_values=DynamicCache(), use_cache=True)
        return out.logits[:, -1], out.past_key_values

    def step(self, token_ids, past):
        """One decode step for a (batch, 1) tensor of token ids."""
        import torch

        with torch.inference_mode():
            out = self.model(input_ids=token_ids.to(self.device), past_key_values=past, use_cache=True)
        return out.logits[:, -1], out.past_key_values

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()

    def size_bytes(self) -> int:
        """Bytes of the serialized state dict: what the weights really cost on disk."""
        import torch

        buf = _CountingWriter()
        torch.save(self.model.state_dict(), buf)
        return buf.count


class _CountingWriter(io.RawIOBase):
    def __init__(self):
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        n = len(memoryview(data))
        self.count += n
        return n
