"""ort.static_int8: onnxruntime quantize_static in QDQ format. Activation ranges come from calibration text
(optkit.calibration: N samples x seq_len, seeded) run through the exported decoder with an empty cache, so
they are the ranges of the very graph being quantized.

Calibration runs once per (model, calibration settings) and is cached as JSON in the model's work folder:
auto_exclude trials then re-quantize without re-calibrating (ranges come from the float model, whichever
nodes are quantized, so the cache is exact). Memory stays bounded: samples go through a few at a time
(CalibStridedMinMax) and only op_types (MatMul by default) are observed.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Literal

from pydantic import Field

from optkit.calibration import CalibrationSpec, calibration_batch
from optkit.engines.onnxruntime.quantize import OrtParams, _OrtQuant

STRIDE = 4  # calibration samples held in memory at once (their intermediate outputs are large)


class StaticParams(OrtParams):
    calibration: CalibrationSpec = Field(default_factory=lambda: CalibrationSpec(samples=16, seq_len=128))
    calibrate_method: Literal["MinMax", "Entropy", "Percentile"] = "MinMax"
    per_channel: bool = False
    reduce_range: bool = False
    activation_type: Literal["QUInt8", "QInt8"] = Field(
        default="QUInt8", description="QUInt8 for x86 (U8S8), QInt8 for ARM (onnxruntime's CPU advice)")
    weight_type: Literal["QInt8", "QUInt8"] = "QInt8"


def _reader(lm, batch):
    """A CalibrationDataReader over the rows of batch, one sample per session run."""
    from onnxruntime.quantization import CalibrationDataReader

    class Rows(CalibrationDataReader):
        def __init__(self):
            self.set_range(0, len(batch))

        def set_range(self, start_index: int, end_index: int) -> None:
            self._rows = iter(range(start_index, min(end_index, len(batch))))

        def get_next(self):
            i = next(self._rows, None)
            return None if i is None else lm.feed(batch[i:i + 1])

        def __len__(self) -> int:
            return len(batch)

    return Rows()


class StaticInt8(_OrtQuant):
    name = "ort.static_int8"
    slug = "static_int8"
    Params = StaticParams

    def bytes_per_weight(self, params: StaticParams, in_features, act_bytes):
        return 1 + (5 / in_features if params.per_channel else 0)

    def quantize(self, lm, dst, params: StaticParams, targets, excluded, external, workdir: Path):
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        samples = params.calibration.samples
        stride = next(s for s in (STRIDE, 3, 2, 1) if samples % s == 0)
        kwargs, cached = {}, False
        if "calibration_cache_path" in inspect.signature(quantize_static).parameters:  # newer onnxruntime only
            key = "|".join([str(lm.model_path), params.calibration.model_dump_json(), params.calibrate_method,
                            ",".join(params.op_types)])
            cache = workdir / f"calibration-{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"
            kwargs["calibration_cache_path"], cached = cache, cache.is_file()
        reader = None if cached else _reader(lm, calibration_batch(lm, params.calibration))
        quantize_static(
            lm.model_path, dst, reader,
            quant_format=QuantFormat.QDQ, op_types_to_quantize=params.op_types, per_channel=params.per_channel,
            reduce_range=params.reduce_range, activation_type=getattr(QuantType, params.activation_type),
            weight_type=getattr(QuantType, params.weight_type), nodes_to_quantize=targets,
            nodes_to_exclude=excluded, use_external_data_format=external,
            calibrate_method=getattr(CalibrationMethod, params.calibrate_method),
            extra_options={"CalibStridedMinMax": stride}, **kwargs)
