"""finetune.py: TSV parsing and its errors, the loop learns a separable toy task, distillation, the CLI."""
import json
import re
import math
import random
import warnings

import pytest
import torch

import bert
import finetune
from tokenizer import BPETokenizer


def toy_rows(n=64, seed=0):
    """A trivially separable task written here: the label is the adjective's polarity."""
    rng = random.Random(seed)
    good, bad = ["great", "lovely", "superb", "fine"], ["awful", "boring", "dull", "poor"]
    rows = []
    for i in range(n):
        words, label = (good, "pos") if i % 2 else (bad, "neg")
        rows.append((f"the film was {rng.choice(words)} and the end was {rng.choice(words)}", label))
    return rows


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one thread is faster than two fighting over a shared machine; restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train([t for t, _ in toy_rows(200)], vocab_size=290)


def tiny_config(tok, layers=2, hidden=32):
    return bert.BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                           num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=40,
                           pad_token_id=tok.pad_id, model_type="roberta", type_vocab_size=1,
                           layer_norm_eps=1e-5, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# --- TSV parsing ---------------------------------------------------------------------------------------
def test_read_tsv_by_name_and_index(tmp_path):
    p = write(tmp_path / "a.tsv", "id\tdocument\tlabel\n1\t좋아요 \"최고\"\t1\n2\t별로\t0\n3\t\t1\n")
    with pytest.warns(UserWarning, match="skipped 1"):  # the empty text
        rows = finetune.read_tsv(p, "document", "label")
    assert rows == [('좋아요 "최고"', "1"), ("별로", "0")]  # a bare quote is kept: not CSV
    with pytest.warns(UserWarning):
        assert finetune.read_tsv(p, 1, "2") == rows
    assert finetune.label_map(rows) == {"0": 0, "1": 1}


def test_read_tsv_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        finetune.read_tsv(tmp_path / "missing.tsv")
    with pytest.raises(ValueError, match="empty"):
        finetune.read_tsv(write(tmp_path / "e.tsv", ""))
    with pytest.raises(ValueError, match="no text column named 'text'.*document"):
        finetune.read_tsv(write(tmp_path / "c.tsv", "id\tdocument\tlabel\n1\tx\t0\n"))
    with pytest.raises(ValueError, match="out of range"):
        finetune.read_tsv(tmp_path / "c.tsv", 7, "label")
    with pytest.raises(ValueError, match="no usable rows"):
        finetune.read_tsv(write(tmp_path / "h.tsv", "text\tlabel\n"))
    with pytest.raises(ValueError, match="at least 2 classes"):
        finetune.label_map([("a", "1"), ("b", "1")])


def test_encode_and_collate(tok):
    labels = {"neg": 0, "pos": 1}
    ex = finetune.encode_rows([("the film was great", "pos"), ("dull", "neg")], tok, max_len=5, labels=labels)
    assert [len(ids) for ids, _ in ex] == [5, len(tok.encode("dull")) + 2]
    assert ex[0][0][0] == tok.cls_id and ex[0][0][-1] == tok.sep_id and ex[0][1] == 1
    b = finetune.collate(ex, tok.pad_id)
    assert b["input_ids"].shape == (2, 5) and b["labels"].tolist() == [1, 0]
    assert b["attention_mask"][1].tolist() == [1] * len(ex[1][0]) + [0] * (5 - len(ex[1][0]))
    assert (b["input_ids"][1][len(ex[1][0]):] == tok.pad_id).all()
    with pytest.raises(ValueError, match="not seen"):
        finetune.encode_rows([("x", "maybe")], tok, 8, labels)
    assert "labels" not in finetune.collate(finetune.encode_rows(["x"], tok, 8), tok.pad_id)


# --- the loop ------------------------------------------------------------------------------------------
def test_learns_separable_task_to_100_percent(tok):
    rows = toy_rows(64)
    labels = finetune.label_map(rows)
    train_ex = finetune.encode_rows(rows, tok, 32, labels)
    test_ex = finetune.encode_rows(toy_rows(32, seed=1), tok, 32, labels)
    torch.manual_seed(0)
    model = bert.BertForSequenceClassification(tiny_config(tok))
    assert finetune.accuracy(model, test_ex, tok.pad_id) < 1.0
    s = finetune.FinetuneSettings(epochs=15, batch_size=16, lr=3e-3, device="cpu", seed=0)
    losses = finetune.finetune(model, train_ex, s, tok.pad_id)
    assert len(losses) == 15 * 4
    assert losses[-1] < 0.1 < losses[0]
    assert finetune.accuracy(model, test_ex, tok.pad_id) == 1.0


