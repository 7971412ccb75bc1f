"""
T5: an encoder-decoder Transformer pretrained on span corruption, from scratch.

    python t5.py        # a tiny T5 learns to fill a sentence's corrupted spans (its output: at the bottom)

Raffel et al. 2019, "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer"
(arXiv:1910.10683), section 2.1 (the model) and 3.1.4 (the objective); the reference implementation is
google-research/text-to-text-transfer-transformer (Mesh TensorFlow), and the layout and key names here
are those of Hugging Face's `T5ForConditionalGeneration`, which loads what `save_pretrained` writes.

What is new against BERT (bert.py), each where it lives:
  - `RMSNorm`: layer norm without the mean and without a bias (scale only), before every sub-layer
    (pre-norm) and once at the end of each stack;
  - `relative_position_bucket`: no position embeddings; each attention head adds a learned scalar per
    *bucket* of relative distance (exact for near tokens, logarithmic up to max_distance, one bucket
    beyond), bidirectional in the encoder, causal in the decoder, computed in the first layer of each
    stack and shared by the others;
  - `Attention`: no 1/sqrt(d) scaling of the scores. subtle: T5 folds it into the initialisation of the
    query weights (std (d_model * d_kv)^-0.5 instead of d_model^-0.5), so the scaling is learned in;
  - `FeedForward`: T5 1.0's ReLU, or T5 1.1's gated GELU (feed_forward_proj="gated-gelu");
  - the decoder: causal self-attention, then cross-attention to the encoder's output;
  - `T5ForConditionalGeneration`: one embedding table shared by the encoder, the decoder and (tied) the
    output layer, whose input is rescaled by d_model^-0.5 when tied;
  - `span_corruption`: 15% of the tokens in spans of mean length 3 (`random_spans_noise_mask`, as the
    reference draws them), each span replaced by one sentinel; the target spells the spans out;
  - `generate`: greedy decoding, to see what the model writes for each sentinel.
Shape legend: B batch, S source (encoder) length, T target (decoder) length, N heads, D d_kv, H d_model.

Why a file of its own: an encoder-decoder is another architecture than bert.py's encoder; this file
needs only torch and bert.py's file helpers, and copies out with them (the sentinels' entries in a
saved tokenizer's files are written by runs.add_sentinels).

Differs from the reference: no key/value cache in decoding (it recomputes the prefix: fine at these
sizes); no fp16 clamping; no model parallelism; the span-corruption pre-processing works on one token
sequence at a time (the reference packs examples).
"""
import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

import bert  # (safetensors in and out, atomic writes, the tanh GELU)


