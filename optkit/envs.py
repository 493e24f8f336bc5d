"""Engine environments: an engine whose library cannot share optkit's environment (vLLM pins its own torch and
transformers; OpenVINO's exporter caps transformers) declares a pinned virtual environment, and its workers run
under that environment's interpreter, speaking the same protocol (job file in, VariantResult file out).

An environment is built from the requirements file its engine folder ships for the build kind (cpu, or cuda where
nvidia-smi sees a GPU), on first use or by `make setup-<name>` (`python -m optkit.envs build NAME`), once per
machine: it lives under OPTKIT_ENVS (default ~/.cache/optkit/envs, beside the llama.cpp wheel cache, so every clone
and worktree shares it; not under OPTKIT_CACHE, which tests point at throw-away folders), named after the
requirements' hash, so a changed pin builds a new one and never edits an old one. The main environment is never
touched: the new one is made by `python -m venv` and filled by its own pip. Its package versions are recorded
(versions.json) and go into every result measured in it.

optkit itself is not installed there: the worker imports it through PYTHONPATH from a folder holding only a link
to this optkit package (never the main environment's site-packages, whose torch would shadow the engine's).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from optkit.errors import BadInput, RunError

STAMP = ".optkit-env"  # written last: a folder with it is complete


@dataclass(frozen=True)
class EnvSpec:
    """What an engine's environment is made of; declared in the engine folder's __init__.py."""

    name: str  # "vllm": the make target is setup-<name>
    folder: str  # the engine folder (package path) holding the requirements files
    requirements: dict[str, str]  # build kind ("cpu", "cuda") -> requirements file name in `folder`
    probe: str  # a module whose import proves the environment works
    # packages the install pulls that break the import of the engine here, removed afterwards (the engine folder
    # says why next to the list)
    remove: tuple[str, ...] = ()
    # build kind -> PyTorch wheel index, added only when pip cannot find the pinned torch otherwise (a local
    # wheel or a mirror is used as it is)
    torch_index: dict[str, str] = field(default_factory=dict)
    size_note: str = ""  # for people, before a first build: what it downloads
    record: tuple[str, ...] = ()  # distributions whose versions every result measured in it records


def root() -> Path:
    return Path(os.environ.get("OPTKIT_ENVS") or Path.home() / ".cache" / "optkit" / "envs")


def build_kind() -> str:
    """cuda where nvidia-smi lists a GPU (as the Makefile decides), else cpu; OPTKIT_ENV_BUILD overrides."""
    if os.environ.get("OPTKIT_ENV_BUILD"):
        return os.environ["OPTKIT_ENV_BUILD"]
    try:
        ok = subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return "cuda" if ok else "cpu"


def requirements(spec: EnvSpec, kind: str) -> Path:
    if kind not in spec.requirements:
        raise BadInput(f"the {spec.name} environment has no {kind} build (it has: {', '.join(spec.requirements)})")
    import importlib.util

    folder = Path(importlib.util.find_spec(spec.folder).submodule_search_locations[0])
    return folder / spec.requirements[kind]


def location(spec: EnvSpec, kind: str | None = None) -> Path:
    """Where the environment for this build kind and these exact pins lives (built or not)."""
    kind = kind or build_kind()
    text = requirements(spec, kind).read_bytes() + repr((spec.remove, sys.version_info[:2])).encode()
    return root() / f"{spec.name}-{kind}-{hashlib.sha256(text).hexdigest()[:10]}"


def python(folder: Path) -> Path:
    return folder / "bin" / "python"


def ready(spec: EnvSpec, kind: str | None = None) -> Path | None:
    """The environment's folder when it is built, else None."""
    folder = location(spec, kind)
    return folder if (folder / STAMP).is_file() else None


def versions(folder: Path) -> dict[str, str]:
    try:
        return json.loads((folder / "versions.json").read_text())
    except (OSError, ValueError):
        return {}


def key_versions(folder: Path, spec: EnvSpec) -> dict[str, str]:
    """The versions of the distributions the spec records, as built."""
    have = versions(folder)
    return {name: have[name] for name in spec.record if name in have}


def inside(spec: EnvSpec) -> bool:
    """Is this process running in the spec's environment (the worker's side)?"""
    return Path(sys.prefix).name.startswith(f"{spec.name}-") and Path(sys.prefix).parent == root()


def _run(cmd: list, log, what: str, env: dict | None = None) -> None:
    print("+", " ".join(map(str, cmd)), file=log, flush=True)
    code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if code:
        raise RunError(f"building the environment failed at: {what} (exit {code}); see {log.name}")


