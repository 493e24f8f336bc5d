"""PyTorch through transformers: HF folders, hub ids and converted GGUF files, and the methods that change a
PyTorch model in place (casts, torchao, bitsandbytes, dynamic int8, pruning) with their auto_exclude search."""

ENGINE = "optkit.engines.torch.engine:TorchEngine"
METHODS = {
    "cast": "optkit.engines.torch.casts:Cast",
    "torchao.int8_weight_only": "optkit.engines.torch.torchao:Int8WeightOnly",
    "torchao.int8_dynamic": "optkit.engines.torch.torchao:Int8Dynamic",
    "torchao.int4_weight_only": "optkit.engines.torch.torchao:Int4WeightOnly",
    "torchao.float8_dynamic": "optkit.engines.torch.torchao:Float8Dynamic",
    "torch.dynamic_int8": "optkit.engines.torch.dynamic:DynamicInt8",
    "bnb.int8": "optkit.engines.torch.bnb:LLMInt8",
    "bnb.4bit": "optkit.engines.torch.bnb:FourBit",
    "prune.magnitude": "optkit.engines.torch.prune:Magnitude",
    "prune.2to4": "optkit.engines.torch.prune:TwoFour",
    "prune.wanda": "optkit.engines.torch.prune:Wanda",
}
