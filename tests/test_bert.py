"""Tests for bert.py: parity with HF transformers (random weights at odd sizes, and the real MiniLM
checkpoint), checkpoint round trips through our own safetensors code, the fast paths against the
readable ones, and clear errors for bad inputs and bad checkpoints.

Odd sizes (vocab 99, hidden 36, 3 heads, intermediate 37, batch 3, length 7) make a wrong transpose or
a swapped axis fail instead of passing by symmetry."""
import json
import warnings

import pytest
import torch

from bert import (BertConfig, BertEmbeddings, BertForMaskedLM, BertForPreTraining,
                  BertForSequenceClassification, BertLayer, BertModel, CheckpointError,
                  ElectraForMaskedLM, ElectraForPreTraining, ElectraPairOutput, binary_auc,
                  electra_eval_counts, electra_eval_metrics, make_attention_mask, read_safetensors,
                  write_safetensors)

ODD = dict(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37,
           max_position_embeddings=20, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
B, T = 3, 7


def make_batch(pad_id, seed=0, vocab=99):
    """ids (B, T) with the 2nd row padded after 5 tokens and the 3rd after 3; mask; two segments."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (B, T), generator=g)
    ids[ids == pad_id] = (pad_id + 1) % vocab  # no stray pads among the real tokens
    mask = torch.ones(B, T, dtype=torch.long)
    for row, n in ((1, 5), (2, 3)):
        ids[row, n:] = pad_id
        mask[row, n:] = 0
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, 4:] = 1
    return ids, mask, types


def assert_close_real(a, b, mask, atol):
    """Compare at real (non-padding) positions; padding rows are garbage in both implementations."""
    sel = mask.bool()
    torch.testing.assert_close(a[sel], b[sel], atol=atol, rtol=0)


# ---------------------------------------------------------------------------------------------------
# HF reference models, built once per session

@pytest.fixture(scope="session")
def hf_dirs(tmp_path_factory):
    """Random-initialised HF models saved by HF: {name: (directory, hf_model)}."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    out = {}
    common = {k: v for k, v in ODD.items()}
    specs = {
        "bert_mlm": (transformers.BertForMaskedLM, transformers.BertConfig(**common)),
        "roberta_mlm": (transformers.RobertaForMaskedLM,
                        transformers.RobertaConfig(**{**common, "max_position_embeddings": 22},
                                                   pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5)),
        "bert_pretrain": (transformers.BertForPreTraining, transformers.BertConfig(**common)),
        "bert_model": (transformers.BertModel, transformers.BertConfig(**common)),
        "roberta_model": (transformers.RobertaModel,
                          transformers.RobertaConfig(**{**common, "max_position_embeddings": 22},
                                                     pad_token_id=1, type_vocab_size=1, layer_norm_eps=1e-5)),
    }
    for name, (cls, cfg) in specs.items():
        m = cls(cfg).eval()
        with torch.no_grad():  # HF zero-initialises biases and LayerNorm shifts: randomise everything
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        d = tmp_path_factory.mktemp(name)
        m.save_pretrained(d)
        out[name] = (d, m)
    return out


def load_quiet(cls, d):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_pretrained(d).eval()


@pytest.mark.parametrize("name,pad", [("bert_model", 0), ("roberta_model", 1)])
def test_encoder_matches_hf(hf_dirs, name, pad):
    d, hf = hf_dirs[name]
    ours = load_quiet(BertModel, d)
    ids, mask, types = make_batch(pad)
    if "roberta" in name:
        types = torch.zeros_like(types)  # RoBERTa has one segment type
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = ours(ids, attention_mask=mask, token_type_ids=types)
    assert got.shape == (B, T, 36)
    assert_close_real(got, ref, mask, 1e-5)


@pytest.mark.parametrize("name,pad", [("bert_mlm", 0), ("roberta_mlm", 1)])
def test_mlm_logits_match_hf(hf_dirs, name, pad):
    d, hf = hf_dirs[name]
    ours = load_quiet(BertForMaskedLM, d)
    assert ours.fresh_parameters == []
    ids, mask, types = make_batch(pad)
    if "roberta" in name:
        types = torch.zeros_like(types)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        got = ours(ids, attention_mask=mask, token_type_ids=types).logits
    assert got.shape == (B, T, 99)
    assert_close_real(got, ref, mask, 1e-5)
    # with labels: the loss equals HF's, logits only at labelled positions in row-major order
    labels = torch.full_like(ids, -100)
    labels[0, 1], labels[0, 4], labels[1, 2], labels[2, 0] = 5, 7, 11, 13
    with torch.no_grad():
        ref_out = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        got_out = ours(ids, attention_mask=mask, token_type_ids=types, labels=labels)
    torch.testing.assert_close(got_out.loss, ref_out.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_out.logits, ref_out.logits[labels != -100], atol=1e-5, rtol=0)


def test_pretraining_matches_hf(hf_dirs):
    d, hf = hf_dirs["bert_pretrain"]
    ours = load_quiet(BertForPreTraining, d)
    assert ours.fresh_parameters == []
    ids, mask, types = make_batch(0)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        got = ours(ids, attention_mask=mask, token_type_ids=types)
    assert_close_real(got.logits, ref.prediction_logits, mask, 1e-5)
    torch.testing.assert_close(got.nsp_logits, ref.seq_relationship_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,cls,hf_cls_name,pad", [
    ("bert_mlm", BertForMaskedLM, "BertForMaskedLM", 0),
    ("roberta_mlm", BertForMaskedLM, "RobertaForMaskedLM", 1),
    ("bert_pretrain", BertForPreTraining, "BertForPreTraining", 0),
    ("bert_model", BertModel, "BertModel", 0),
    ("roberta_model", BertModel, "RobertaModel", 1),
])
def test_ours_saved_hf_loads(hf_dirs, tmp_path, name, cls, hf_cls_name, pad):
    transformers = pytest.importorskip("transformers")
    d, _ = hf_dirs[name]
    ours = load_quiet(cls, d)
    with torch.no_grad():  # make sure what HF reads is ours, not what it started from
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    ours.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["architectures"] == [hf_cls_name] and cfg["model_type"] in ("bert", "roberta")
    hf = getattr(transformers, hf_cls_name).from_pretrained(tmp_path).eval()
    ids, mask, types = make_batch(pad, seed=1)
    if pad == 1:
        types = torch.zeros_like(types)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        got = ours(ids, attention_mask=mask, token_type_ids=types)
        if cls is BertModel:
            ref = ref.last_hidden_state
        else:
            ref = ref.logits if hasattr(ref, "logits") else ref.prediction_logits
            got = got.logits
    assert_close_real(got, ref, mask, 1e-5)
    # and we read our own file back exactly
    again = cls.from_pretrained(tmp_path)
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), again.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


