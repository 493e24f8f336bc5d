"""OpenVINO: HF folders (and the safetensors folders optkit converts GGUF files to) exported to OpenVINO IR by
optimum-intel, scored through OVModelForCausalLM's logits and served by openvino-genai where its tokenizer
converts; weights compressed to int8 / int4 by NNCF (ov.compress). In an environment of its own (envs.py:
make setup-openvino): optimum-intel 2.2 caps transformers below 5.6; optkit's environment holds 5.17."""

from optkit.envs import EnvSpec

ENGINE = "optkit.engines.openvino.engine:OpenVinoEngine"
METHODS: dict[str, str] = {"ov.compress": "optkit.engines.openvino.compress:OvCompress"}

ENV = EnvSpec(
    name="openvino", folder="optkit.engines.openvino",
    requirements={"cpu": "requirements-cpu.txt"},
    probe="openvino_genai",
    # optimum-intel pulls PyPI's torchvision, built against another torch than the pinned CPU one: with it present,
    # `from optimum.intel import OVModelForCausalLM` fails (transformers' AutoProcessor import: "operator
    # torchvision::nms does not exist"). Text models need none of it; transformers imports it only if present.
    remove=("torchvision",),
    size_note=" (~2 GiB, a few minutes)",
    record=("openvino", "openvino-genai", "openvino-tokenizers", "optimum-intel", "nncf", "torch", "transformers"),
)
