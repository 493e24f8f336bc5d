"""OpenVINO GenAI (NOT YET AN ENGINE): only its environment is declared and built (make setup-openvino), the first
step of issue 25's point 4. The engine (HF folders exported to OpenVINO IR by optimum-intel, weights compressed by
NNCF's data-aware options, run by openvino-genai's LLMPipeline with its precision hints recorded) is not written:
ENGINE stays None until it is. optimum-intel 2.2 caps transformers below 5.6; optkit's environment holds 5.17."""

from optkit.envs import EnvSpec

ENGINE = None
METHODS: dict[str, str] = {}

ENV = EnvSpec(
    name="openvino", folder="optkit.engines.openvino",
    requirements={"cpu": "requirements-cpu.txt"},
    probe="openvino_genai",
    size_note=" (~2 GiB, a few minutes)",
    record=("openvino", "openvino-genai", "openvino-tokenizers", "optimum-intel", "nncf", "torch", "transformers"),
)