def test_predict_keeps_order_and_mode(tok):
    torch.manual_seed(0)
    model = bert.BertForSequenceClassification(tiny_config(tok)).train()
    ex = finetune.encode_rows(["a much longer sentence than the others", "b", "the film"], tok, 32)
    logits = finetune.predict(model, ex, tok.pad_id, batch_size=2)
    model.eval()
    one = torch.cat([model(torch.tensor([ids])).logits for ids, _ in ex])
    assert torch.allclose(logits, one, atol=1e-5)


@pytest.mark.parametrize("kind", ["mse", "soft_ce"])
def test_distillation_moves_student_towards_teacher(tok, kind):
    rows = toy_rows(64)
    labels = finetune.label_map(rows)
    torch.manual_seed(0)
    teacher = bert.BertForSequenceClassification(tiny_config(tok))
    finetune.finetune(teacher, finetune.encode_rows(rows, tok, 32, labels),
                      finetune.FinetuneSettings(epochs=8, batch_size=16, lr=5e-3, device="cpu"), tok.pad_id)
    student = finetune.shrink(bert.BertForSequenceClassification(tiny_config(tok)), 1)
    assert len(student.bert.layers) == 1 and student.num_parameters() < teacher.num_parameters()
    unlabeled = finetune.encode_rows([t for t, _ in toy_rows(64, seed=2)], tok, 32)
    held = finetune.encode_rows([t for t, _ in toy_rows(32, seed=3)], tok, 32)

    def distance():
        return torch.nn.functional.mse_loss(finetune.predict(student, held, tok.pad_id),
                                            finetune.predict(teacher, held, tok.pad_id)).item()
    before = distance()
    losses = finetune.finetune(student, unlabeled, finetune.FinetuneSettings(
        epochs=15, batch_size=16, lr=3e-3, device="cpu", distill_loss=kind), tok.pad_id, teacher=teacher)
    assert losses[-1] < losses[0]
    assert distance() < 0.5 * before


def test_distill_loss_values():
    """Against values worked out by hand (math, not torch), on logits that are not mirror images, so
    swapped arguments, a missing T^2, a wrong temperature or a sum instead of a mean all fail."""
    student = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 3.0]])
    # mse: mean over all 6 entries of (s - t)^2 = (1 + 4 + 1 + 0 + 0 + 9) / 6
    assert finetune.distill_loss(student, teacher, "mse").item() == pytest.approx(15 / 6)

    def soft_ce_by_hand(s_row, t_row, T):
        p = [math.exp(x / T) for x in t_row]
        p = [x / sum(p) for x in p]                                 # the teacher's softened distribution
        log_z = math.log(sum(math.exp(x / T) for x in s_row))
        return -sum(pi * (x / T - log_z) for pi, x in zip(p, s_row)) * T * T
    for T in (1.0, 2.0, 4.0):
        want = (soft_ce_by_hand([1, 0, -1], [0, 2, 0], T) + soft_ce_by_hand([0, 0, 0], [0, 0, 3], T)) / 2
        got = finetune.distill_loss(student, teacher, "soft_ce", T).item()
        assert got == pytest.approx(want, rel=1e-5), (T, got, want)
    swapped = finetune.distill_loss(teacher, student, "soft_ce", 2.0).item()
    assert abs(swapped - finetune.distill_loss(student, teacher, "soft_ce", 2.0).item()) > 0.1
    with pytest.raises(ValueError, match="distill_loss"):
        finetune.distill_loss(student, teacher, "kl")


def test_shrink_keeps_first_and_last():
    cfg = bert.BertConfig(vocab_size=13, hidden_size=8, num_hidden_layers=5, num_attention_heads=2,
                          intermediate_size=7)
    m = bert.BertForSequenceClassification(cfg)
    layers = list(m.bert.layers)
    finetune.shrink(m, 3)
    assert [id(x) for x in m.bert.layers] == [id(layers[i]) for i in (0, 2, 4)]
    assert m.config.num_hidden_layers == 3
    with pytest.raises(ValueError, match="1..3"):
        finetune.shrink(m, 4)


