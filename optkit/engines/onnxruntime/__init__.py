"""ONNX Runtime: ONNX folders, the export that writes them from PyTorch, onnxruntime's quantizers (dynamic
int8, int4, static int8 with calibration) and their auto_exclude search."""

ENGINE = "optkit.engines.onnxruntime.engine:OrtEngine"
METHODS = {
    "onnx.export": "optkit.engines.onnxruntime.export:ExportOnnx",
    "ort.dynamic_int8": "optkit.engines.onnxruntime.quantize:DynamicInt8",
    "ort.int4": "optkit.engines.onnxruntime.quantize:Int4",
    "ort.static_int8": "optkit.engines.onnxruntime.static:StaticInt8",
}
