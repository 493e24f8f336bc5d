"""Sliding-window perplexity: exact when one window covers the text, every token scored once otherwise."""

import math

import pytest
import torch

from optkit.evaluators.perplexity import evaluate, summarize, token_nlls
from optkit.recipe import PerplexitySpec


def test_single_window_matches_the_model_loss(tiny_lm):
    tokens = list(range(3, 103))
    nlls = token_nlls(tiny_lm, tokens, window=512, stride=256)
    assert len(nlls) == len(tokens) - 1
    with torch.inference_mode():
        loss = tiny_lm.model(torch.tensor([tokens]), labels=torch.tensor([tokens])).loss.item()
    assert sum(nlls) / len(nlls) == pytest.approx(loss, rel=1e-5)


@pytest.mark.parametrize("window, stride", [(32, 32), (32, 8), (40, 13)])
def test_every_token_scored_once(tiny_lm, window, stride):
    tokens = [(i * 7) % 300 + 3 for i in range(150)]
    assert len(token_nlls(tiny_lm, tokens, window, stride)) == len(tokens) - 1


def test_more_context_does_not_hurt_much_and_stderr_is_reported(tiny_lm, text_file):
    [result] = evaluate(tiny_lm, PerplexitySpec(path=str(text_file), max_tokens=600, window=64, stride=32))
    assert result.metric == "token_perplexity" and not result.higher_is_better
    assert result.n == 599
    assert 1 < result.value < 2 * tiny_lm.vocab_size  # a random model is roughly uniform
    assert result.stderr is not None and result.stderr > 0


def test_summarize_block_stderr():
    ppl, se, mean = summarize([1.0] * 256)
    assert ppl == pytest.approx(math.e) and se == pytest.approx(0.0) and mean == 1.0
    assert summarize([1.0] * 100)[1] is not None  # short texts still get an error bar
    ppl, se, _ = summarize([0.0] * 128 + [2.0] * 128, block=128)
    assert ppl == pytest.approx(math.e) and se == pytest.approx(math.e * 1.0)


def test_missing_data_names_both_ways(tiny_lm, monkeypatch, tmp_path):
    from optkit.errors import BadInput

    monkeypatch.setenv("OPTKIT_DATA", str(tmp_path))
    with pytest.raises(BadInput, match="set OPTKIT_DATA.*or unset it to fetch"):
        evaluate(tiny_lm, PerplexitySpec())
