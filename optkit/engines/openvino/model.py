"""A model in OpenVINO IR behind optkit's LoadedModel: scored through optimum-intel's OVModelForCausalLM (full
float32 logits), decoded for the benchmark by openvino-genai's ContinuousBatchingPipeline (serving.py) where the
tokenizer converted, else by OVModelForCausalLM (the result says which, in engine_run.settings).

OVModelForCausalLM's export is stateful: the KV cache lives inside the infer request, not in a tensor optkit holds.
A cache here is therefore the ids it has seen (_State); a call that continues the request's live state appends to
it, any other call (an older cache, another sequence) runs its whole sequence again from an empty state, so a
result never depends on which call came before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from optkit.engines.base import LoadedModel


@dataclass
class _State:
    ids: object  # (batch, seq) torch tensor: every token the request has seen
    serial: int  # which live state it is (a later call makes the older ones stale)


class OvLM(LoadedModel):
    engine = "openvino"

    def __init__(self, model, folder: Path, fmt: str, tokenizer, config, params: int, settings: dict,
                 startup: dict, decoder=None):
        self.model, self.folder, self.format, self.device = model, folder, fmt, "cpu"
        self.tokenizer, self.config, self.params = tokenizer, config, params
        self.engine_settings, self.startup_seconds = settings, startup
        self.decoder = decoder  # serving.GenAIDecoder, or None: start/step through OVModelForCausalLM
        self._serial = 0
        self._live: _State | None = None

    @property
    def dtype(self) -> str:
        hint = self.engine_settings.get("INFERENCE_PRECISION_HINT")
        return {"f32": "float32", "f16": "float16"}.get(hint, "bfloat16")

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("openvino_model.*"))

    def _forward(self, ids, continue_from: _State | None):
        import torch

        whole = ids if continue_from is None else torch.cat([continue_from.ids, ids], dim=1)
        live = continue_from is not None and continue_from is self._live
        feed = ids if live else whole
        mask = torch.ones(whole.shape, dtype=torch.int64)
        past = ((),) if live else None  # stateful: a non-None past continues the request's state
        out = self.model(input_ids=feed, attention_mask=mask, past_key_values=past)
        logits = out.logits.float()
        if not live and continue_from is not None:  # replayed the whole sequence: only the new positions
            logits = logits[:, -ids.shape[1]:]
        self._serial += 1
        self._live = _State(whole, self._serial)
        return logits, self._live

    def logits(self, input_ids, past=None):
        return self._forward(input_ids.cpu(), past)

    def start(self, input_ids):
        if self.decoder is not None:
            return self.decoder.start(input_ids)
        logits, state = self._forward(input_ids.cpu(), None)
        return logits[:, -1], state

    def step(self, token_ids, past):
        if self.decoder is not None:
            return self.decoder.step(token_ids, past)
        logits, state = self._forward(token_ids.reshape(-1, 1).cpu(), past)
        return logits[:, -1], state

    def expect_decode(self, tokens: int) -> None:
        if self.decoder is not None:
            self.decoder.budget = tokens

    def save(self, folder) -> str | None:
        import shutil

        shutil.copytree(self.folder, folder, dirs_exist_ok=True)
        return "openvino"
