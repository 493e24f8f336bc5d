"""llm-compressor: oneshot methods that write compressed-tensors folders (RTN, GPTQ, AWQ, SmoothQuant). No
engine of its own: the folders load in PyTorch here, and in the engines that serve compressed-tensors."""

ENGINE = None
METHODS = {
    "llmc.rtn": "optkit.engines.llmcompressor.methods:Rtn",
    "llmc.gptq": "optkit.engines.llmcompressor.methods:Gptq",
    "llmc.awq": "optkit.engines.llmcompressor.methods:Awq",
    "llmc.smoothquant": "optkit.engines.llmcompressor.methods:SmoothQuant",
}
