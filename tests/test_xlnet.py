"""xlnet.py: the same logits as HF's XLNetLMHeadModel on the same random weights (odd sizes; plain, with
padding, and with perm_mask + target_mapping + segments), checkpoints both ways with no missing or
unexpected keys, the query stream's view by gradients, and permutation_targets' rules."""
import pytest
import torch

import xlnet

V = 99


def model(**kw):
    torch.manual_seed(0)
    sizes = dict(vocab_size=V, d_model=36, n_layer=2, n_head=3, d_inner=37, dropout=0.0)
    c = xlnet.XLNetConfig(**{**sizes, **kw})
    return xlnet.XLNetLMHeadModel(c).eval()


def inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(6, V, (3, 13), generator=g)
    keep = torch.ones(3, 13, dtype=torch.long)
    keep[1, 9:] = keep[2, 5:] = 0
    segments = (torch.arange(13)[None] >= 6).long().repeat(3, 1)
    return ids, keep, segments


def test_same_logits_as_hf_and_checkpoints_both_ways(tmp_path):
    transformers = pytest.importorskip("transformers")
    ours = model()
    ours.save_pretrained(tmp_path / "ours")
    hf, info = transformers.XLNetLMHeadModel.from_pretrained(tmp_path / "ours", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    hf.eval()
    ids, keep, segments = inputs()
    perm_mask, target_mapping, labels = xlnet.permutation_targets(ids, keep, k=3,
                                                                 generator=torch.Generator().manual_seed(1))
    cases = [dict(), dict(attention_mask=keep),
             dict(attention_mask=keep, perm_mask=perm_mask, target_mapping=target_mapping,
                  token_type_ids=segments)]
    for case in cases:
        a = ours(ids, **case).logits
        b = hf(input_ids=ids, **{k: v.float() if k in ("perm_mask", "target_mapping") else v
                                 for k, v in case.items()}).logits
        assert torch.allclose(a, b, atol=1e-5), (list(case), (a - b).abs().max())
    loss = ours(ids, keep, perm_mask, target_mapping, segments, labels=labels).loss
    ref = hf(input_ids=ids, attention_mask=keep, perm_mask=perm_mask, target_mapping=target_mapping,
             token_type_ids=segments, labels=labels).loss
    assert torch.allclose(loss, ref, atol=1e-5)
    hf.save_pretrained(tmp_path / "hf")
    again = xlnet.XLNetLMHeadModel.from_pretrained(tmp_path / "hf").eval()
    assert torch.allclose(again(ids, keep).logits, ours(ids, keep).logits, atol=1e-6)
    with pytest.raises(ValueError, match="model_type 'bert'"):
        xlnet.XLNetConfig.from_dict({"model_type": "bert"})
    with pytest.raises(ValueError, match="does not split"):
        xlnet.XLNetConfig(d_model=37, n_head=3)


def test_the_query_stream_sees_only_what_comes_earlier_in_its_order():
    """The logit of a predicted token has zero gradient with respect to its own token's embedding and to
    every token its order hides, and a nonzero one to those it may see."""
    m = model()
    ids, _, _ = inputs()
    ids = ids[:1]
    g = torch.Generator().manual_seed(2)
    perm_mask, target_mapping, labels = xlnet.permutation_targets(ids, k=3, generator=g)
    emb = m.transformer.word_embedding(ids).detach().requires_grad_(True)

    class Fixed(torch.nn.Module):
        def forward(self, _):
            return emb
    m.transformer.word_embedding = Fixed()
    logits = m(ids, perm_mask=perm_mask, target_mapping=target_mapping).logits  # (1, M, V)
    for slot in range(target_mapping.shape[1]):
        pos = int(target_mapping[0, slot].argmax())
        (grad,) = torch.autograd.grad(logits[0, slot, labels[0, slot]], emb, retain_graph=True)
        seen = grad[0].abs().sum(-1) > 0
        visible = perm_mask[0, pos] == 0
        assert not seen[pos] and torch.equal(seen, visible), (pos, seen, visible)


def test_permutation_targets_follow_the_paper():
    ids = torch.arange(10, 40).view(2, 15)
    keep = torch.ones(2, 15, dtype=torch.long)
    keep[1, 12:] = 0
    perm_mask, target_mapping, labels = xlnet.permutation_targets(ids, keep, k=6,
                                                                 generator=torch.Generator().manual_seed(0))
    assert target_mapping.shape == (2, 2, 15) and (target_mapping.sum(-1) == 1).all()  # 15 // 6 = 12 // 6 = 2
    for b in range(2):
        targets = target_mapping[b].argmax(-1)
        assert torch.equal(labels[b], ids[b, targets])
        context = [j for j in range(15) if keep[b, j] and j not in targets.tolist()]
        assert (perm_mask[b][:, context] == 0).all(), "everyone sees the context"
        assert (perm_mask[b][:, keep[b] == 0] == 1).all(), "nobody sees padding"
        first, second = targets.tolist()
        assert perm_mask[b, first, first] == 1 and perm_mask[b, second, first] == 0  # later sees earlier
        assert perm_mask[b, first, second] == 1 and perm_mask[b, second, second] == 1
        assert (perm_mask[b][context][:, targets] == 1).all(), "the context sees no target"
