"""llama.cpp: GGUF files run through llama-cpp-python's C API, the GGUF header reader, llama.cpp's converter
and quantizer (gguf.export, gguf.quantize, the importance matrix) and the bare-loop reference."""

ENGINE = "optkit.engines.llamacpp.engine:LlamaCppEngine"
METHODS = {
    "gguf.export": "optkit.engines.llamacpp.methods:Export",
    "gguf.quantize": "optkit.engines.llamacpp.methods:Quantize",
}