# ---------------------------------------------------------------------------------------------------
# ELECTRA: discriminator and generator in HF's layout, both ways

ELECTRA_SPECS = {  # (embedding size E, hidden size H, heads, intermediate): with and without projection
    "projected": (20, 36, 3, 37),
    "square": (36, 36, 3, 37),
}


@pytest.fixture(scope="session")
def hf_electra(tmp_path_factory):
    """HF ELECTRA discriminators and generators, randomised and saved by HF: {(kind, spec): (dir, model)}."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    out = {}
    for spec, (E, H, nh, inter) in ELECTRA_SPECS.items():
        cfg = transformers.ElectraConfig(vocab_size=99, embedding_size=E, hidden_size=H, num_hidden_layers=2,
                                         num_attention_heads=nh, intermediate_size=inter, max_position_embeddings=20,
                                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        for kind, cls in (("disc", transformers.ElectraForPreTraining), ("gen", transformers.ElectraForMaskedLM)):
            m = cls(cfg).eval()
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(torch.randn_like(p) * 0.05)
            d = tmp_path_factory.mktemp(f"electra_{kind}_{spec}")
            m.save_pretrained(d)
            out[(kind, spec)] = (d, m)
    return out


@pytest.mark.parametrize("spec", list(ELECTRA_SPECS))
@pytest.mark.parametrize("kind", ["disc", "gen"])
def test_electra_matches_hf_both_ways(hf_electra, tmp_path, kind, spec):
    """We load what HF saves (the same logits to 1e-5, with padding and two segments), HF loads what we
    save (the same logits again), and the loss with labels is HF's."""
    transformers = pytest.importorskip("transformers")
    d, hf = hf_electra[(kind, spec)]
    cls = ElectraForPreTraining if kind == "disc" else ElectraForMaskedLM
    ours = load_quiet(cls, d)
    assert ours.fresh_parameters == [] and ours.config.model_type == "electra"
    assert (ours.bert.embeddings.projection is None) == (spec == "square")
    ids, mask, types = make_batch(0)
    labels = (torch.rand(ids.shape, generator=torch.Generator().manual_seed(2)) < 0.3).long() if kind == "disc" \
        else torch.where(torch.rand(ids.shape, generator=torch.Generator().manual_seed(2)) < 0.3, ids, -100)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        got = ours(ids, attention_mask=mask, token_type_ids=types)
        assert got.logits.shape == ((B, T) if kind == "disc" else (B, T, 99))
        assert_close_real(got.logits, ref.logits, mask, 1e-5)
        ref_loss = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
        got_loss = ours(ids, attention_mask=mask, token_type_ids=types, labels=labels).loss
        torch.testing.assert_close(got_loss, ref_loss, atol=1e-5, rtol=0)
        for p in ours.parameters():  # what HF reads back must be ours
            p.add_(torch.randn_like(p) * 0.01)
    ours.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "electra" and cfg["embedding_size"] == ELECTRA_SPECS[spec][0]
    hf2 = getattr(transformers, cfg["architectures"][0]).from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert_close_real(ours(ids, attention_mask=mask, token_type_ids=types).logits,
                          hf2(input_ids=ids, attention_mask=mask, token_type_ids=types).logits, mask, 1e-5)


