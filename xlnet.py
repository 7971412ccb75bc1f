"""
XLNet: permutation language modelling with two-stream relative attention, from scratch.

    python xlnet.py     # a tiny XLNet learns one sentence in random factorization orders

Yang et al. 2019, "XLNet: Generalized Autoregressive Pretraining for Language Understanding"
(arXiv:1906.08237), sections 2.2-2.4; relative positions from Transformer-XL (Dai et al. 2019,
arXiv:1901.02860, section 3.3). The reference implementation is zihangdai/xlnet (TensorFlow); the layout
and key names here are those of Hugging Face's `XLNetLMHeadModel`, which loads what `save_pretrained`
writes.

The two ideas, each where it lives:
  - `RelativeAttention.scores`: no position embeddings; the score of query i for key j is the sum of
    four terms (Transformer-XL): content-content (a), content-position (b), and the two global biases
    (c: "how much does any query like this content", d: "how much does any query like this distance"),
    folded in HF's way into (q + r_w_bias)·k and (q + r_r_bias)·r, plus a segment term; the position
    term is computed once per *distance* (sinusoids of i - j, `relative_positions`) and moved into place
    by `rel_shift`;
  - `XLNetLMHeadModel.forward`: two streams through the same layers. The content stream h is BERT-like
    (each token sees its own content); the query stream g starts from one learned vector (mask_emb) and
    sees *only* the context allowed by `perm_mask`, never its own token: it knows its position, not its
    word, and predicts it. `permutation_targets` samples a factorization order per sequence: each token
    may attend only to tokens earlier in the order, and only the last 1/K of the order is predicted
    (partial prediction, K = 6 in the paper), through `target_mapping`.
Shape legend: B batch, T tokens, K keys (= T: no memory), M predicted positions, N heads, D head width,
H d_model, P relative positions (K + T).

Why a file of its own: another attention (relative, two streams) and another objective than bert.py's;
it needs only torch and bert.py's file helpers, and copies out with them.

Differs from the reference: no memory (`mems`), no segment recurrence, no bidirectional data pipeline
(bi_data) and no `clamp_len`: the model sees one sequence at a time; attn_type "bi" only.
"""
import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

import bert  # (safetensors in and out, atomic writes)