# --- the command line: fine-tune, save, distil from the saved teacher -----------------------------------
def test_cli_finetune_save_and_distil(tok, tmp_path, capsys):
    torch.manual_seed(0)
    bert.BertForMaskedLM(tiny_config(tok)).save_pretrained(tmp_path / "pre")
    tok.save(tmp_path / "pre")
    tsv = lambda rows: "text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows)  # noqa: E731
    write(tmp_path / "train.tsv", tsv(toy_rows(64)))
    write(tmp_path / "test.tsv", tsv(toy_rows(32, seed=1)))
    write(tmp_path / "un.txt", "".join(t + "\n" for t, _ in toy_rows(64, seed=2)))
    common = [f"--test={tmp_path}/test.tsv", "--batch_size=16", "--lr=3e-3", "--device=cpu", "--dropout=0"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        finetune.main([f"--model={tmp_path}/pre", f"--train={tmp_path}/train.tsv", "--epochs=15",
                       f"--save={tmp_path}/teacher", *common])
        out = capsys.readouterr().out
        assert "test accuracy: 100.00%" in out and re.search(r"; majority class \d+\.\d\d%", out)
        assert json.loads((tmp_path / "teacher" / "labels.json").read_text()) == {"neg": 0, "pos": 1}
        config = json.loads((tmp_path / "teacher" / "config.json").read_text())
        assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
        hf = pytest.importorskip("transformers")
        assert hf.AutoConfig.from_pretrained(tmp_path / "teacher").id2label == {0: "neg", 1: "pos"}
        student = finetune.main([f"--model={tmp_path}/pre", f"--teacher={tmp_path}/teacher",
                                 f"--unlabeled={tmp_path}/un.txt", "--student_layers=1", "--epochs=15", *common])
    out = capsys.readouterr().out
    assert "distilling" in out and "teacher accuracy: 100.00%" in out
    assert len(student.bert.layers) == 1
    with pytest.raises(ValueError, match="unknown setting"):
        finetune.parse_args(["--epoch=3"])
    with pytest.raises(ValueError, match="--model"):
        finetune.main([f"--train={tmp_path}/train.tsv"])


# --- one head for every encoder (the comparison of pretraining objectives) --------------------------------
def _families(tok):
    """A tiny pretrained model of each family, dropout off: BERT (RoBERTa layout), ELECTRA, XLNet, T5."""
    import t5
    import xlnet
    torch.manual_seed(0)
    electra = bert.ElectraForPreTraining(bert.BertConfig(**{**tiny_config(tok).__dict__, "model_type": "electra"}))
    return {"bert": bert.BertForMaskedLM(tiny_config(tok)), "electra": electra,
            "xlnet": xlnet.XLNetLMHeadModel(xlnet.XLNetConfig(vocab_size=len(tok), d_model=32, n_layer=2, n_head=2,
                                                              d_inner=64, dropout=0.0, pad_token_id=tok.pad_id)),
            "t5": t5.T5ForConditionalGeneration(t5.T5Config(vocab_size=len(tok), d_model=32, d_kv=16, d_ff=64,
                                                             num_layers=2, num_decoder_layers=2, num_heads=2,
                                                             dropout_rate=0.0, pad_token_id=tok.pad_id))}


@pytest.mark.parametrize("family", ["bert", "electra", "xlnet", "t5"])
def test_the_mean_pooling_head_reads_every_family_and_learns(tok, tmp_path, family):
    """The mean-pooling head: its logits are the linear map of the mean of the encoder's hidden states
    over the real tokens (padding changes nothing), the whole model learns a separable task through it,
    and load_classifier gives it to an XLNet or T5 folder (whose HF heads differ per family)."""
    model = _families(tok)[family]
    clf = finetune.MeanPoolClassifier(model, 2, dropout=0.0).eval()
    rows = finetune.encode_rows(toy_rows(5), tok, 32, finetune.label_map(toy_rows(5)))
    batch = finetune.collate(rows, tok.pad_id)  # (rows of different lengths: padded)
    h = finetune.encode(model, batch["input_ids"], batch["attention_mask"])
    i = int(batch["attention_mask"].sum(1).argmin())  # the shortest row, alone and unpadded
    n = int(batch["attention_mask"][i].sum())
    alone = clf(batch["input_ids"][i:i + 1, :n]).logits
    torch.testing.assert_close(clf(**batch).logits[i:i + 1], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(alone, clf.classifier(h[i, :n].mean(0, keepdim=True)), atol=1e-5, rtol=1e-4)
    labels = finetune.label_map(toy_rows(64))
    test = finetune.encode_rows(toy_rows(32, seed=1), tok, 32, labels)
    before = finetune.accuracy(clf, test, tok.pad_id)
    s = finetune.FinetuneSettings(epochs=15, batch_size=16, lr=3e-3, device="cpu", seed=0)
    finetune.finetune(clf.train(), finetune.encode_rows(toy_rows(64), tok, 32, labels), s, tok.pad_id)
    assert before <= 0.75 and finetune.accuracy(clf, test, tok.pad_id) >= 0.95, before  # (T5: 31 of 32)
    if family in ("xlnet", "t5"):
        model.save_pretrained(tmp_path / family)
        loaded = finetune.load_classifier(tmp_path / family, 2)
        assert isinstance(loaded, finetune.MeanPoolClassifier) and type(loaded.model) is type(model)
        tok.save(tmp_path / family)
        write(tmp_path / "t.tsv", "text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in toy_rows(8)))
        with pytest.raises(ValueError, match="--save keeps BERT-family classifiers"):
            finetune.main([f"--model={tmp_path / family}", f"--train={tmp_path}/t.tsv", f"--save={tmp_path}/x"])