def test_encoder_only_checkpoint_into_mlm_lists_fresh_head(hf_dirs):
    d, _ = hf_dirs["bert_model"]  # BertModel keys: embeddings, encoder, pooler; no MLM head
    with pytest.warns(UserWarning, match="freshly initialised") as rec:
        m = BertForMaskedLM.from_pretrained(d)
    assert sorted(m.fresh_parameters) == ["head.bias", "head.dense.bias", "head.dense.weight",
                                          "head.layer_norm.bias", "head.layer_norm.weight"]
    assert "pooler.dense.weight" in str(rec[0].message)  # the unused pooler is named too
    c = load_quiet(BertForSequenceClassification, d)
    assert sorted(c.fresh_parameters) == ["classifier.bias", "classifier.weight"]


# ---------------------------------------------------------------------------------------------------
# Real checkpoint

SENTENCES = ["The quick brown fox jumps over the lazy dog.",
             "Cross-lingual post-training transfers an English model to other languages!",
             "Hello, world"]


def test_real_minilm_matches_hf(minilm_dir):
    transformers = pytest.importorskip("transformers")
    from tokenizer import WordPieceTokenizer  # ours, end to end: text -> our ids -> our hidden states
    tok = WordPieceTokenizer.from_file(minilm_dir / "vocab.txt", lowercase=True)
    rows = [[tok.cls_id, *tok.encode(s), tok.sep_id] for s in SENTENCES]
    n = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_id] * (n - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (n - len(r)) for r in rows])
    ours = BertModel.from_pretrained(minilm_dir).eval()
    hf = transformers.BertModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, attention_mask=mask)
    assert_close_real(got, ref, mask, 1e-4)


# ---------------------------------------------------------------------------------------------------
# Fast paths equal the readable ones

def test_sdpa_equals_manual_attention():
    torch.manual_seed(0)
    m = BertModel(BertConfig(**ODD)).eval()
    ids, mask, types = make_batch(0)
    with torch.no_grad():
        fast = m(ids, mask, types)
        for layer in m.layers:
            layer.attention_impl = "manual"
        slow = m(ids, mask, types)
    assert_close_real(fast, slow, mask, 1e-6)


