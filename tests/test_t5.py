"""t5.py: the same logits and loss as HF's T5ForConditionalGeneration on the same random weights (odd
sizes, padding, T5 1.0 and 1.1), checkpoints both ways with no missing or unexpected keys, the buckets,
the decoder's causality by gradients, span corruption's statistics and round trip, greedy decoding."""
import pytest
import torch

import t5

V = 99


def config(**kw):
    sizes = dict(vocab_size=V, d_model=36, d_kv=7, d_ff=37, num_layers=2, num_decoder_layers=3, num_heads=3,
                 relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0)
    return t5.T5Config(**{**sizes, **kw})


def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(2, V - 3, (3, 13), generator=g)
    keep = torch.ones_like(x, dtype=torch.bool)
    keep[1, 9:] = keep[2, 4:] = False  # padding in two rows
    x = x.masked_fill(~keep, 0)
    y = torch.randint(2, V - 3, (3, 7), generator=g)
    y[0, 5:] = -100  # ignored target positions
    return x, keep, y


@pytest.mark.parametrize("ff,tied", [("relu", True), ("gated-gelu", False)])
def test_same_logits_and_loss_as_hf(ff, tied, tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ours = t5.T5ForConditionalGeneration(config(feed_forward_proj=ff, tie_word_embeddings=tied)).eval()
    ours.save_pretrained(tmp_path / "ours")
    hf, info = transformers.T5ForConditionalGeneration.from_pretrained(
        tmp_path / "ours", output_loading_info=True, attn_implementation="eager")
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    hf.eval()
    x, keep, y = batch()
    a, b = ours(x, keep, labels=y), hf(input_ids=x, attention_mask=keep.long(), labels=y)
    real = y != -100
    assert torch.allclose(a.logits[real], b.logits[real], atol=1e-5), (a.logits - b.logits).abs().max()
    assert torch.allclose(a.loss, b.loss, atol=1e-5)
    # and back: what HF saves, ours loads (names, tying and all)
    hf.save_pretrained(tmp_path / "hf")
    again = t5.T5ForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    assert torch.allclose(again(x, keep, labels=y).logits, a.logits, atol=1e-6)


def test_buckets_match_hf_and_a_bert_checkpoint_is_refused(tmp_path):
    transformers = pytest.importorskip("transformers")
    rel = torch.arange(-40, 41)[None, :]
    for bidirectional in (True, False):
        bucket = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
        ref = bucket(rel, bidirectional, 32, 128)
        assert torch.equal(t5.relative_position_bucket(rel, bidirectional, 32, 128), ref)
    with pytest.raises(ValueError, match="model_type 'bert'"):
        t5.T5Config.from_dict({"model_type": "bert"})


def test_the_decoder_never_sees_the_future():
    """d logit at target position t / d decoder input at position u is zero for u > t, nonzero for u <= t."""
    torch.manual_seed(0)
    model = t5.T5ForConditionalGeneration(config())
    x, keep, _ = batch()
    memory = model.encoder(x[:1], keep[:1])
    emb = model.shared(torch.randint(2, V, (1, 6))).detach().requires_grad_(True)

    class Fixed(torch.nn.Module):  # feed the decoder embeddings we can differentiate by
        def forward(self, ids):
            return emb
    model.decoder.embed_tokens = Fixed()
    h = model.decoder(torch.zeros(1, 6, dtype=torch.long), None, memory, keep[:1])
    for t in range(6):
        (grad,) = torch.autograd.grad(h[0, t].sum(), emb, retain_graph=True)
        seen = grad[0].abs().sum(-1)
        assert (seen[t + 1:] == 0).all() and (seen[:t + 1] > 0).all(), (t, seen)


@pytest.mark.parametrize("density,mean", [(0.15, 3.0), (0.4, 1.0), (0.4, 10.0)])  # (the default; the bench's)
def test_span_corruption_by_its_rules(density, mean):
    g = torch.Generator().manual_seed(0)
    ids = torch.arange(5, 505)  # 500 distinct tokens (ids >= 505: sentinels)
    x, y = t5.span_corruption(ids, vocab_size=1000, noise_density=density, mean_span=mean, generator=g)
    sentinels_x = [t for t in x.tolist() if t >= 505]
    sentinels_y = [t for t in y.tolist() if t >= 505]
    assert sentinels_x == sentinels_y == list(range(999, 999 - len(sentinels_x), -1))  # <extra_id_0>, 1, ...
    noise = round(500 * density)  # (15%: 75 noise tokens in spans of mean length 3)
    assert len(sentinels_x) == round(noise / mean)
    dropped = [t for t in y.tolist()[:-1] if t < 505]
    assert len(dropped) == noise and dropped == sorted(dropped)  # every dropped token once, in order
    # inputs and targets together give back the text: fill each sentinel of x with its span from y
    spans, cur = {}, None
    for t in y.tolist()[:-1]:
        if t >= 505:
            cur = t
            spans[cur] = []
        else:
            spans[cur].append(t)
    restored = [u for t in x.tolist()[:-1] for u in (spans[t] if t >= 505 else [t])]
    assert restored == ids.tolist() and x[-1] == y[-1] == 1
    share = [t5.random_spans_noise_mask(200, generator=g).float().mean().item() for _ in range(20)]
    assert all(abs(s - 0.15) <= 1 / 200 for s in share)
    with pytest.raises(ValueError, match="cannot hold a span"):
        t5.span_corruption([7], vocab_size=10)


def test_greedy_decoding_stops_at_the_end_token():
    torch.manual_seed(0)
    model = t5.T5ForConditionalGeneration(config())
    x, keep, _ = batch()
    out = model.generate(x, keep, max_new_tokens=5)
    assert out.shape[0] == 3 and 1 <= out.shape[1] <= 5 and model.training