@dataclass
class XLNetConfig:
    vocab_size: int = 32000
    d_model: int = 1024
    n_layer: int = 24
    n_head: int = 16
    d_inner: int = 4096
    ff_activation: str = "gelu"
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 5
    bos_token_id: int = 1
    eos_token_id: int = 2

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} does not split over n_head={self.n_head} heads")
        if self.ff_activation not in ("gelu", "relu"):
            raise ValueError(f"ff_activation must be gelu or relu, got {self.ff_activation!r}")

    @property
    def d_head(self):
        return self.d_model // self.n_head

    def to_dict(self):
        return {**dataclasses.asdict(self), "d_head": self.d_head, "model_type": "xlnet", "attn_type": "bi",
                "bi_data": False, "clamp_len": -1, "same_length": False, "mem_len": None, "reuse_len": None,
                "architectures": ["XLNetLMHeadModel"]}

    @classmethod
    def from_dict(cls, d):
        if d.get("model_type", "xlnet") != "xlnet":
            raise ValueError(f"not an XLNet checkpoint: model_type {d.get('model_type')!r}")
        if d.get("attn_type", "bi") != "bi" or d.get("bi_data") or d.get("clamp_len", -1) > 0:
            raise ValueError("only attn_type='bi' without bi_data or clamp_len is implemented here")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def relative_positions(T, K, width, device=None):
    """(P, H) sinusoids of the distances K, K-1, ..., -T+1 (query i to key j: distance i - j, read off by
    rel_shift), Transformer-XL's R: [sin(d f) | cos(d f)] with f = 1 / 10000^(2k / H)."""
    inv_freq = 1 / torch.pow(10000, torch.arange(0, width, 2.0, device=device) / width)
    distance = torch.arange(K, -T, -1.0, device=device)  # (P,)
    angles = distance[:, None] * inv_freq[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def rel_shift(x, K):
    """(B, N, T, P) scores against each distance -> (B, N, T, K) scores against each key.
    subtle: column p of x is distance K - p, and key j is at distance i - j from query i: column K - i + j.
    Viewing each (T, P) block as (P, T), dropping its first row (T numbers) and viewing it back as
    (T, P - 1) makes element (i, j) the old (i, j + T - i): that column, for K = T (Transformer-XL,
    appendix B), with no gather."""
    B, N, T, P = x.shape
    x = x.reshape(B, N, P, T)[:, :, 1:, :].reshape(B, N, T, P - 1)
    return x[..., :K]


class RelativeAttention(nn.Module):
    """One layer's attention for both streams, with the residual and LayerNorm (post-norm, as in BERT)."""

    def __init__(self, c: XLNetConfig):
        super().__init__()
        N, D, H = c.n_head, c.d_head, c.d_model
        for name in ("q", "k", "v", "o", "r"):  # (H, N, D): HF's layout, one matrix per head
            setattr(self, name, nn.Parameter(torch.empty(H, N, D)))
        for name in ("r_r_bias", "r_s_bias", "r_w_bias"):
            setattr(self, name, nn.Parameter(torch.empty(N, D)))
        self.seg_embed = nn.Parameter(torch.empty(2, N, D))
        self.layer_norm = nn.LayerNorm(H, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.dropout)
        self.scale = 1 / math.sqrt(D)

    def scores(self, q, k, k_r, seg_mat):
        """q (B, I, N, D) against k (B, K, N, D): the attention scores (B, N, I, K)."""
        content = torch.einsum("bind,bjnd->bnij", q + self.r_w_bias, k)  # (a) + (c): content and its bias
        position = torch.einsum("bind,pnd->bnip", q + self.r_r_bias, k_r)  # (b) + (d): distance, its bias
        position = rel_shift(position, k.shape[1])  # (B, N, I, K)
        segment = 0
        if seg_mat is not None:  # same segment as the key or not: one learned vector per answer
            ef = torch.einsum("bind,snd->bins", q + self.r_s_bias, self.seg_embed)
            segment = torch.einsum("bijs,bins->bnij", seg_mat, ef)
        return (content + position + segment) * self.scale

    def attend(self, q, k, v, k_r, seg_mat, masked):
        s = self.scores(q, k, k_r, seg_mat)
        if masked is not None:  # (B, I, K) True = may not attend
            s = s - 1e30 * masked[:, None].to(s.dtype)
        p = self.dropout(F.softmax(s, dim=-1))
        return torch.einsum("bnij,bjnd->bind", p, v)  # (B, I, N, D)

    def out(self, x, vec):
        return self.layer_norm(x + self.dropout(torch.einsum("bind,hnd->bih", vec, self.o)))

    def forward(self, h, g, r, seg_mat, mask_h, mask_g, target_mapping):
        """h (B, T, H) content stream; g (B, M, H) query stream or None; r (P, H) positions."""
        k = torch.einsum("bjh,hnd->bjnd", h, self.k)  # keys and values come from the content stream only
        v = torch.einsum("bjh,hnd->bjnd", h, self.v)
        k_r = torch.einsum("ph,hnd->pnd", r, self.r)
        h_out = self.out(h, self.attend(torch.einsum("bih,hnd->bind", h, self.q), k, v, k_r, seg_mat, mask_h))
        if g is None:
            return h_out, None
        q_g = torch.einsum("bmh,hnd->bmnd", g, self.q)
        if target_mapping is not None:  # each predicted position m queries from its place l in the text
            q_g = torch.einsum("bmnd,bml->blnd", q_g, target_mapping)
        vec_g = self.attend(q_g, k, v, k_r, seg_mat, mask_g)
        if target_mapping is not None:
            vec_g = torch.einsum("blnd,bml->bmnd", vec_g, target_mapping)
        return h_out, self.out(g, vec_g)


class FeedForward(nn.Module):
    def __init__(self, c: XLNetConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.layer_1 = nn.Linear(c.d_model, c.d_inner)
        self.layer_2 = nn.Linear(c.d_inner, c.d_model)
        self.dropout = nn.Dropout(c.dropout)
        self.act = F.gelu if c.ff_activation == "gelu" else F.relu

    def forward(self, x):
        return self.layer_norm(x + self.dropout(self.layer_2(self.dropout(self.act(self.layer_1(x))))))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.rel_attn = RelativeAttention(c)
        self.ff = FeedForward(c)

    def forward(self, h, g, *args):
        h, g = self.rel_attn(h, g, *args)
        return self.ff(h), (self.ff(g) if g is not None else None)


class Transformer(nn.Module):
    """HF's `transformer.`: the word table, the query stream's start vector, the layers."""

    def __init__(self, c):
        super().__init__()
        self.word_embedding = nn.Embedding(c.vocab_size, c.d_model)
        self.mask_emb = nn.Parameter(torch.empty(1, 1, c.d_model))
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.n_layer))
        self.dropout = nn.Dropout(c.dropout)