def test_masked_only_projection_equals_full():
    torch.manual_seed(0)
    m = BertForMaskedLM(BertConfig(**ODD)).eval()
    ids, mask, types = make_batch(0)
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 0], labels[1, 4], labels[2, 2] = 1, 2, 3, 4
    full = m(ids, mask, types).logits  # (B, T, V)
    ref_loss = torch.nn.functional.cross_entropy(full.view(-1, 99), labels.view(-1), ignore_index=-100)
    out = m(ids, mask, types, labels=labels)
    assert out.logits.shape == (4, 99)
    torch.testing.assert_close(out.logits, full[labels != -100], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.loss, ref_loss, atol=1e-6, rtol=0)
    # and the gradients agree too
    g1 = torch.autograd.grad(out.loss, m.head.dense.weight)[0]
    g2 = torch.autograd.grad(ref_loss, m.head.dense.weight)[0]
    torch.testing.assert_close(g1, g2, atol=1e-6, rtol=0)
    nothing = m(ids, mask, types, labels=torch.full_like(ids, -100))
    assert nothing.loss.item() == 0.0 and nothing.logits.shape == (0, 99)


def test_decoder_tied_to_embeddings_survives_load_state_dict():
    torch.manual_seed(0)
    a, b = BertForMaskedLM(BertConfig(**ODD)), BertForMaskedLM(BertConfig(**ODD))
    b.load_state_dict(a.state_dict())
    ids, mask, types = make_batch(0)
    torch.testing.assert_close(a(ids, mask, types).logits, b(ids, mask, types).logits)
    with torch.no_grad():
        b.bert.embeddings.word_embeddings.weight.mul_(2)  # the output layer is the embedding matrix
    assert not torch.allclose(a(ids, mask, types).logits, b(ids, mask, types).logits)
    assert "head.decoder.weight" not in dict(b.named_parameters())


def test_roberta_positions_and_standalone_layer():
    cfg = BertConfig(**{**ODD, "model_type": "roberta", "pad_token_id": 1, "type_vocab_size": 1})
    emb = BertEmbeddings(cfg)
    ids = torch.tensor([[0, 5, 6, 2, 1, 1]])
    assert emb.position_ids(ids).tolist() == [[2, 3, 4, 5, 1, 1]]  # start at pad+1, pads keep pad
    assert BertEmbeddings(BertConfig(**ODD)).position_ids(ids).tolist() == [[0, 1, 2, 3, 4, 5]]
    # a BertLayer copied into a fresh one computes the same function (xpt.py relies on this)
    torch.manual_seed(0)
    m = BertModel(BertConfig(**ODD)).eval()
    clone = BertLayer(m.config).eval()
    clone.load_state_dict(m.layers[1].state_dict())
    x = torch.randn(B, T, 36)
    am = make_attention_mask(make_batch(0)[1], x.dtype)
    assert am.shape == (B, 1, 1, T) and make_attention_mask(None, x.dtype) is None
    torch.testing.assert_close(clone(x, am), m.layers[1](x, am))


def test_gradients_flow_and_init():
    torch.manual_seed(0)
    cfg = BertConfig(**ODD)
    m = BertForPreTraining(cfg)
    ids, mask, types = make_batch(0)
    labels = torch.where(torch.rand(B, T) < 0.3, ids, torch.full_like(ids, -100))
    labels[0, 0] = 3
    out = m(ids, mask, types, labels=labels, next_sentence_label=torch.tensor([0, 1, 0]))
    out.loss.backward()
    assert all(p.grad is not None for n, p in m.named_parameters()), "every parameter gets a gradient"
    assert abs(m.bert.layers[0].query.weight.std().item() - 0.02) < 0.004
    assert m.bert.layers[0].query.bias.abs().max() == 0 and torch.all(m.bert.embeddings.layer_norm.weight == 1)
    c = BertForSequenceClassification(BertConfig(**{**ODD, "num_labels": 3}))
    o = c(ids, mask, types, labels=torch.tensor([0, 2, 1]))
    assert o.logits.shape == (B, 3) and o.loss.ndim == 0


