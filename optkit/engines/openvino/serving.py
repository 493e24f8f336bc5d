"""Decoding for the benchmark the way OpenVINO serves: openvino-genai's ContinuousBatchingPipeline, the paged-
attention scheduler LLMPipeline runs on CPU, driven one engine step at a time (add_request / step, what
LLMPipeline.generate does inside). start adds one request per prompt row, sized by expect_decode, and returns when
every row has its first token; each step returns the next token of every row. The "logits" returned are one-hot
rows of the tokens openvino-genai's greedy sampler chose, so the benchmark's argmax picks exactly its tokens.
"""

from __future__ import annotations

import itertools

from optkit.errors import RunError

KV_CACHE_GB = 1  # the paged KV cache openvino-genai reserves (GiB): room for the benchmark's batch curve


class GenAIDecoder:
    def __init__(self, folder, properties: dict, vocab_size: int, max_len: int):
        import openvino_genai as genai

        scheduler = genai.SchedulerConfig()
        scheduler.cache_size = KV_CACHE_GB
        self.pipe = genai.ContinuousBatchingPipeline(str(folder), scheduler, "CPU", properties)
        self.vocab_size, self.max_len = vocab_size, max_len
        self.budget: int | None = None
        self._handles: list = []
        self._queues: list[list[int]] = []
        self._count = itertools.count()

    def _drop(self) -> None:
        for handle in self._handles:
            handle.cancel()  # the request ends at the next step and its blocks are freed
        while self.pipe.has_non_finished_requests():
            self.pipe.step()
        self._handles, self._queues = [], []

    def _pull(self) -> None:
        for handle, queue in zip(self._handles, self._queues):
            if handle.can_read():
                for out in handle.read().values():
                    queue.extend(out.generated_ids)

    def _next(self):
        import torch

        while any(not q for q in self._queues):
            if not self.pipe.has_non_finished_requests():
                self._pull()
                if any(not q for q in self._queues):
                    raise RunError("openvino-genai decoded fewer tokens than were asked for (more step() calls "
                                   "than expect_decode announced)")
                break
            self.pipe.step()
            self._pull()
        tokens = torch.tensor([q.pop(0) for q in self._queues])
        onehot = torch.zeros(len(tokens), self.vocab_size)
        onehot[torch.arange(len(tokens)), tokens] = 1.0
        return onehot, self

    def start(self, input_ids):
        import numpy as np
        import openvino as ov
        import openvino_genai as genai

        self._drop()
        rows = input_ids.tolist()
        room = self.max_len - max(len(r) for r in rows)
        budget = min(self.budget, room - 1) if self.budget else room - 1
        config = genai.GenerationConfig()
        config.max_new_tokens = config.min_new_tokens = budget + 1
        config.ignore_eos, config.do_sample = True, False
        for row in rows:
            tensor = ov.Tensor(np.array([row], dtype=np.int64))
            self._handles.append(self.pipe.add_request(next(self._count), tensor, config))
            self._queues.append([])
        return self._next()

    def step(self, token_ids, past):
        return self._next()
