#!/usr/bin/env bash
# The GPU check of the vLLM engine (UNVERIFIED until a session with a GPU runs it): bf16 vs FP8-dynamic vs W4A16
# on SmolLM2, perplexity and decode, served by vLLM's CUDA build (recipes/vllm-gpu.yaml), within 9 minutes.
# Needs: optkit's environment (.venv: torch with CUDA, llm-compressor) and the vLLM environment's CUDA build
# (make setup-vllm picks it where nvidia-smi lists a GPU; both need PyPI, so on a machine without network build
# them first and carry them, or point OPTKIT_ENVS at a prebuilt one). Prints what is missing instead of failing
# half-way; every step has a time limit.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OPTKIT_DATA=${OPTKIT_DATA:-$(cd .. && pwd)/shared/data} OPTKIT_CACHE=${OPTKIT_CACHE:-/tmp/optkit-gpu-check}
nvidia-smi -L || { echo "gpu_check: no GPU visible (nvidia-smi -L failed)"; exit 2; }
"$PY" -c "import torch; assert torch.cuda.is_available(); print('torch', torch.__version__, torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))" \
  || { echo "gpu_check: $PY has no CUDA torch (make setup on this machine)"; exit 2; }
ENV=$(PYTHONPATH=. "$PY" -m optkit.envs path vllm --kind cuda) || exit 2
[ -f "$ENV/.optkit-env" ] || { echo "gpu_check: the vLLM CUDA environment is not built at $ENV (make setup-vllm)"; exit 2; }
"$ENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, torch.cuda.is_available())" || exit 2
start=$(date +%s)
timeout 540 "$PY" -m optkit run recipes/vllm-gpu.yaml -o "${OUT:-reports/vllm-gpu}" --fresh 2>&1 | tail -30
echo "gpu_check: exit ${PIPESTATUS[0]} after $(( $(date +%s) - start )) s; report: ${OUT:-reports/vllm-gpu}/report.json"