def test_bf16_autocast_runs_and_stays_close():
    """The mask is built in fp32 and cast inside attention; under autocast the hidden states of the real
    tokens stay within bf16's precision of fp32's (a mask lost or mangled in the cast moves the padded
    rows' states by far more), and the loss backpropagates."""
    torch.manual_seed(0)
    m = BertForMaskedLM(BertConfig(**ODD, initializer_range=0.1))  # (at 0.02 attention is ~uniform)
    ids, mask, types = make_batch(0)
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, -100))
    real = mask.bool()
    with torch.no_grad():
        ref = m.bert(ids, mask, types)
        unmasked = m.bert(ids, torch.ones_like(mask), types)
    assert (unmasked - ref)[real].abs().max() > 0.3, "the padding must matter for this check to bite"
    for impl in ("sdpa", "manual"):
        for layer in m.bert.layers:
            layer.attention_impl = impl
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = m.bert(ids, mask, types)
            out = m(ids, mask, types, labels=labels)
        out.loss.backward()
        err = (hidden.float() - ref)[real].abs().max().item()
        assert err < 0.03, (impl, err)
        assert torch.isfinite(out.loss)


# ---------------------------------------------------------------------------------------------------
# ALBERT switches

def test_albert_switches():
    base = BertForMaskedLM(BertConfig(**ODD))
    fact = BertForMaskedLM(BertConfig(**{**ODD, "embedding_size": 8}))
    shared = BertForMaskedLM(BertConfig(**{**ODD, "share_layers": True}))
    both = BertForMaskedLM(BertConfig(**{**ODD, "embedding_size": 8, "share_layers": True}))
    n = [m.num_parameters() for m in (base, fact, shared, both)]
    assert n[0] > n[1] > n[3] and n[0] > n[2] > n[3]
    layer_params = sum(p.numel() for p in base.bert.layers[0].parameters())
    # one layer's weights instead of two; ALBERT keeps its E -> H projection even when E = H (36)
    assert n[0] - n[2] == layer_params - (36 * 36 + 36)
    assert shared.bert.layers[0] is shared.bert.layers[1] and len(shared.bert.layers) == 2
    ids, mask, types = make_batch(0)
    for m in (fact, both):
        assert m.bert(ids, mask, types).shape == (B, T, 36)
        assert m.bert.embeddings.word_embeddings.weight.shape == (99, 8)
        assert m(ids, mask, types).logits.shape == (B, T, 99)


def test_albert_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = BertForMaskedLM(BertConfig(**{**ODD, "embedding_size": 8, "share_layers": True})).eval()
    assert m.config.model_type == "albert"  # (BERT with ALBERT's switches is ALBERT)
    m.save_pretrained(tmp_path)
    keys = read_safetensors(tmp_path / "model.safetensors")
    assert "albert.encoder.embedding_hidden_mapping_in.weight" in keys
    assert "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight" in keys
    assert not any(".albert_layer_groups.1." in k for k in keys)  # one shared layer, stored once
    m2 = BertForMaskedLM.from_pretrained(tmp_path).eval()
    assert m2.config == m.config and m2.fresh_parameters == []
    ids, mask, types = make_batch(0)
    torch.testing.assert_close(m(ids, mask, types).logits, m2(ids, mask, types).logits)
    with pytest.raises(ValueError, match="share_layers is ALBERT's"):
        BertConfig(**{**ODD, "model_type": "roberta", "share_layers": True})


@pytest.mark.parametrize("switches", [{"embedding_size": 8}, {"share_layers": True},
                                      {"embedding_size": 8, "share_layers": True}])
