"""xpt.py: what is copied, what trains when, and that freezing really freezes."""
from pathlib import Path

import pytest
import torch

import xpt
from bert import BertConfig, BertForMaskedLM

ROOT = Path(__file__).resolve().parent.parent

# Odd sizes so that a wrong reshape or a swapped dimension fails loudly.
CFG = dict(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37,
           max_position_embeddings=40, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
TARGET_V = 61


@pytest.fixture()
def source():
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(**CFG))


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def train_steps(model, n, *, phase, wd=0.01, lr=1e-2, seed=0):
    xpt.set_phase(model, phase)
    opt = torch.optim.AdamW(xpt.optimizer_groups(model, weight_decay=wd), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        ids = torch.randint(0, TARGET_V, (3, 7), generator=g)
        labels = torch.where(torch.rand(3, 7, generator=g) < 0.5, ids, torch.full_like(ids, -100))
        labels[0, 0] = ids[0, 0]  # at least one labelled position
        model(ids, attention_mask=torch.ones_like(ids), labels=labels).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # keep zero grads around: the case that exposes bad freezing
    return opt


def test_shapes_and_layer_layout(source):
    m = xpt.build_xpt(source, TARGET_V, itl_layers=2)
    assert m.config.num_hidden_layers == 2 + 2 + 2
    assert m.bert.embeddings.word_embeddings.weight.shape == (TARGET_V, 36)
    assert m.head.bias.shape == (TARGET_V,)
    ids = torch.randint(0, TARGET_V, (3, 7))
    assert m(ids).logits.shape == (3, 7, TARGET_V)
    # the source's layers sit in the middle, bit-identical, in order
    for i in range(2):
        for (n, a), (_, b) in zip(m.bert.layers[2 + i].named_parameters(), source.bert.layers[i].named_parameters()):
            assert torch.equal(a, b), n
    # the decoder is tied to the NEW embeddings: logits = transform(h) @ E^T + b
    with torch.no_grad():
        m.bert.embeddings.word_embeddings.weight[5].zero_()
        m.head.bias[5] = 123.0
    assert torch.allclose(m(ids).logits[..., 5], torch.tensor(123.0))


def test_copied_parts_and_switches(source):
    m = xpt.build_xpt(source, TARGET_V)
    e, se = m.bert.embeddings, source.bert.embeddings
    assert torch.equal(e.position_embeddings.weight, se.position_embeddings.weight)
    assert torch.equal(e.token_type_embeddings.weight, se.token_type_embeddings.weight)
    assert torch.equal(e.layer_norm.weight, se.layer_norm.weight)
    assert torch.equal(m.head.dense.weight, source.head.dense.weight)
    m2 = xpt.build_xpt(source, TARGET_V, reuse_positions=False, reuse_head_transform=False)
    assert not torch.equal(m2.bert.embeddings.position_embeddings.weight, se.position_embeddings.weight)
    assert not any(n.startswith("head.dense") for n in m2.xpt["reused"])
    # switched-off parts count as new, so they train in phase 1
    assert "bert.embeddings.position_embeddings.weight" in xpt.trainable_names(m2, 1)


def test_source_is_not_modified_and_seed_is_reproducible(source):
    before = snapshot(source)
    a = xpt.build_xpt(source, TARGET_V, seed=5)
    b = xpt.build_xpt(source, TARGET_V, seed=5)
    for n, p in a.named_parameters():
        assert torch.equal(p, dict(b.named_parameters())[n])
    train_steps(a, 2, phase=2)
    for n, p in source.named_parameters():
        assert torch.equal(p, before[n]), f"build_xpt must copy, not share: {n} changed in the source"


@pytest.mark.parametrize("method, n_itl, phase1_all, phase2_all", [
    ("xpt", 2, False, True),
    ("xpt-no-itl", 0, False, True),
    ("xpt-one-phase", 2, True, True),
    ("embeddings-only", 0, False, False),
    ("scratch", 2, True, True),
])
def test_each_method_trainable_set(source, method, n_itl, phase1_all, phase2_all):
    m = xpt.build_xpt(source, TARGET_V, method=method, itl_layers=1)
    assert m.config.num_hidden_layers == 2 + n_itl
    names = {n for n, _ in m.named_parameters()}
    new = names - m.xpt["reused"]
    p1, p2 = xpt.trainable_names(m, 1), xpt.trainable_names(m, 2)
    assert p1 == (names if phase1_all else new)
    assert p2 == (names if phase2_all else new)
    if method == "scratch":
        assert m.xpt["reused"] == set()
    else:
        # exactly the new parts: target word embeddings, decoder bias, ITL layers
        expect = {"bert.embeddings.word_embeddings.weight", "head.bias"}
        for i in list(m.xpt["itl_in"]) + list(m.xpt["itl_out"]):
            expect |= {n for n in names if n.startswith(f"bert.layers.{i}.")}
        assert new == expect


def test_phase1_freezes_reused_and_phase2_moves_all(source):
    m = xpt.build_xpt(source, TARGET_V, itl_layers=1)
    start = snapshot(m)
    opt = train_steps(m, 3, phase=1)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    for n, p in m.named_parameters():
        if n in m.xpt["reused"]:
            assert id(p) not in in_opt, f"frozen {n} must not be in the optimizer"
            assert torch.equal(p, start[n]), f"reused {n} moved in phase 1"
        else:
            assert not torch.equal(p, start[n]), f"new {n} did not train in phase 1"
    # reused tensors are still bit-identical to the source after phase 1
    src = dict(source.named_parameters())
    for i in range(2):
        for n, p in m.bert.layers[1 + i].named_parameters():
            assert torch.equal(p, src[f"bert.layers.{i}.{n}"])
    mid = snapshot(m)
    train_steps(m, 2, phase=2, seed=1)
    for n, p in m.named_parameters():
        assert not torch.equal(p, mid[n]), f"{n} did not train in phase 2"


def test_the_subtlety_frozen_param_in_adamw_still_moves(source):
    # Why optimizer_groups excludes frozen parameters: with a (zero) gradient present, AdamW's decoupled
    # weight decay moves a requires_grad=False parameter anyway.
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.AdamW([p], lr=0.1, weight_decay=0.1)
    p.grad = torch.zeros(4)
    p.requires_grad_(False)
    opt.step()
    assert not torch.equal(p, torch.ones(4))


def test_reused_lr_scale_and_no_decay_groups(source):
    m = xpt.build_xpt(source, TARGET_V)
    xpt.set_phase(m, 2)
    groups = xpt.optimizer_groups(m, weight_decay=0.01, reused_lr_scale=0.1)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name.keys() == {n for n, _ in m.named_parameters()}, "every parameter in exactly one group"
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    new = {n for n in by_name if n.startswith(("bert.embeddings.word_embeddings.", "bert.layers.0.",
                                                "bert.layers.3.", "head.bias"))}  # new words, the ITLs
    for n, g in by_name.items():  # copied from the source: the scaled rate; new: the full rate
        assert g["lr_scale"] == (1.0 if n in new else 0.1), n
    for n, g in by_name.items():  # no decay on biases and on every LayerNorm (embeddings, attn, ffn, head)
        no_decay = n.endswith(".bias") or any(k in n for k in ("layer_norm.", "attn_norm.", "ffn_norm."))
        assert g["weight_decay"] == (0.0 if no_decay else 0.01), n
    assert by_name["bert.layers.1.attn_norm.weight"]["weight_decay"] == 0.0
    assert by_name["bert.layers.2.ffn_norm.weight"]["weight_decay"] == 0.0
    assert by_name["bert.layers.1.query.weight"]["weight_decay"] == 0.01


def test_each_method_has_its_phase_plan_with_the_same_total_steps():
    assert xpt.phases("xpt", 3, 5) == xpt.phases("xpt-no-itl", 3, 5) == [(1, 3), (2, 5)]
    assert xpt.phases("scratch", 3, 5) == xpt.phases("xpt-one-phase", 3, 5) == [(2, 8)]
    assert xpt.phases("embeddings-only", 3, 5) == [(1, 8)]
    assert xpt.phases("xpt", 0, 5) == [(2, 5)]  # an empty phase is left out
    with pytest.raises(ValueError, match="unknown method"):
        xpt.phases("xtp", 3, 5)


def test_report_lists_groups(source):
    text = xpt.report(xpt.build_xpt(source, TARGET_V))
    for row in ("word embeddings", "ITL in", "ITL out", "encoder layers 1-2", "MLM decoder bias", "total"):
        assert row in text
    total = sum(p.numel() for p in xpt.build_xpt(source, TARGET_V).parameters())
    assert f"{total:,}" in text


def test_bad_input(source):
    with pytest.raises(ValueError, match="unknown method"):
        xpt.build_xpt(source, TARGET_V, method="xtp")
    with pytest.raises(ValueError, match="phase"):
        xpt.set_phase(xpt.build_xpt(source, TARGET_V), 3)
    with pytest.raises(ValueError, match="build_xpt"):
        xpt.report(source)


class _Vocab:
    """A minimal tokenizer stand-in: just a vocabulary."""
    def __init__(self, tokens, kind):
        self.tokens, self.kind = tokens, kind
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = 0, 1, 2, 3, 4
        self.special_ids = [0, 1, 2, 3, 4]

    def __len__(self):
        return len(self.tokens)

    def id_to_token(self, i):
        return self.tokens[i]


def test_copy_shared_embeddings_across_tokenizer_kinds(source):
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    src_tok = _Vocab(specials + ["hello", "##llo", "the", "##s"] + [f"x{i}" for i in range(99 - 9)], "wordpiece")
    tgt_tok = _Vocab(["<pad>", "<unk>", "<s>", "</s>", "<mask>", "\u0120hello", "llo", "s", "\u0120the", "안녕"]
                     + [f"y{i}" for i in range(TARGET_V - 10)], "bpe")
    m = xpt.build_xpt(source, TARGET_V, source_tokenizer=src_tok, target_tokenizer=tgt_tok)
    # 5 specials by role + Ġhello=hello, llo=##llo, s=##s, Ġthe=the; 안녕 has no match
    assert m.xpt["copied_embeddings"] == 9
    w, sw = m.bert.embeddings.word_embeddings.weight, source.bert.embeddings.word_embeddings.weight
    assert torch.equal(w[5], sw[5]) and torch.equal(w[6], sw[6]) and torch.equal(w[8], sw[7])
    assert not torch.equal(w[9], sw[9])
    assert "9 embeddings copied" in xpt.report(m)


def test_post_training_from_minilm_on_korean_lines(minilm_dir, tmp_path):
    """The real thing, in miniature: the MiniLM checkpoint (encoder only, no MLM head) post-trained on a
    few Korean lines through both phases with train.py's loop."""
    import warnings

    import train
    from tokenizer import BPETokenizer

    lines = (ROOT / "data" / "ko_train.txt").read_text(encoding="utf-8").splitlines()[:40]
    (tmp_path / "ko.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = BPETokenizer.train(lines, 500)
    s = train.parse_args(["--max_len=24", "--batch_size=3", "--phase1_steps=2", "--phase2_steps=2",
                          "--eval_every=0", "--ckpt_every=0", "--eval_batches=2", "--lr=1e-3"])
    tr, va = train.build_datasets(s, tok, tmp_path / "ko.txt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "freshly initialised: head..." is expected here
        source = BertForMaskedLM.from_pretrained(minilm_dir)
        model, evals = train.run_xpt(s, minilm_dir, tok, tr, va, tmp_path / "xpt")
    assert model.config.num_hidden_layers == 6 + 2 and model.config.vocab_size == len(tok)
    # MiniLM has no MLM head: its random transform is not "reused" (and so not frozen in phase 1)
    assert not any(n.startswith("head.") for n in model.xpt["reused"])
    assert "head.dense" in model.xpt["not_reused_because_fresh"]
    assert [e["phase"] for e in evals] == [1, 2] and all(e["loss"] == e["loss"] for e in evals)
    # phase 1 left the reused MiniLM layers alone; the saved phase-1 weights prove it
    p1 = torch.load(tmp_path / "xpt" / "phase1" / "final.pt", weights_only=True)["model"]
    src = source.state_dict()
    for k, v in src.items():
        if k.startswith("bert.layers."):
            i = int(k.split(".")[2])
            assert torch.equal(p1[k.replace(f"layers.{i}.", f"layers.{i + 1}.", 1)], v), k
    # and phase 2 moved them
    assert not torch.equal(model.bert.layers[1].query.weight, source.bert.layers[0].query.weight)
    assert (tmp_path / "xpt" / "model" / "model.safetensors").exists()


def test_roberta_positions_follow_a_different_pad_id():
    torch.manual_seed(0)
    src = BertForMaskedLM(BertConfig(**{**CFG, "model_type": "roberta", "pad_token_id": 1, "type_vocab_size": 1}))
    m = xpt.build_xpt(src, TARGET_V, target_pad_token_id=0)
    ids = torch.randint(5, TARGET_V, (2, 7))
    # position i of a real token: row pad+1+i in each model, so the rows must hold the same vectors
    sw, w = src.bert.embeddings.position_embeddings.weight, m.bert.embeddings.position_embeddings.weight
    assert torch.equal(w[1:1 + 7], sw[2:2 + 7])
    assert m(ids).logits.shape == (2, 7, TARGET_V)


@pytest.mark.parametrize("src_pad,tgt_pad", [(1, 0), (0, 3), (2, 2)])  # rows moved down, up, not at all
def test_roberta_positions_in_a_forward_pass_match_the_source(src_pad, tgt_pad):
    """Forward check of the position shift: for a padded batch, the position vectors the XPT model adds
    to its real tokens are the ones the source adds at the same positions, whatever the two pad ids."""
    torch.manual_seed(0)
    src = BertForMaskedLM(BertConfig(**{**CFG, "model_type": "roberta", "pad_token_id": src_pad,
                                        "type_vocab_size": 1}))
    m = xpt.build_xpt(src, TARGET_V, target_pad_token_id=tgt_pad)
    real = torch.ones(3, 9, dtype=torch.bool)
    real[1, 6:], real[2, 2:] = False, False
    src_ids = torch.where(real, torch.full((3, 9), 10), torch.full((3, 9), src_pad))
    tgt_ids = torch.where(real, torch.full((3, 9), 10), torch.full((3, 9), tgt_pad))
    se, te = src.bert.embeddings, m.bert.embeddings
    want = se.position_embeddings(se.position_ids(src_ids))[real]
    got = te.position_embeddings(te.position_ids(tgt_ids))[real]
    assert torch.equal(got, want)


def test_module_example_prints_what_its_comment_says():
    import os
    import subprocess
    import sys
    out = subprocess.run([sys.executable, str(ROOT / "xpt.py")], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    src = (ROOT / "xpt.py").read_text()
    expected = [ln[6:] for ln in src[src.index("    # Expected:\n"):].splitlines()[1:]]
    assert out.splitlines() == expected


def test_an_xpt_run_ends_on_its_verdict_with_xpt_advice(tmp_path, capsys):
    """`--task=xpt` ends like `--task=mlm`: where the files are, then the loss, floor and verdict; on the
    plateau (two steps here) the advice is XPT's (phase steps), not the masked LM's --more_steps, which
    --task=xpt does not take."""
    import runs
    import train
    train.main(["--task=xpt", f"--source={ROOT / 'data' / 'source_en'}", f"--corpus={ROOT / 'data' / 'ko_train.txt'}",
                f"--out_dir={tmp_path}", "--vocab_size=500", "--max_len=16", "--batch_size=4", "--eval_every=0",
                "--phase1_steps=1", "--phase2_steps=1", "--eval_batches=2"])
    lines = capsys.readouterr().out.splitlines()
    advice = runs.PLATEAU_ADVICE["xpt"].splitlines()
    assert lines[-len(advice):] == advice and "--more_steps" not in runs.PLATEAU_ADVICE["xpt"]
    verdict = lines[-len(advice) - 1]
    assert verdict.startswith("xpt: held-out loss") and "unigram floor" in verdict and "learned context: no" in verdict