@dataclass
class T5Config:
    vocab_size: int = 32128           # sentinels <extra_id_N> at the top of the vocabulary
    d_model: int = 512                # width of the residual stream
    d_kv: int = 64                    # width of each head
    d_ff: int = 2048                  # feed-forward width
    num_layers: int = 6               # encoder layers
    num_decoder_layers: int = 6       # decoder layers
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    initializer_factor: float = 1.0
    feed_forward_proj: str = "relu"   # relu (T5 1.0) | gated-gelu (T5 1.1)
    tie_word_embeddings: bool = True  # the output layer is the shared embedding table (T5 1.0)
    pad_token_id: int = 0             # also the decoder's start token
    eos_token_id: int = 1
    decoder_start_token_id: int = 0

    def __post_init__(self):
        if self.feed_forward_proj not in ("relu", "gated-gelu"):
            raise ValueError(f"feed_forward_proj must be relu or gated-gelu, got {self.feed_forward_proj!r}")
        if min(self.d_model, self.d_kv, self.d_ff, self.num_heads, self.num_layers, self.vocab_size) < 1:
            raise ValueError("every size of a T5Config must be positive")

    def to_dict(self):
        return {**dataclasses.asdict(self), "model_type": "t5", "is_encoder_decoder": True,
                "scale_decoder_outputs": self.tie_word_embeddings,
                "architectures": ["T5ForConditionalGeneration"]}

    @classmethod
    def from_dict(cls, d):
        if d.get("model_type", "t5") != "t5":
            raise ValueError(f"not a T5 checkpoint: model_type {d.get('model_type')!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if "scale_decoder_outputs" in d:  # subtle: transformers 5 writes the tying there (and True above it)
            kw["tie_word_embeddings"] = bool(d["scale_decoder_outputs"])
        return cls(**kw)


class RMSNorm(nn.Module):
    """Scale each vector to unit root-mean-square, then by a learned weight: no mean, no bias."""

    def __init__(self, width, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        variance = x.float().pow(2).mean(-1, keepdim=True)  # (in fp32 whatever the input's dtype)
        return self.weight * (x * torch.rsqrt(variance + self.eps)).to(x.dtype)


def relative_position_bucket(relative, bidirectional, num_buckets, max_distance):
    """The bucket of each relative position (key position - query position): half the buckets for exact
    small distances, the other half logarithmic up to max_distance; bidirectional: half of all buckets
    for keys after the query; causal (decoder): keys after the query cannot occur, so all go to distance."""
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).long() * num_buckets
        distance = relative.abs()
    else:
        distance = -torch.clamp(relative, max=0)
    exact = num_buckets // 2
    log_part = exact + (torch.log(distance.float() / exact) / math.log(max_distance / exact)
                        * (num_buckets - exact)).long()
    log_part = torch.clamp(log_part, max=num_buckets - 1)
    return buckets + torch.where(distance < exact, distance, log_part)


class Attention(nn.Module):
    """Multi-head attention without biases and without 1/sqrt(D); the first layer of a stack owns the
    relative-position table (buckets x heads) and returns the bias it computed for the others."""

    def __init__(self, c: T5Config, has_position_table, causal):
        super().__init__()
        inner = c.num_heads * c.d_kv
        self.q, self.k, self.v = (nn.Linear(c.d_model, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, c.d_model, bias=False)
        self.n, self.d, self.causal, self.c = c.num_heads, c.d_kv, causal, c
        if has_position_table:
            self.relative_attention_bias = nn.Embedding(c.relative_attention_num_buckets, c.num_heads)

    def position_bias(self, T, S, device):
        """(1, N, T, S): the learned scalar of each head for each (query, key) distance bucket."""
        relative = torch.arange(S, device=device)[None, :] - torch.arange(T, device=device)[:, None]  # (T, S)
        buckets = relative_position_bucket(relative, not self.causal, self.c.relative_attention_num_buckets,
                                           self.c.relative_attention_max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x, kv, mask, bias):
        """x (B, T, H) attends to kv (B, S, H); mask (B or 1, 1, T or 1, S) additive; bias (1, N, T, S) or
        None (computed here, or zero without a table). Returns (output (B, T, H), bias)."""
        B, T, _ = x.shape
        S = kv.shape[1]
        q = self.q(x).view(B, T, self.n, self.d).transpose(1, 2)  # (B, N, T, D)
        k = self.k(kv).view(B, S, self.n, self.d).transpose(1, 2)  # (B, N, S, D)
        v = self.v(kv).view(B, S, self.n, self.d).transpose(1, 2)
        if bias is None:
            bias = self.position_bias(T, S, x.device) if hasattr(self, "relative_attention_bias") else \
                torch.zeros(1, self.n, T, S, device=x.device, dtype=x.dtype)
        scores = q @ k.transpose(-1, -2) + bias + mask  # (B, N, T, S): no 1/sqrt(D), see the docstring
        weights = F.dropout(F.softmax(scores.float(), dim=-1).to(q.dtype), self.c.dropout_rate, self.training)
        out = (weights @ v).transpose(1, 2).reshape(B, T, self.n * self.d)  # (B, T, N*D)
        return self.o(out), bias


class FeedForward(nn.Module):
    def __init__(self, c: T5Config):
        super().__init__()
        self.gated = c.feed_forward_proj == "gated-gelu"
        if self.gated:  # T5 1.1: GELU(x W0) * (x W1)
            self.wi_0 = nn.Linear(c.d_model, c.d_ff, bias=False)
            self.wi_1 = nn.Linear(c.d_model, c.d_ff, bias=False)
        else:
            self.wi = nn.Linear(c.d_model, c.d_ff, bias=False)
        self.wo = nn.Linear(c.d_ff, c.d_model, bias=False)
        self.dropout = nn.Dropout(c.dropout_rate)

    def forward(self, x):
        h = bert._gelu_tanh(self.wi_0(x)) * self.wi_1(x) if self.gated else F.relu(self.wi(x))
        return self.wo(self.dropout(h))


class _Sublayer(nn.Module):
    """A pre-norm residual sub-layer, named as in HF's checkpoints: layer_norm, then one module under
    `name` (SelfAttention, EncDecAttention or DenseReluDense), then dropout and the residual add."""

    def __init__(self, c, name, module):
        super().__init__()
        self.name = name
        setattr(self, name, module)
        self.layer_norm = RMSNorm(c.d_model, c.layer_norm_epsilon)
        self.dropout = nn.Dropout(c.dropout_rate)


class Block(nn.Module):
    """Encoder block: self-attention, feed-forward. Decoder block: causal self-attention,
    cross-attention to the encoder, feed-forward."""

    def __init__(self, c, first, decoder):
        super().__init__()
        layers = [_Sublayer(c, "SelfAttention", Attention(c, first, causal=decoder))]
        if decoder:
            layers.append(_Sublayer(c, "EncDecAttention", Attention(c, False, causal=False)))
        layers.append(_Sublayer(c, "DenseReluDense", FeedForward(c)))
        self.layer = nn.ModuleList(layers)

    def forward(self, x, mask, bias, memory=None, memory_mask=None, cross_bias=None):
        sa = self.layer[0]
        h, bias = sa.SelfAttention(sa.layer_norm(x), sa.layer_norm(x), mask, bias)
        x = x + sa.dropout(h)
        if memory is not None:
            ca = self.layer[1]
            h, cross_bias = ca.EncDecAttention(ca.layer_norm(x), memory, memory_mask, cross_bias)
            x = x + ca.dropout(h)
        ff = self.layer[-1]
        return x + ff.dropout(ff.DenseReluDense(ff.layer_norm(x))), bias, cross_bias


def additive_mask(keep, dtype):
    """(B, 1, 1 or T, S) additive mask from a boolean `keep` (B, [T,] S): 0 where attended, the dtype's
    lowest value where not (HF's convention, so that a fully masked row stays finite)."""
    keep = keep[:, None, None, :] if keep.dim() == 2 else keep[:, None]
    return torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)


class Stack(nn.Module):
    def __init__(self, c, layers, decoder, embed_tokens):
        super().__init__()
        self.embed_tokens = embed_tokens  # (the shared table: one module, three users)
        self.block = nn.ModuleList(Block(c, i == 0, decoder) for i in range(layers))
        self.final_layer_norm = RMSNorm(c.d_model, c.layer_norm_epsilon)
        self.dropout = nn.Dropout(c.dropout_rate)
        self.decoder = decoder

    def forward(self, ids, keep=None, memory=None, memory_keep=None):
        """ids (B, L) -> hidden (B, L, H). keep: (B, L) bool, False at padding; the decoder also masks
        the future (causal) and attends to memory (B, S, H) where memory_keep (B, S) is True."""
        x = self.dropout(self.embed_tokens(ids))
        B, L = ids.shape
        keep = torch.ones(B, L, dtype=torch.bool, device=ids.device) if keep is None else keep.bool()
        if self.decoder:  # (B, T, T): a position sees itself and the positions before it
            keep = keep[:, None, :] & torch.ones(L, L, dtype=torch.bool, device=ids.device).tril()
        mask = additive_mask(keep, x.dtype)
        memory_mask = additive_mask(memory_keep.bool(), x.dtype) if memory is not None else None
        bias = cross_bias = None
        for block in self.block:
            x, bias, cross_bias = block(x, mask, bias, memory, memory_mask, cross_bias)
        return self.dropout(self.final_layer_norm(x))


class Seq2SeqOutput(NamedTuple):
    loss: Optional[torch.Tensor]
    logits: torch.Tensor  # (B, T, V)


class T5ForConditionalGeneration(nn.Module):
    def __init__(self, config: T5Config):
        super().__init__()
        self.config = c = config
        self.shared = nn.Embedding(c.vocab_size, c.d_model)
        self.encoder = Stack(c, c.num_layers, False, self.shared)
        self.decoder = Stack(c, c.num_decoder_layers, True, self.shared)
        if not c.tie_word_embeddings:
            self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.apply(self._init_weights)

    def _init_weights(self, m):
        """The reference's initialisation (Mesh TF): each matrix ~ N(0, 1/fan_in), the query's also
        divided by sqrt(d_kv): that is where the missing 1/sqrt(D) of the attention went."""
        f, c = self.config.initializer_factor, self.config
        if isinstance(m, RMSNorm):
            nn.init.constant_(m.weight, f)
        elif isinstance(m, Attention):
            nn.init.normal_(m.q.weight, std=f * (c.d_model * c.d_kv) ** -0.5)
            for w in (m.k.weight, m.v.weight):
                nn.init.normal_(w, std=f * c.d_model ** -0.5)
            nn.init.normal_(m.o.weight, std=f * (c.num_heads * c.d_kv) ** -0.5)
            if hasattr(m, "relative_attention_bias"):
                nn.init.normal_(m.relative_attention_bias.weight, std=f * c.d_model ** -0.5)
        elif isinstance(m, FeedForward):
            for w in ((m.wi_0.weight, m.wi_1.weight) if m.gated else (m.wi.weight,)):
                nn.init.normal_(w, std=f * c.d_model ** -0.5)
            nn.init.normal_(m.wo.weight, std=f * c.d_ff ** -0.5)
        elif m is self:
            nn.init.normal_(self.shared.weight, std=f)
            if hasattr(self, "lm_head"):
                nn.init.normal_(self.lm_head.weight, std=f * c.d_model ** -0.5)

    def shift_right(self, labels):
        """Decoder inputs: the targets moved one step right behind the start token (-100 -> pad)."""
        start = torch.full_like(labels[:, :1], self.config.decoder_start_token_id)
        shifted = torch.cat([start, labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == -100, self.config.pad_token_id)

    def forward(self, input_ids, attention_mask=None, decoder_input_ids=None, labels=None,
                decoder_attention_mask=None) -> Seq2SeqOutput:
        keep = attention_mask if attention_mask is not None else input_ids != -1
        memory = self.encoder(input_ids, keep)  # (B, S, H)
        if decoder_input_ids is None:
            decoder_input_ids = self.shift_right(labels)
        logits = self.output_logits(self.decoder(decoder_input_ids, decoder_attention_mask, memory, keep))
        loss = None if labels is None else F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten())
        return Seq2SeqOutput(loss, logits)

    def output_logits(self, h):
        """(B, T, H) -> (B, T, V); tied to the shared table, rescaled so logits do not grow with the width."""
        if self.config.tie_word_embeddings:
            return (h * self.config.d_model ** -0.5) @ self.shared.weight.t()
        return self.lm_head(h)

    @torch.no_grad()
    def generate(self, input_ids, attention_mask=None, max_new_tokens=20):
        """Greedy decoding: the most likely next token until every row has written the end token."""
        was = self.training
        self.eval()
        keep = attention_mask if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
        memory = self.encoder(input_ids, keep)
        out = torch.full_like(input_ids[:, :1], self.config.decoder_start_token_id)
        done = torch.zeros(len(out), dtype=torch.bool, device=out.device)
        for _ in range(max_new_tokens):
            nxt = self.output_logits(self.decoder(out, None, memory, keep)[:, -1:]).argmax(-1)
            nxt = nxt.masked_fill(done[:, None], self.config.pad_token_id)
            out = torch.cat([out, nxt], dim=1)
            done |= nxt[:, 0] == self.config.eos_token_id
            if done.all():
                break
        self.train(was)
        return out[:, 1:]

    # ---- HF checkpoints: our parameter names are HF's; the shared table is stored once ---------------
    ALIASES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")

    def save_pretrained(self, directory):
        tensors = {k: v for k, v in self.state_dict().items() if k not in self.ALIASES}
        bert.save_folder(directory, tensors, self.config.to_dict())

    @classmethod
    def from_pretrained(cls, directory):
        config, sd = bert.read_folder(directory)
        model = cls(T5Config.from_dict(config))
        if model.config.tie_word_embeddings:
            sd.pop("lm_head.weight", None)  # (a tied copy some writers keep)
        for alias in cls.ALIASES:
            sd.setdefault(alias, sd.get("shared.weight"))
        return bert.load_exactly(model, sd, directory)


# ----------------------------------------------------------------------------------------------------
# Span corruption (section 3.1.4): the pre-processing that makes T5's pretraining task
# ----------------------------------------------------------------------------------------------------
def _random_segmentation(n_items, n_segments, generator):
    """Lengths of n_segments non-empty segments that add up to n_items, uniformly at random (the
    reference: shuffle n_segments - 1 segment starts among the n_items - 1 gaps)."""
    starts = torch.zeros(n_items - 1, dtype=torch.long)
    starts[:n_segments - 1] = 1
    shuffled = starts[torch.randperm(n_items - 1, generator=generator)]
    starts = torch.cat([torch.zeros(1, dtype=torch.long), shuffled])
    return torch.bincount(torch.cumsum(starts, 0), minlength=n_segments)


def random_spans_noise_mask(length, noise_density=0.15, mean_span=3.0, generator=None):
    """(length,) bool, True for the tokens to drop: round(length * density) of them in
    round(noise / mean_span) spans, noise and kept spans alternating from a kept one, both segmentations
    uniformly random (T5's random_spans_noise_mask)."""
    if length < 2:
        raise ValueError(f"a sequence of {length} token(s) cannot hold a span and the text around it")
    n_noise = min(max(round(length * noise_density), 1), length - 1)
    n_spans = max(round(n_noise / mean_span), 1)
    n_spans = min(n_spans, n_noise, length - n_noise)
    noise = _random_segmentation(n_noise, n_spans, generator)
    kept = _random_segmentation(length - n_noise, n_spans, generator)
    spans = torch.stack([kept, noise], dim=1).flatten()  # kept, noise, kept, noise, ...
    is_noise = torch.repeat_interleave(torch.arange(2 * n_spans) % 2 == 1, spans)
    return is_noise


def span_corruption(ids, vocab_size, eos_id=1, noise_density=0.15, mean_span=3.0, generator=None):
    """(inputs, targets) of one token sequence: each noise span in the inputs becomes one sentinel
    (<extra_id_0> = vocab_size - 1, <extra_id_1> = vocab_size - 2, ...: HF's T5 order); the targets are
    each sentinel followed by the span it hides, then the end token."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    noise = random_spans_noise_mask(len(ids), noise_density, mean_span, generator)

    def corrupt(drop):  # each span of `drop` becomes one sentinel: span k -> vocab_size - 1 - k
        start = drop & ~torch.cat([torch.zeros(1, dtype=torch.bool), drop[:-1]])  # each span's first token
        sentinel = vocab_size - torch.cumsum(start.long(), 0)
        return torch.where(start, sentinel, ids)[~drop | start]
    # subtle: the text always starts with a kept span (kept, noise, kept, ...), so the inputs' k-th
    # sentinel hides noise span k and the targets' k-th sentinel (standing for kept span k) precedes it
    inputs = torch.cat([corrupt(noise), torch.tensor([eos_id])])
    targets = torch.cat([corrupt(~noise), torch.tensor([eos_id])])
    return inputs, targets


# ----------------------------------------------------------------------------------------------------
# Trained by train.py's loop: python train.py --task=mlm --objective=t5
# ----------------------------------------------------------------------------------------------------
N_SENTINELS = 100  # <extra_id_0> ... <extra_id_99> above the tokenizer's vocabulary, as in HF's T5
# (runs.save_model writes them into the saved tokenizer's files: runs.add_sentinels)
# train.py's settings for --objective=t5 that the command leaves out (runs.check_task): no dropout, as
# T5 1.1 pretrains (1 MB of English: 0.5 nat below the floor by step 5,000 without, 0.49 at 8,000 with
# it); small text seen many times, with long spans, is memorised without: --dropout=0.1 (docs/results.md)
DEFAULTS = {"dropout": 0.0}


def new_model(s, tok):
    """A fresh T5ForConditionalGeneration of the settings' size (train.Settings: encoder and decoder
    both num_layers deep) for tokenizer `tok` plus the sentinels; returns (model, the run's config)."""
    c = T5Config(vocab_size=len(tok) + N_SENTINELS, d_model=s.hidden_size, d_kv=s.hidden_size // s.num_heads,
                 d_ff=s.intermediate_size, num_layers=s.num_layers, num_decoder_layers=s.num_layers,
                 num_heads=s.num_heads, dropout_rate=s.dropout, pad_token_id=tok.pad_id,
                 eos_token_id=tok.eos_id, decoder_start_token_id=tok.pad_id)
    # ("scored": its evaluations count the span tokens only, since 2026-12-04; a run of before, whose
    # evaluations counted the format too, is another configuration and is not resumed: runs.load_checkpoint)
    run_config = {"model": c.to_dict(), "mean_span": s.mean_span, "scored": "span tokens"}
    return T5ForConditionalGeneration(c), run_config


def make_batch(batch, tok_info, s, generator):
    """The loop's hook: a packed batch -> span corruption of each row's text (its special tokens left
    out: the end token closes the inputs and the targets), noise density s.mlm_probability, mean span
    s.mean_span; inputs padded with the pad id, targets with -100.

    subtle: the targets carry T5's format besides the text: a sentinel before each span (its id fixed by
    the span's place) and the end token, which a model predicts for free once it knows the layout (at
    mean span 1, half the targets): over all targets, a model without context would sit far below the
    floor. Training predicts them all (generation needs them); train.evaluate scores the span tokens only
    (train.ordinary_targets), each as a choice among the ordinary tokens (where a span ends is random: no
    context tells it), against their unigram loss, on which a model without context sits (tested)."""
    special = torch.as_tensor(tok_info["special_ids"], dtype=torch.long)
    pad, eos, vocab = tok_info["pad_id"], tok_info["eos_id"], tok_info["vocab_size"] + N_SENTINELS
    pairs = []
    for ids in batch["input_ids"]:
        text = ids[~torch.isin(ids, special)]
        pairs.append(span_corruption(text, vocab, eos, s.mlm_probability, s.mean_span, generator)
                     if len(text) >= 2 else (torch.tensor([eos]), torch.tensor([eos])))
    def pad_to(xs, value):
        return torch.nn.utils.rnn.pad_sequence(xs, batch_first=True, padding_value=value)
    return {"input_ids": pad_to([x for x, _ in pairs], pad),
            "attention_mask": pad_to([torch.ones_like(x) for x, _ in pairs], 0),
            "labels": pad_to([y for _, y in pairs], -100)}


if __name__ == "__main__":
    torch.manual_seed(0)
    ids = torch.arange(10, 50)  # one "sentence" of 40 tokens, corrupted anew each step
    model = T5ForConditionalGeneration(T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                                num_decoder_layers=2, num_heads=4, dropout_rate=0.0))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(300):
        x, y = span_corruption(ids, 64, generator=g)
        loss = model(x[None], labels=y[None]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = span_corruption(ids, 64, generator=g)
    print("input  ", x.tolist())
    print("target ", y.tolist())
    print("written", model.generate(x[None])[0].tolist())
# Expected output (after 300 steps it writes the first and last spans and drops the middle one):
# input   [10, 11, ..., 36, 37, 63, 41, 42, 43, 44, 45, 46, 62, 1]   (the elided middle runs 12 to 35)
# target  [63, 38, 39, 40, 62, 47, 48, 49, 1]
# written [63, 38, 39, 47, 48, 49, 1]
