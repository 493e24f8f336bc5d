"""The recipe loader on thousands of broken inputs: random bytes, truncated and mutated copies of the shipped
recipes. Every one either loads or stops with BadInput (one line, exit 2 through the CLI); none ends in a
traceback."""

import random
from pathlib import Path

import pytest

from optkit.errors import BadInput
from optkit.recipe import load_recipe

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))
JUNK = [b"", b"\x00", b"\xff\xfe", b":", b"- ", b"{", b"}", b"[", b"&a", b"*a", b"!!python/object:os.system",
        b"\t", b"\n  ", b"%YAML 9.9\n", b"2001-13-45", b"1e999", b"~", b"!!binary |\n  =", b"? ", b"\xe9",
        b"name: ", b"variants: 3", b"- name: x\n", b"steps: {method: 1}", b"<<: *a", b"'", b'"', b"#", b"|"]
CASES = 3000


def cases(rng: random.Random):
    texts = [p.read_bytes() for p in RECIPES]
    for i in range(CASES):
        kind = i % 4
        if kind == 0:  # random bytes
            yield bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        elif kind == 1:  # a shipped recipe cut anywhere
            t = rng.choice(texts)
            yield t[:rng.randrange(len(t))]
        elif kind == 2:  # a shipped recipe with junk spliced in
            t = bytearray(rng.choice(texts))
            for _ in range(rng.randrange(1, 4)):
                at = rng.randrange(len(t) + 1)
                t[at:at + rng.randrange(0, 8)] = rng.choice(JUNK)
            yield bytes(t)
        else:  # a shipped recipe with bytes flipped
            t = bytearray(rng.choice(texts))
            for _ in range(rng.randrange(1, 6)):
                t[rng.randrange(len(t))] = rng.randrange(256)
            yield bytes(t)


def test_recipe_loader_never_raises_anything_but_bad_input(tmp_path):
    assert RECIPES, "the shipped recipes are the fuzzer's seeds"
    path = tmp_path / "fuzz.yaml"
    outcomes = {"loaded": 0, "refused": 0}
    for data in cases(random.Random(0)):
        path.write_bytes(data)
        try:
            load_recipe(path)
            outcomes["loaded"] += 1
        except BadInput as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(path)), str(exc)
            outcomes["refused"] += 1
    assert sum(outcomes.values()) == CASES and outcomes["refused"] > CASES / 2, outcomes


@pytest.mark.parametrize("data, message", [
    (b"name: x\xff\n", r"not UTF-8 text \(byte 0xff"),
    (b"name: [\n", "not valid YAML"),
    (b"name: x\nmodel: {checkpoint: m}\nvariants: [{name: a}]\ncreated: 2001-13-45\n", "cannot be read"),
])
def test_each_kind_of_bad_recipe_is_one_line(tmp_path, data, message):
    path = tmp_path / "r.yaml"
    path.write_bytes(data)
    with pytest.raises(BadInput, match=message):
        load_recipe(path)
