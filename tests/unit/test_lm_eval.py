"""lm-eval tasks on the loaded tiny model: the LM wrapper's scores, an offline task end to end, repeatability,
the missing-data error, the recipe fields and the report column."""

from __future__ import annotations

import pytest

from tests.conftest import DATA

pytest.importorskip("lm_eval")


@pytest.fixture(scope="module")
def lm(tiny_model):
    from optkit import checkpoints, loading

    return loading.load(checkpoints.resolve(str(tiny_model)))


@pytest.fixture(scope="module")
def arc_runs(lm):
    """arc_easy, limit 20, evaluated twice on the same model."""
    from optkit.evaluators.lm_eval import evaluate
    from optkit.recipe import TaskSpec

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTKIT_DATA", str(DATA))
        return [evaluate(lm, [TaskSpec(name="arc_easy", limit=20, batch_size=4)]) for _ in range(2)]


def _req(kind, *args):
    from lm_eval.api.instance import Instance

    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def _direct_ll(lm, ids: list[int], n_cont: int) -> float:
    import torch

    logits, _ = lm.logits(torch.tensor([ids]))
    logp = torch.log_softmax(logits[0, :-1], dim=-1)
    target = torch.tensor(ids[1:])
    return float(logp.gather(1, target[:, None])[-n_cont:].sum())


def test_loglikelihood_matches_direct_computation(lm):
    from optkit.evaluators.lm_eval_model import wrap

    # two share a context (the cached multiple-choice path), the rest take the padded batch path
    pairs = [("The quick brown fox", " jumps over"), ("The quick brown fox", " sleeps."), ("Numbers like 12,", " 345"),
             ("A small model reads a little text, counts its tokens and", " guesses the next one."),
             ("", "The lazy dog.")]
    got = wrap(lm, batch_size=3).loglikelihood([_req("loglikelihood", c, x) for c, x in pairs])
    tok = lm.tokenizer
    for (ctx, cont), (ll, greedy) in zip(pairs, got):
        if ctx:
            ctx_ids = tok.encode(ctx)
            whole = tok.encode(ctx + cont)
            expected = _direct_ll(lm, whole, len(whole) - len(ctx_ids))
        else:  # empty context: conditioned on the prefix token, as lm-eval does
            cont_ids = tok.encode(cont)
            expected = _direct_ll(lm, [tok.bos_token_id, *cont_ids], len(cont_ids))
        assert ll == pytest.approx(expected, abs=1e-4)
        assert isinstance(greedy, bool)


def test_rolling_and_generate(lm):
    import torch

    from optkit.evaluators.lm_eval_model import wrap

    wrapped = wrap(lm)
    text = "The quick brown fox jumps over the lazy dog."
    (rolling,) = wrapped.loglikelihood_rolling([_req("loglikelihood_rolling", text)])
    ((whole, _),) = wrapped.loglikelihood([_req("loglikelihood", "", text)])
    assert rolling == pytest.approx(whole, abs=1e-4)  # short text: one window, same as scoring after BOS

    (out,) = wrapped.generate_until([_req("generate_until", "The quick", {"until": [], "max_gen_toks": 5})])
    ids = lm.tokenizer.encode("The quick")
    for _ in range(5):  # greedy without a cache must give the same tokens
        logits, _ = lm.logits(torch.tensor([ids]))
        ids.append(int(logits[0, -1].argmax()))
    assert out == lm.tokenizer.decode(ids[len(lm.tokenizer.encode("The quick")):])


def test_offline_arc_easy_end_to_end(arc_runs):
    results = {r.metric: r for r in arc_runs[0]}
    assert set(results) == {"acc", "acc_norm"}
    acc = results["acc"]
    assert acc.task == "arc_easy" and acc.details["lm_eval_task"] == "optkit_arc_easy"
    assert acc.n == 20 and acc.higher_is_better and 0 <= acc.value <= 1
    assert acc.stderr is not None and acc.stderr > 0
    samples, chosen = acc.details["samples"], acc.details["chosen"]
    assert len(samples) == len(chosen) == 20 and set(samples) <= {0, 1}
    assert acc.value == pytest.approx(sum(samples) / 20)
    assert acc.details["doc_ids"] == list(range(20))


def test_same_model_twice_gives_identical_samples(arc_runs):
    first, second = arc_runs
    assert [(r.metric, r.value, r.details["samples"]) for r in first] == \
        [(r.metric, r.value, r.details["samples"]) for r in second]
    assert first[0].details["chosen"] == second[0].details["chosen"]


def test_missing_data_is_one_line(lm, monkeypatch, tmp_path):
    from optkit.errors import BadInput
    from optkit.evaluators.lm_eval import evaluate
    from optkit.recipe import TaskSpec

    monkeypatch.delenv("OPTKIT_DATA", raising=False)
    with pytest.raises(BadInput) as exc:
        evaluate(lm, [TaskSpec(name="optkit_arc_easy", limit=5)])
    msg = str(exc.value)
    assert "\n" not in msg and "OPTKIT_DATA" in msg and "hub task name arc_easy" in msg

    monkeypatch.setenv("OPTKIT_DATA", str(tmp_path))  # set, but the files are not there
    with pytest.raises(BadInput) as exc:
        evaluate(lm, [TaskSpec(name="arc_easy", limit=5)])
    assert "\n" not in str(exc.value) and "arc_easy/test.jsonl" in str(exc.value)


def test_task_spec_is_strict():
    from optkit.errors import BadInput
    from optkit.recipe import parse_recipe

    base = {"name": "r", "model": {"checkpoint": "x"}, "variants": [{"name": "v"}]}
    recipe = parse_recipe({**base, "eval": {"tasks": [{"name": "arc_easy", "limit": 50}]}})
    assert recipe.eval.tasks[0].num_fewshot == 0 and recipe.eval.tasks[0].batch_size == 8
    with pytest.raises(BadInput, match="did you mean 'limit'"):
        parse_recipe({**base, "eval": {"tasks": [{"name": "arc_easy", "limt": 50}]}})


def test_summary_shows_task_column(arc_runs):
    from optkit.report.summary import markdown, text_table
    from optkit.results import Environment, Report, VariantResult

    report = Report(run="r", created="now", checkpoint="tiny", baseline="v",
                    environment=Environment(optkit="0", python="3", device="cpu"),
                    variants=[VariantResult(name="v", status="ok", accuracy=arc_runs[0])])
    acc = arc_runs[0][0]
    assert "arc_easy acc" in text_table(report) and f"{acc.value:.3f}" in text_table(report)
    assert "| arc_easy acc |" in markdown(report)
