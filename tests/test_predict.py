"""predict.py: fill-mask on the shipped English source, the mask's encoding (BPE: the space before it belongs
to the masked word), scoring a text file next to its floor, an ELECTRA folder filled by its generator,
and one-line errors."""
from pathlib import Path

import pytest
import torch

import bert
import predict
import tokenizer as T
import train

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "data" / "source_en"


def test_fill_on_the_shipped_source(capsys):
    model, tok = predict.load(SOURCE)
    [options] = predict.fill(model, tok, "It was the best of <mask>, it was the worst of times.", top_k=7)
    probs = [p for _, p in options]
    assert len(options) == 7 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert "times" in [t.strip() for t, _ in options]  # a real English model: the phrase is in its head
    two = predict.fill(model, tok, "The [MASK] sat on the <mask>.", top_k=3)
    assert len(two) == 2 and all(len(o) == 3 for o in two)
    assert predict.cli(["--model", str(SOURCE), "--top_k", "2", "The cat <mask> on the mat."]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "The cat <mask> on the mat." and out[1].startswith("  mask 1: ") and out[1].count("%") == 2


def test_the_mask_takes_the_space_before_it():
    tok = T.load_tokenizer(SOURCE)
    ids = predict.encode_with_masks(tok, "not to <mask>, that")
    assert ids == [tok.cls_id] + tok.encode("not to") + [tok.mask_id] + tok.encode(", that") + [tok.sep_id]
    wp = T.WordPieceTokenizer.train(["the cat sat on the mat"] * 5, 40)
    assert predict.encode_with_masks(wp, "the [MASK] sat") == [wp.cls_id] + wp.encode("the") + [wp.mask_id] + \
        wp.encode(" sat") + [wp.sep_id]


def test_score_a_text_file_next_to_its_floor(tmp_path, capsys):
    model, tok = predict.load(SOURCE)
    valid, corpus = ROOT / "data" / "en_valid.txt", ROOT / "data" / "en_train.txt"
    r, floor = predict.score(model, tok, valid, corpus)
    s = train.Settings(max_len=model.config.max_len)
    tr, va = train.build_datasets(s, tok, corpus, valid)
    assert r["loss"] == pytest.approx(3.621, abs=1e-3)  # the README's figure for the shipped source
    assert floor == train.floors(tok, tr, va)[0] and r["loss"] < floor
    assert predict.cli([f"--model={SOURCE}", f"--text_file={valid}", f"--corpus={corpus}"]) == 0
    assert "learned context: yes" in capsys.readouterr().out


def test_an_electra_folder_fills_with_its_generator(tmp_path):
    tok = T.load_tokenizer(SOURCE)
    cfg = bert.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=34, pad_token_id=tok.pad_id,
                          type_vocab_size=1, model_type="electra")
    gen = bert.ElectraForMaskedLM(bert.electra_generator_config(cfg, 0.5))
    train.save_model(bert.ElectraPair(gen, bert.ElectraForPreTraining(cfg)), tok, tmp_path / "m")
    model, _ = predict.load(tmp_path / "m")
    assert isinstance(model, bert.ElectraForMaskedLM) and not model.training
    assert len(predict.fill(model, tok, "a <mask> b")[0]) == 5
    (tmp_path / "m" / "generator" / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="cannot fill masks"):
        predict.load(tmp_path / "m")


@pytest.mark.parametrize("argv,names", [
    (["The <mask>."], "--model=DIR is required"),
    ([f"--model={SOURCE}", "no mask here"], "no <mask>"),
    ([f"--model={SOURCE}"], "give a text with <mask>"),
    (["--model=nowhere", "a <mask>"], "no config.json"),
    ([f"--model={SOURCE}", "--device=gpu", "a <mask>"], "--device must be"),
    ([f"--model={SOURCE}", "a " * 40 + "<mask>"], "longer than the model's 32 positions"),
])
def test_mistakes_are_one_line_errors(argv, names, capsys):
    assert predict.cli(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and names in err[0], err
    torch.manual_seed(0)