class LMOutput(NamedTuple):
    loss: Optional[torch.Tensor]
    logits: torch.Tensor  # (B, M, V) with a target_mapping, else (B, T, V)


class XLNetLMHeadModel(nn.Module):
    def __init__(self, config: XLNetConfig):
        super().__init__()
        self.config = config
        self.transformer = Transformer(config)
        self.lm_loss = nn.Linear(config.d_model, config.vocab_size)  # (its weight is the word table)
        self.lm_loss.weight = self.transformer.word_embedding.weight
        self.apply(self._init_weights)

    def _init_weights(self, m):
        std = self.config.initializer_range
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=std)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (RelativeAttention, Transformer)):
            for p in m.parameters(recurse=False):
                nn.init.normal_(p, std=std)

    def forward(self, input_ids, attention_mask=None, perm_mask=None, target_mapping=None,
                token_type_ids=None, labels=None) -> LMOutput:
        """input_ids (B, T); attention_mask (B, T) 1 = real; perm_mask (B, T, T) 1 = token i may not see
        token j; target_mapping (B, M, T) one-hot: the positions the query stream predicts; labels (B, M)
        (or (B, T) without a target_mapping; -100 = ignored)."""
        h, g = self.streams(input_ids, attention_mask, perm_mask, target_mapping, token_type_ids)
        logits = self.lm_loss(self.transformer.dropout(g if g is not None else h))
        loss = None if labels is None else F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        return LMOutput(loss, logits)

    def streams(self, input_ids, attention_mask=None, perm_mask=None, target_mapping=None,
                token_type_ids=None):
        """The two streams after the last layer: content h (B, T, H), and query g (B, M, H) with a
        target_mapping (else None). h is what a classifier reads (finetune.encode)."""
        tr, c = self.transformer, self.config
        B, T = input_ids.shape
        masked = None  # (B, T, K): True where query i may not attend to key j
        if attention_mask is not None:
            masked = (attention_mask == 0)[:, None, :].expand(B, T, T)
        if perm_mask is not None:
            masked = perm_mask > 0 if masked is None else masked | (perm_mask > 0)
        # the content stream always sees its own token; the query stream never does (perm_mask says so)
        mask_h = None if masked is None else masked & ~torch.eye(T, dtype=torch.bool, device=input_ids.device)
        h = tr.dropout(tr.word_embedding(input_ids))  # (B, T, H)
        g = None
        if target_mapping is not None:  # the query stream: position only, no content
            g = tr.dropout(tr.mask_emb.expand(B, target_mapping.shape[1], c.d_model))  # (B, M, H)
        seg_mat = None
        if token_type_ids is not None:  # 1 where query and key are in different segments, one-hot
            different = (token_type_ids[:, :, None] != token_type_ids[:, None, :]).long()
            seg_mat = F.one_hot(different, 2).to(h.dtype)  # (B, T, K, 2)
        r = tr.dropout(relative_positions(T, T, c.d_model, input_ids.device))  # (P, H)
        for layer in tr.layer:
            h, g = layer(h, g, r, seg_mat, mask_h, masked, target_mapping)
        return h, g

    # ---- HF checkpoints: our parameter names are HF's; the output layer's weight is the word table ----
    def save_pretrained(self, directory):
        tensors = {k: v for k, v in self.state_dict().items() if k != "lm_loss.weight"}
        bert.save_folder(directory, tensors, self.config.to_dict())

    @classmethod
    def from_pretrained(cls, directory):
        config, sd = bert.read_folder(directory)
        sd.setdefault("lm_loss.weight", sd.get("transformer.word_embedding.weight"))  # (stored once)
        return bert.load_exactly(cls(XLNetConfig.from_dict(config)), sd, directory)


