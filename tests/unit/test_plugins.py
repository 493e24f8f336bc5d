"""A toy engine and a toy method, registered the way a third-party package registers them (entry points in an
installed distribution's metadata), nothing edited in optkit/: a recipe that exports the tiny model to the toy
format and measures it in the toy engine runs end to end through the CLI, and preflight reasons about the new
format from the declarations alone."""

import json
import textwrap

import torch

from tests.conftest import optkit_cli

PLUGIN = '''
"""A bigram engine: the next token depends on the current token only. toy.export tabulates a causal LM's
next-token logits for every single-token context (one forward pass per vocabulary entry)."""
import time
from pathlib import Path

from optkit import registry
from optkit.engines.base import Engine, LoadedModel
from optkit.formats import Format
from optkit.engines.method import Method
from optkit.results import StepRecord

TOY = Format("toy", engine="toy", label="a bigram table", artifact="toy-file")


class ToyLM(LoadedModel):
    engine = "toy"

    def __init__(self, table, like):
        self.table, self.tokenizer, self.config, self.params = table, like.tokenizer, like.config, like.params
        self.format, self.device = "toy", "cpu"

    @property
    def dtype(self):
        return "float32"

    def logits(self, input_ids, past=None):
        return self.table[input_ids.cpu()], None

    def start(self, input_ids):
        return self.table[input_ids[:, -1].cpu()], None

    def step(self, token_ids, past):
        return self.table[token_ids[:, -1].cpu()], None

    def size_bytes(self):
        return self.table.numel() * 4


class ToyEngine(Engine):
    name, label, formats = "toy", "Toy", ("toy",)

    def open(self, path, like, **options):
        import torch

        return ToyLM(torch.load(path), like)


class ToyExport(Method):
    name = "toy.export"
    accepts = ("hf",)
    produces = TOY

    def bytes_per_weight(self, params, in_features, act_bytes):
        return None

    def apply(self, lm, params, auto_exclude=None):
        import tempfile

        import torch

        started = time.perf_counter()
        every = torch.arange(lm.vocab_size)[:, None]
        table = lm.logits(every)[0][:, 0].float().cpu()
        self.folder = tempfile.TemporaryDirectory(prefix="toy-")
        path = Path(self.folder.name) / "table.pt"
        torch.save(table, path)
        new = registry.engines.get("toy").open(path, like=lm)
        new.owner = self.folder  # the temp folder lives as long as the model
        return new, StepRecord(method=self.name, seconds=time.perf_counter() - started,
                               modules_changed=["<whole model>"], details={"table": list(table.shape)})
'''

ENTRY_POINTS = """\
[optkit.methods]
toy.export = toyplugin:ToyExport

[optkit.engines]
toy = toyplugin:ToyEngine
"""

RECIPE = """\
name: toy
model: {{checkpoint: {model}}}
variants:
  - name: base
  - name: bigram
    steps:
      - {{method: toy.export}}
eval:
  perplexity: {{path: {text}, max_tokens: 200, window: 64, stride: 32}}
  fidelity: {{path: {text}, samples: 2, seq_len: 32}}
bench: {{prompt_len: 16, gen_len: 4, warmup: 1, repeats: 2, max_repeats: 2, min_seconds: 0}}
"""


def plugin_dir(tmp_path):
    folder = tmp_path / "site"
    (folder / "toyplugin-0.1.dist-info").mkdir(parents=True)
    (folder / "toyplugin.py").write_text(PLUGIN)
    (folder / "toyplugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplugin\n"
                                                                 "Version: 0.1\n")
    (folder / "toyplugin-0.1.dist-info" / "entry_points.txt").write_text(ENTRY_POINTS)
    return folder


def test_a_plugin_engine_and_method_run_a_recipe(tmp_path, tiny_model, tiny_lm, text_file):
    env = {"PYTHONPATH": str(plugin_dir(tmp_path)), "OPTKIT_NO_CACHE": "1"}
    listed = optkit_cli("methods", env=env)
    assert "toy.export" in listed.stdout.split()
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(RECIPE.format(model=tiny_model, text=text_file))
    run = optkit_cli("run", str(recipe), "--out", str(tmp_path / "run"), env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    base, bigram = report["variants"]
    assert base["status"] == bigram["status"] == "ok"
    assert bigram["steps"][0]["details"]["table"] == [tiny_lm.vocab_size, tiny_lm.vocab_size]
    assert bigram["bench"]["decode_tokens_per_s"]["median"] > 0
    assert {a["metric"] for a in bigram["accuracy"]} >= {"token_perplexity", "kl_mean", "top1_agreement"}

    # the toy engine's perplexity is the plain bigram computation on the same tokens (first 200, scored once)
    from optkit.evaluators.perplexity import summarize

    ids = tiny_lm.encode(text_file.read_text())[:200]
    table = tiny_lm.logits(torch.arange(tiny_lm.vocab_size)[:, None])[0][:, 0]
    logp = torch.log_softmax(table[torch.tensor(ids[:-1])], dim=-1)
    nll = (-logp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0]).tolist()
    ppl = next(a["value"] for a in bigram["accuracy"] if a["metric"] == "token_perplexity")
    assert abs(ppl - summarize(nll)[0]) < 1e-3 * ppl


def test_preflight_reasons_about_a_plugin_format(tmp_path, tiny_model, text_file):
    env = {"PYTHONPATH": str(plugin_dir(tmp_path))}
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(textwrap.dedent(f"""\
        name: bad
        model: {{checkpoint: {tiny_model}}}
        variants:
          - name: v
            steps:
              - {{method: toy.export}}
              - {{method: torchao.int8_weight_only}}
        """))
    run = optkit_cli("run", str(recipe), "--out", str(tmp_path / "run"), env=env)
    assert run.returncode == 2, run.stderr[-2000:]
    [line] = [ln for ln in run.stderr.splitlines() if ln.startswith("optkit: error")]
    assert "step 2 (torchao.int8_weight_only)" in line and "exported the model to Toy" in line
    assert not (tmp_path / "run" / "variants").exists()