def _torch_pin(req: Path) -> str | None:
    for line in req.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("torch=="):
            return line
    return None


def build(spec: EnvSpec, kind: str | None = None, say=print) -> Path:
    """Build the environment if it is not there (a lock keeps two processes from building it at once); its
    folder. Prints what it costs: minutes and GiB."""
    import fcntl

    kind = kind or build_kind()
    folder = location(spec, kind)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / STAMP).is_file():
            return folder
        say(f"building the {spec.name} environment ({kind}) in {folder}, once per machine{spec.size_note}; "
            f"log: {folder}.log")
        started = time.perf_counter()
        shutil.rmtree(folder, ignore_errors=True)
        req = requirements(spec, kind)
        # pip's own settings from this process (a venv's PIP_* would point pip at the main environment)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_PREFIX")}
        with open(f"{folder}.log", "w") as log:
            base = getattr(sys, "_base_executable", sys.executable)
            # no pip inside (seconds instead of ~20 s of ensurepip): this interpreter's pip installs into it
            _run([base, "-m", "venv", "--without-pip", folder], log, "python -m venv", env)
            pip = [sys.executable, "-m", "pip", "--python", str(python(folder))]
            extra = []
            pin, index = _torch_pin(req), spec.torch_index.get(kind)
            if pin and index:  # a local wheel or mirror first; the PyTorch index only when pip finds no such torch
                found = subprocess.run([*pip, "install", "--dry-run", "--no-deps", "-q", pin], stdout=log,
                                       stderr=subprocess.STDOUT, env=env).returncode == 0
                extra = [] if found else ["--extra-index-url", index]
            _run([*pip, "install", "-r", req, *extra], log, f"pip install -r {req.name}", env)
            if spec.remove:
                _run([*pip, "uninstall", "-y", *spec.remove], log, "removing " + ", ".join(spec.remove), env)
            _run([str(python(folder)), "-c", f"import {spec.probe}"], log, f"import {spec.probe}", env)
            frozen = subprocess.run([*pip, "list", "--format", "json"], capture_output=True, text=True, env=env)
            pins = {p["name"].lower(): p["version"] for p in json.loads(frozen.stdout or "[]")}
        (folder / "versions.json").write_text(json.dumps(pins, indent=1, sort_keys=True))
        (folder / STAMP).write_text(req.read_text())
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
        say(f"built the {spec.name} environment in {time.perf_counter() - started:.0f} s, {size / 2**30:.1f} GiB")
        return folder


def source_path(folder: Path) -> Path:
    """A folder holding only a link to this optkit package, for the environment's PYTHONPATH."""
    package = Path(__file__).resolve().parent  # this module's own folder is the optkit package
    links = folder / "optkit-src" / hashlib.sha256(str(package).encode()).hexdigest()[:10]
    if not (links / "optkit").exists():
        links.mkdir(parents=True, exist_ok=True)
        tmp = links / f"optkit.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(package, target_is_directory=True)
        os.replace(tmp, links / "optkit")
    return links


def worker_env(folder: Path, env: dict | None = None) -> dict:
    """The environment variables of a worker under the engine's interpreter: the caller's, with PYTHONPATH
    replaced by the optkit link (nothing of the main environment's paths)."""
    out = dict(os.environ if env is None else env)
    out["PYTHONPATH"] = str(source_path(folder))
    out.pop("VIRTUAL_ENV", None)
    return out


def spec_of(engine: str) -> EnvSpec | None:
    """The environment an engine declares (None: it runs in optkit's own); for a built-in folder without an
    engine yet, the environment its __init__.py declares (ENV), so it can be built ahead."""
    import importlib

    from optkit import registry

    try:
        return getattr(registry.engines.cls(engine), "venv", None)
    except BadInput:
        if engine not in registry.ENGINES:
            return None
        return getattr(importlib.import_module(f"optkit.engines.{engine}"), "ENV", None)


def main(argv: list[str]) -> int:
    """python -m optkit.envs build|path ENGINE [--kind cpu|cuda]"""
    if len(argv) < 2 or argv[0] not in ("build", "path"):
        print("usage: python -m optkit.envs build|path ENGINE [--kind cpu|cuda]", file=sys.stderr)
        return 2
    kind = argv[argv.index("--kind") + 1] if "--kind" in argv else None
    spec = spec_of(argv[1])
    if spec is None:
        print(f"engine {argv[1]!r} declares no environment of its own", file=sys.stderr)
        return 2
    try:
        folder = build(spec, kind) if argv[0] == "build" else location(spec, kind)
    except (BadInput, RunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