def permutation_targets(input_ids, attention_mask=None, k=6, generator=None):
    """XLNet's objective for a batch: a random factorization order per sequence (of its real tokens),
    of which the last 1/k is predicted (partial prediction) and the rest is context. As in the
    reference's data pipeline (_local_perm): every token sees the context tokens; a predicted token also
    sees the predicted tokens earlier in the order, never itself or later ones; context tokens see no
    predicted token. Returns perm_mask (B, T, T), 1 = i may not see j; target_mapping (B, M, T) one-hot;
    labels (B, M), -100 where a shorter sequence has fewer targets."""
    B, T = input_ids.shape
    real = torch.ones(B, T, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    n_pred = [max(1, int(r.sum()) // k) for r in real]
    M = max(n_pred)
    perm_mask = torch.zeros(B, T, T)
    target_mapping = torch.zeros(B, M, T)
    labels = torch.full((B, M), -100, dtype=torch.long)
    for b in range(B):
        pos = real[b].nonzero().flatten()
        order = pos[torch.randperm(len(pos), generator=generator)]
        targets = order[len(order) - n_pred[b]:]  # (in their order)
        rank = torch.full((T,), -1, dtype=torch.long)  # context: before every target
        rank[targets] = torch.arange(len(targets))
        is_target = rank >= 0
        # j hidden from i when j is a target not strictly earlier than i (a target's own rank included)
        hidden = is_target[None, :] & ~((rank[None, :] < rank[:, None]) & is_target[:, None])
        perm_mask[b] = (hidden | ~real[b][None, :]).float()  # (and nobody sees padding)
        target_mapping[b, torch.arange(len(targets)), targets] = 1
        labels[b, :len(targets)] = input_ids[b, targets]
    return perm_mask, target_mapping, labels



# ----------------------------------------------------------------------------------------------------
# Trained by train.py's loop: python train.py --task=mlm --objective=plm
# ----------------------------------------------------------------------------------------------------
def new_model(s, tok):
    """A fresh XLNetLMHeadModel of the settings' size (train.Settings) for tokenizer `tok`; returns
    (model, the run's config)."""
    c = XLNetConfig(vocab_size=len(tok), d_model=s.hidden_size, n_layer=s.num_layers, n_head=s.num_heads,
                    d_inner=s.intermediate_size, dropout=s.dropout, pad_token_id=tok.pad_id,
                    bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    return XLNetLMHeadModel(c), {"model": c.to_dict(), "plm_k": s.plm_k}


def make_batch(batch, tok_info, s, generator):
    """The loop's hook: a packed batch (input_ids, attention_mask) -> the inputs and labels of
    permutation LM, one factorization order per row (`permutation_targets`, K = s.plm_k). Special
    tokens (<s>, </s>) may fall among the targets: they are not scored (labels -100)."""
    ids, real = batch["input_ids"], batch["attention_mask"]
    perm_mask, target_mapping, labels = permutation_targets(ids, real, k=s.plm_k, generator=generator)
    special = torch.isin(labels, torch.as_tensor(tok_info["special_ids"], dtype=torch.long))
    return {"input_ids": ids, "attention_mask": real, "perm_mask": perm_mask,
            "target_mapping": target_mapping, "labels": labels.masked_fill(special, -100)}

if __name__ == "__main__":
    torch.manual_seed(0)
    ids = torch.arange(10, 26)[None].repeat(4, 1)  # one "sentence" of 16 tokens, four orders per step
    model = XLNetLMHeadModel(XLNetConfig(vocab_size=32, d_model=32, n_layer=2, n_head=4, d_inner=64,
                                         dropout=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(200):
        perm_mask, target_mapping, labels = permutation_targets(ids, k=4, generator=g)
        loss = model(ids, perm_mask=perm_mask, target_mapping=target_mapping, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"loss after 200 steps {loss.item():.3f} (ln 32 = {math.log(32):.3f}: a model that knows nothing)")
# Expected output:
# loss after 200 steps 0.150 (ln 32 = 3.466: a model that knows nothing)