def test_albert_matches_hf_both_ways(switches, tmp_path):
    """Either switch saves HF's AlbertForMaskedLM layout: it loads with no missing or unexpected keys and
    gives the same logits (ALBERT's gelu_new, its embedding LayerNorm at width E, its head to E); what HF
    saves loads back into the same config."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    m = BertForMaskedLM(BertConfig(**{**ODD, "hidden_act": "gelu_new", **switches})).eval()
    m.save_pretrained(tmp_path / "ours")
    hf, info = transformers.AlbertForMaskedLM.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    hf.eval()
    ids, mask, types = make_batch(0)
    real = mask.bool()
    ours, ref = m(ids, mask, types).logits, hf(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert torch.allclose(ours[real], ref[real], atol=1e-5), (ours - ref)[real].abs().max()
    hf.save_pretrained(tmp_path / "hf")
    back = BertForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    assert back.config == m.config
    torch.testing.assert_close(back(ids, mask, types).logits, ours)


# ---------------------------------------------------------------------------------------------------
# safetensors, config

def test_safetensors_roundtrip_dtypes(tmp_path):
    ts = {"a": torch.randn(3, 5), "b": torch.randn(7).half(), "c": torch.randn(2, 3).bfloat16(),
          "d": torch.arange(5), "e": torch.zeros(0, 4), "f": torch.randn(1).double()}
    write_safetensors(tmp_path / "x.safetensors", ts)
    back = read_safetensors(tmp_path / "x.safetensors")
    assert set(back) == set(ts)
    for k in ts:
        assert back[k].dtype == ts[k].dtype and torch.equal(back[k], ts[k])
    assert not list(tmp_path.glob("*.tmp"))  # the temp file was renamed away
    safetensors = pytest.importorskip("safetensors.torch")  # the reference reads ours, we read theirs
    assert torch.equal(safetensors.load_file(tmp_path / "x.safetensors")["c"], ts["c"])
    safetensors.save_file(ts, tmp_path / "y.safetensors")
    assert torch.equal(read_safetensors(tmp_path / "y.safetensors")["b"], ts["b"])


def test_config_roundtrip_and_validation(tmp_path):
    c = BertConfig(**ODD)
    c.to_json_file(tmp_path / "c.json")
    assert BertConfig.from_json_file(tmp_path / "c.json") == c
    d = {**c.to_dict(), "architectures": ["BertModel"], "transformers_version": "5.24.0"}
    assert BertConfig.from_dict(d) == c
    with pytest.raises(ValueError, match="divisible"):
        BertConfig.from_dict({**d, "hidden_size": 37})
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig(**{**ODD, "hidden_act": "swish7"})
    with pytest.raises(ValueError, match="position_embedding_type"):
        BertConfig.from_dict({**d, "position_embedding_type": "relative_key"})
    assert BertConfig.from_dict({"id2label": {"0": "a", "1": "b", "2": "c"}}).num_labels == 3
    assert BertConfig.from_dict({"pad_token_id": None}).pad_token_id == 0


# ---------------------------------------------------------------------------------------------------
# Errors

def test_bad_inputs_raise_value_error():
    m = BertForMaskedLM(BertConfig(**ODD))
    ids, mask, types = make_batch(0)
    with pytest.raises(ValueError, match="exceeds"):
        m(torch.zeros(1, 21, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 99\)"):
        m(torch.full((1, 3), 99))
    with pytest.raises(ValueError, match=r"\[0, 99\)"):
        m(torch.full((1, 3), -1))
    with pytest.raises(ValueError, match="attention_mask has shape"):
        m(ids, attention_mask=mask[:, :5])
    with pytest.raises(ValueError, match="token_type_ids"):
        m(ids, token_type_ids=types + 1)
    with pytest.raises(ValueError, match="labels has shape"):
        m(ids, labels=ids[:, :3])
    with pytest.raises(ValueError, match="integer tensor"):
        m(ids.float())
    rob = BertModel(BertConfig(**{**ODD, "model_type": "roberta", "pad_token_id": 1}))
    rob(torch.full((1, 18), 5))  # 18 + pad + 1 = 20 positions: fits
    with pytest.raises(ValueError, match="exceeds the model's maximum of 18"):
        rob(torch.full((1, 19), 5))


def test_bad_checkpoints_name_every_problem(hf_dirs, tmp_path):
    d, _ = hf_dirs["bert_mlm"]
    sd = read_safetensors(d / "model.safetensors")
    del sd["bert.encoder.layer.1.output.dense.weight"]
    sd["bert.encoder.layer.0.attention.self.query.weight"] = torch.zeros(5, 36)
    sd["bert.encoder.mystery.weight"] = torch.zeros(1)
    del sd["cls.predictions.transform.dense.bias"]  # a head that is half there is an error too
    write_safetensors(tmp_path / "model.safetensors", sd)
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    with pytest.raises(CheckpointError) as e:
        BertForMaskedLM.from_pretrained(tmp_path)
    msg = str(e.value)
    for needle in ("missing keys (2)", "encoder.layer.1.output.dense.weight", "cls.predictions.transform.dense.bias",
                   "unexpected keys (1)", "encoder.mystery.weight",
                   "shape mismatches (1)", "encoder.layer.0.attention.self.query.weight: checkpoint (5, 36)"):
        assert needle in msg
    # a config that disagrees with the weights
    cfg = json.loads((d / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 40}))
    write_safetensors(tmp_path / "model.safetensors", read_safetensors(d / "model.safetensors"))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        BertForMaskedLM.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError):
        BertModel.from_pretrained(tmp_path / "nowhere")


def test_old_names_and_pytorch_bin(hf_dirs, tmp_path):
    """gamma/beta LayerNorm names, position_ids buffers, an untied-looking decoder copy, a .bin file."""
    d, hf = hf_dirs["bert_mlm"]
    sd = read_safetensors(d / "model.safetensors")
    sd = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
          for k, v in sd.items()}
    sd["bert.embeddings.position_ids"] = torch.arange(20)[None]
    sd["cls.predictions.decoder.weight"] = sd["bert.embeddings.word_embeddings.weight"].clone()
    torch.save(sd, tmp_path / "pytorch_model.bin")
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    ours = BertForMaskedLM.from_pretrained(tmp_path).eval()
    ids, mask, types = make_batch(0)
    with torch.no_grad():
        assert_close_real(ours(ids, mask, types).logits, hf(input_ids=ids, attention_mask=mask,
                                                              token_type_ids=types).logits, mask, 1e-5)
    sd["cls.predictions.decoder.weight"] += 1  # a decoder that is not the embedding: refuse
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="tied"):
        BertForMaskedLM.from_pretrained(tmp_path)


def test_discriminator_metrics_against_brute_force():
    """The discriminator's evaluation: the AUC equals the share of (replaced, original) pairs that it
    orders right (ties half), over two batches with tied scores and padding; recall, original-token
    accuracy and precision from the same counts; a class that never occurs gives no AUC."""
    g = torch.Generator().manual_seed(0)
    counts = dict.fromkeys(("loss", "tokens", "replaced", "replaced_right", "original_right"), 0.0)
    batches = []
    for b in range(2):
        logits = (torch.randint(-3, 4, (3, 7), generator=g) / 2).float()  # coarse: many ties
        replaced = torch.rand(3, 7, generator=g) < 0.3
        mask = torch.ones(3, 7, dtype=torch.long)
        mask[1, 5:] = 0
        batches.append((logits[mask.bool()], replaced[mask.bool()]))
        out = ElectraPairOutput(None, None, logits, replaced, None, None)
        electra_eval_counts(out, mask, counts)
    m = electra_eval_metrics(counts)
    s, y = (torch.cat(t) for t in zip(*batches))
    pos, neg = s[y], s[~y]
    pairs = (pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()
    assert m["disc_auc"] == pytest.approx(pairs.mean().item(), abs=1e-12)
    said = s > 0
    assert m["disc_acc_replaced"] == pytest.approx((said & y).sum().item() / y.sum().item())
    assert m["disc_acc_original"] == pytest.approx((~said & ~y).sum().item() / (~y).sum().item())
    assert m["disc_precision"] == pytest.approx((said & y).sum().item() / said.sum().item())
    assert binary_auc(torch.tensor([0.1, 0.2]), torch.tensor([False, False])) is None
    assert binary_auc(torch.tensor([0.1, 0.2, 0.2]), torch.tensor([False, True, False])) == 0.75
