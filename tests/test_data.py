"""The toy corpus in data/: held-out text shares no document and no run of 16 tokens with the training text.

Tokens here are a tokenizer-free proxy that is at least as fine as any of the demo's vocabularies would
need: whitespace-separated words for English, single characters (Hangul syllables) for Korean, where a
run of 16 syllables is a few words. A held-out paragraph that repeats a training phrase that long would
let a model "learn context" by memorising it.
"""
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parent.parent / "data"
RUN = 16


def _units(line, lang):
    return line.split() if lang == "en" else [c for c in line if not c.isspace()]


def _runs(line, lang):
    u = _units(line, lang)
    return {tuple(u[i:i + RUN]) for i in range(len(u) - RUN + 1)}


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_held_out_text_is_disjoint_from_training_text(lang):
    train = [ln.strip() for ln in (DATA / f"{lang}_train.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    valid = [ln.strip() for ln in (DATA / f"{lang}_valid.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    assert len(valid) >= 20 and len(train) >= 5 * len(valid)
    assert not set(train) & set(valid), "a held-out document is also in the training text"
    seen = set()
    for line in train:
        seen |= _runs(line, lang)
    shared = [(i, " ".join(r) if lang == "en" else "".join(r)) for i, v in enumerate(valid, 1)
              for r in sorted(_runs(v, lang) & seen)]
    assert not shared, f"{len(shared)} runs of {RUN} tokens shared; first: line {shared[0][0]}: {shared[0][1]!r}"


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_no_document_repeats_within_a_file(lang):
    for part in ("train", "valid"):
        lines = [ln.strip() for ln in (DATA / f"{lang}_{part}.txt").read_text(encoding="utf-8").splitlines()
                 if ln.strip()]
        assert len(lines) == len(set(lines)), f"{lang}_{part}.txt repeats a document"
