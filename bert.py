"""BERT and RoBERTa encoders with their pretraining heads, in one file that needs only PyTorch.

BERT (Devlin et al. 2018, arXiv:1810.04805) is a stack of Transformer encoder blocks (Vaswani et al.
2017, arXiv:1706.03762) trained to fill in masked words ("masked language modelling", MLM) and, in the
original recipe, to tell whether two sentences follow each other ("next sentence prediction", NSP).
RoBERTa (Liu et al. 2019, arXiv:1907.11692) keeps the same network, drops NSP, trains longer on more
data, and shifts its position ids (see `BertEmbeddings`). ALBERT (Lan et al. 2019, arXiv:1909.11942)
adds two parameter-saving switches that live here as config flags: factorized embeddings (a small
embedding size E projected up to the hidden size H) and one Transformer block shared by all layers.

The network, bottom to top:
  ids -> word + position + segment embeddings -> LayerNorm -> dropout       (BertEmbeddings)
      -> N x [self-attention -> add & LayerNorm -> GELU MLP -> add & LayerNorm] (BertLayer, "post-LN")
      -> hidden states (B, T, H)                                             (BertModel)
      -> heads: MLM (dense, GELU, LayerNorm, then the *word embedding matrix* as the output layer),
                NSP / classification (tanh "pooler" on the first token [CLS], then a linear layer),
                ELECTRA's "was this token replaced?" (dense, activation, one score per token).

The file reads in that order: configuration, embeddings, the layer, the model (`BertModel`), the heads;
then the plumbing a reader can skip: the safetensors reader/writer and the map of our parameter names
to HF's checkpoint keys.

Reference implementations: google-research/bert `modeling.py` (TensorFlow, the original) and Hugging
Face `transformers` `modeling_bert.py` / `modeling_roberta.py`, whose checkpoint layout we read and write
(`from_pretrained` / `save_pretrained`, with our own small safetensors reader and writer). The tests
check hidden states and logits against `transformers` to 1e-5 on random weights and 1e-4 on a real
checkpoint.

Differs from the reference (HF `transformers`):
  - Our parameter names are shorter (`layers.0.ffn_in` instead of `encoder.layer.0.intermediate.dense`);
    `HF_LAYER_NAMES` and `hf_name()` translate them, explicitly, and loading fails on any mismatch
    instead of silently skipping names.
  - With labels, the MLM head runs only at labelled positions (~15% of tokens), so `logits` is (N, V)
    for the N labelled positions, not (B, T, V). The loss is the same number; it is much cheaper.
  - A batch where no position is labelled gives an MLM loss of 0 (HF gives NaN).
  - Every forward checks its inputs (length, id range, mask shape) and raises ValueError; reading the
    ids' min/max is a host-device sync on a GPU, the price of a clear error instead of a device assert.
  - No decoder-only features (causal masks, cross-attention, KV cache), no relative position embeddings,
    no head masks, no output of attentions or intermediate hidden states.
  - `BertForSequenceClassification` uses BERT's head (pooler + linear) for RoBERTa too; HF's RoBERTa
    classifier (dense + tanh + out_proj on <s>) is not implemented, so such checkpoints fail to load.
  - ALBERT (Lan et al. 2019) is BERT with two switches: factorized embeddings (E < H, then an E -> H
    projection) and one block shared by all layers. A config with either switch is model_type "albert"
    and saves in HF's `AlbertForMaskedLM` layout (its projection, `embedding_hidden_mapping_in`, exists
    even when E = H); its sentence-order head and ALBERT's layer groups of several layers are not here.
  - ELECTRA (Clark et al. 2020, arXiv:2003.10555): the generator's head uses `hidden_act` (HF: always
    gelu, the same for ELECTRA's configs); HF's ElectraClassificationHead is not implemented, so an
    ELECTRA encoder fine-tunes with BERT's pooler + linear head and cannot be saved back in HF's layout.

Shape legend (used in the comments below):
  B = batch size, T = sequence length, H = hidden size, E = embedding size (= H unless ALBERT-style),
  nh = number of attention heads, hs = head size (H // nh), I = intermediate (MLP) size,
  V = vocabulary size, N = number of labelled (masked) positions in a batch.
"""
from __future__ import annotations

import ctypes
import dataclasses
import json
import math
import os
import struct
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

# Model types that share RoBERTa's network and position-id rule (XLM-R and CamemBERT are RoBERTa
# trained on other data). HF stores their encoder under the prefix "roberta.".
ROBERTA_LIKE = ("roberta", "xlm-roberta", "camembert")


# ----------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class BertConfig:
    vocab_size: int = 30522  # V: rows of the word embedding table (and columns of the MLM output)
    hidden_size: int = 768  # H: width of every token vector between blocks
    num_hidden_layers: int = 12  # number of Transformer blocks
    num_attention_heads: int = 12  # nh: H is split into nh heads of size H // nh
    intermediate_size: int = 3072  # I: width of the MLP inside each block (4 H in BERT)
    hidden_act: str = "gelu"  # MLP nonlinearity: "gelu" (exact, erf), "gelu_new" (tanh approx.), "relu"
    hidden_dropout_prob: float = 0.1  # dropout on embeddings and on each residual branch
    attention_probs_dropout_prob: float = 0.1  # dropout on the attention weights
    max_position_embeddings: int = 512  # rows of the learned position table (RoBERTa: 2 are unusable)
    type_vocab_size: int = 2  # number of segment ids (sentence A / B); RoBERTa checkpoints use 1
    layer_norm_eps: float = 1e-12  # epsilon inside every LayerNorm (BERT 1e-12, RoBERTa 1e-5)
    pad_token_id: int = 0  # id of [PAD] (BERT 0, RoBERTa 1); RoBERTa's position ids depend on it
    initializer_range: float = 0.02  # std of the normal initialisation of weight matrices
    model_type: str = "bert"  # "bert", "albert", "electra" or "roberta" ("xlm-roberta", "camembert" alike)
    embedding_size: Optional[int] = None  # E: ALBERT factorized embeddings when < H; None means E = H
    share_layers: bool = False  # ALBERT cross-layer sharing: one block's weights used by all layers
    num_labels: int = 2  # output classes of BertForSequenceClassification (1 = regression, MSE loss)

    def __post_init__(self):
        if self.model_type == "bert" and (self.embedding_size is not None or self.share_layers):
            self.model_type = "albert"  # (BERT with ALBERT's switches is ALBERT, in HF's layout too)
        self.validate()

    @property
    def is_roberta(self) -> bool:
        return self.model_type in ROBERTA_LIKE

    @property
    def flavour(self) -> str:
        """The checkpoint layout: "bert", "roberta" (RoBERTa-like) or "electra"."""
        return "roberta" if self.is_roberta else self.model_type

    @property
    def max_len(self) -> int:
        """The longest input (specials included) the position table holds: RoBERTa's positions start
        after the pad id, so its first pad_token_id + 1 rows are never a real position."""
        return self.max_position_embeddings - (self.pad_token_id + 1 if self.is_roberta else 0)

    @property
    def emb_size(self) -> int:
        """E, the width of the embedding tables (hidden_size unless ALBERT's factorization is on)."""
        return self.hidden_size if self.embedding_size is None else self.embedding_size

    def validate(self) -> None:
        problems = []
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                problems.append(f"{name} must be a positive integer, got {v!r}")
        if not problems and self.hidden_size % self.num_attention_heads:
            problems.append(f"hidden_size ({self.hidden_size}) must be divisible by "
                            f"num_attention_heads ({self.num_attention_heads})")
        if self.hidden_act not in ACTIVATIONS:
            problems.append(f"hidden_act {self.hidden_act!r} not supported; use one of {sorted(ACTIVATIONS)}")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                problems.append(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if self.model_type not in ("bert", "albert", "electra") and not self.is_roberta:
            problems.append(f"model_type {self.model_type!r} not supported; use 'bert', 'albert', 'electra' "
                            f"or one of {ROBERTA_LIKE}")
        if self.share_layers and self.model_type != "albert":
            problems.append(f"share_layers is ALBERT's: it needs BERT's positions (model_type 'albert'), "
                            f"not {self.model_type!r}")
        if not isinstance(self.pad_token_id, int) or not 0 <= self.pad_token_id < (
                self.vocab_size if isinstance(self.vocab_size, int) else 0):
            problems.append(f"pad_token_id must be an id in [0, vocab_size), got {self.pad_token_id!r}")
        if self.embedding_size is not None and (not isinstance(self.embedding_size, int)
                                                or self.embedding_size < 1):
            problems.append(f"embedding_size must be None or a positive integer, got {self.embedding_size!r}")
        if self.is_roberta and isinstance(self.max_position_embeddings, int) \
                and self.max_position_embeddings <= self.pad_token_id + 1:
            problems.append("RoBERTa needs max_position_embeddings > pad_token_id + 1 "
                            "(positions start there)")
        if self.layer_norm_eps <= 0 or self.initializer_range <= 0:
            problems.append("layer_norm_eps and initializer_range must be positive")
        if problems:
            raise ValueError("invalid BertConfig: " + "; ".join(problems))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if self.model_type == "albert":  # HF's names: E always; one layer group (shared) or one per layer
            d.update(embedding_size=self.emb_size, inner_group_num=1,
                     num_hidden_groups=1 if self.share_layers else self.num_hidden_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BertConfig":
        """Build from an HF-style dict. Keys we do not model (architectures, transformers_version, ...)
        are ignored, but settings that would change the network and that we do not implement raise."""
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"position_embedding_type {d['position_embedding_type']!r} not supported "
                             "(only learned absolute positions)")
        if d.get("is_decoder") or d.get("add_cross_attention"):
            raise ValueError("decoder / cross-attention configs are not supported")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        if kwargs.get("pad_token_id", 0) is None:  # some HF configs write null; BERT's [PAD] is 0
            del kwargs["pad_token_id"]
        if "num_labels" not in kwargs and isinstance(d.get("id2label"), dict):
            kwargs["num_labels"] = len(d["id2label"])  # HF writes the labels instead of their count
        if d.get("model_type") == "albert":
            layers, groups = d.get("num_hidden_layers", 12), d.get("num_hidden_groups", 1)
            if d.get("inner_group_num", 1) != 1 or groups not in (1, layers):
                raise ValueError(f"ALBERT with {groups} layer groups of {d.get('inner_group_num', 1)} layers "
                                 f"is not supported (only one shared layer, or none shared)")
            E = d.get("embedding_size", 128)
            kwargs.update(share_layers=groups == 1 and layers > 1,
                          embedding_size=None if E == d.get("hidden_size", 768) else E)
        return cls(**kwargs)

    def to_json_file(self, path) -> None:
        atomic_write(path, (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode())

    @classmethod
    def from_json_file(cls, path, **overrides) -> "BertConfig":
        """The config in a config.json file (`overrides` replace fields); a file that is not a JSON
        object is a ValueError naming it."""
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a valid config.json ({e})") from None
        if not isinstance(d, dict):
            raise ValueError(f"{path}: not a valid config.json (a JSON object is expected)")
        return cls.from_dict({**d, **overrides})


def _gelu_tanh(x):
    return F.gelu(x, approximate="tanh")


# "gelu" is the exact x * Phi(x) with the Gaussian CDF Phi (Hendrycks & Gimpel, arXiv:1606.08415);
# the original TF code also used erf. GPT-2 popularised the tanh approximation, which HF calls "gelu_new".
ACTIVATIONS = {"gelu": F.gelu, "gelu_new": _gelu_tanh, "gelu_pytorch_tanh": _gelu_tanh, "relu": F.relu}


# ----------------------------------------------------------------------------------------------------
# The encoder


class BertEmbeddings(nn.Module):
    """Token vector = word embedding + position embedding + segment ("token type") embedding, then
    LayerNorm and dropout. Position and segment are learned tables, not sinusoids (BERT paper, sec. 3)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        E = config.emb_size
        # subtle: padding_idx makes the [PAD] row's gradient zero, so [PAD] stays at its initial
        # vector; HF does the same, and _init_weights sets that row to zero.
        self.word_embeddings = nn.Embedding(config.vocab_size, E, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, E, padding_idx=config.pad_token_id if config.is_roberta else None)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, E)
        self.layer_norm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        # ALBERT: a V x E table (E small) then an E -> H projection costs V E + E H parameters instead of V H.
        # (ALBERT has the projection even when E = H)
        albert = config.model_type == "albert"
        self.projection = nn.Linear(E, config.hidden_size) if E != config.hidden_size or albert else None

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        B, T = input_ids.shape
        if not self.config.is_roberta:
            return torch.arange(T, device=input_ids.device).expand(B, T)  # BERT: 0, 1, ..., T-1
        # subtle: RoBERTa (fairseq) numbers real tokens pad+1, pad+2, ... and gives every padding token
        # the position pad_token_id itself. With pad = 1 the first token has position 2, and rows 0 and 1
        # of the table are never used for real tokens, so a 514-row table holds 512 tokens.
        not_pad = (input_ids != self.config.pad_token_id).long()  # (B, T)
        return torch.cumsum(not_pad, dim=1) * not_pad + self.config.pad_token_id  # (B, T)

    def forward(self, input_ids: torch.Tensor, token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # everything is "sentence A"
        x = (self.word_embeddings(input_ids)
             + self.position_embeddings(self.position_ids(input_ids))
             + self.token_type_embeddings(token_type_ids))  # (B, T, E)
        x = self.dropout(self.layer_norm(x))
        if self.projection is not None:
            x = self.projection(x)  # (B, T, E) -> (B, T, H)
        return x


def make_attention_mask(attention_mask: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    """(B, T) with 1 = real token, 0 = padding  ->  (B, 1, 1, T) additive mask for the attention scores:
    0 where a key may be attended to, the most negative finite number of `dtype` where it is padding, so
    that after softmax padding gets weight exactly 0. None stays None (attend everywhere). The two
    singleton axes broadcast over heads and over query positions: every query ignores the same keys."""
    if attention_mask is None:
        return None
    keep = attention_mask.to(torch.bool)[:, None, None, :]  # (B, 1, 1, T)
    zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
    # subtle: finfo.min rather than -inf: a row whose keys are all padding then gets uniform weights
    # instead of NaN (0/0), which would poison the whole batch through the gradients.
    return torch.where(keep, zero, torch.finfo(dtype).min)


def manual_attention(q, k, v, mask, dropout_p: float = 0.0):
    """The readable version of scaled dot-product attention (Vaswani et al., eq. 1):
    softmax(q k^T / sqrt(hs) + mask) v. Tested equal to F.scaled_dot_product_attention, which is fused
    and does not materialise the (T, T) matrix when it can avoid it."""
    hs = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, nh, T, hs) x (B, nh, hs, T) -> (B, nh, T, T)
    if mask is not None:
        scores = scores + mask  # (B, 1, 1, T) broadcasts: padding keys get ~ -inf
    weights = F.softmax(scores, dim=-1)  # each query's weights over the keys sum to 1
    weights = F.dropout(weights, p=dropout_p, training=dropout_p > 0)
    return weights @ v  # (B, nh, T, T) x (B, nh, T, hs) -> (B, nh, T, hs)


class BertLayer(nn.Module):
    """One Transformer encoder block, post-LayerNorm as in BERT (the LayerNorm comes after each residual
    addition; GPT-2 and most later models moved it before, "pre-LN"):

        x = LayerNorm(x + Dropout(Attention(x)))
        x = LayerNorm(x + Dropout(W2 GELU(W1 x)))

    Self-contained: everything it needs comes from the config, so a copy can be made anywhere."""

    def __init__(self, config: BertConfig):
        super().__init__()
        H, I = config.hidden_size, config.intermediate_size
        self.n_head = config.num_attention_heads
        self.attn_dropout_p = config.attention_probs_dropout_prob
        self.act = ACTIVATIONS[config.hidden_act]
        self.attention_impl = "sdpa"  # or "manual": the readable version, for tests and for reading
        # self-attention: three projections of the same input, split into heads, and an output projection
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)
        self.attn_out = nn.Linear(H, H)
        self.attn_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        # position-wise MLP ("feed-forward network")
        self.ffn_in = nn.Linear(H, I)
        self.ffn_out = nn.Linear(I, H)
        self.ffn_norm = nn.LayerNorm(H, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def attention(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor]) -> torch.Tensor:
        B, T, H = x.shape
        nh, hs = self.n_head, H // self.n_head
        # (B, T, H) -> (B, T, nh, hs) -> (B, nh, T, hs): each head attends independently in its slice
        q = self.query(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = self.key(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        if attn_mask is not None and attn_mask.dtype != q.dtype:  # e.g. bf16 autocast
            attn_mask = attn_mask.to(q.dtype).clamp(min=torch.finfo(q.dtype).min)
        p = self.attn_dropout_p if self.training else 0.0
        if self.attention_impl == "manual":
            y = manual_attention(q, k, v, attn_mask, p)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, T, H)  # (B, nh, T, hs) -> (B, T, nh, hs) -> (B, T, H)
        return self.attn_out(y)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.attn_norm(x + self.dropout(self.attention(x, attn_mask)))
        x = self.ffn_norm(x + self.dropout(self.ffn_out(self.act(self.ffn_in(x)))))  # (B, T, I) inside
        return x


class BertPooler(nn.Module):
    """tanh(W h_[CLS] + b): a sentence vector from the first token, used by NSP and classification."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, T, H) -> (B, H)


# ----------------------------------------------------------------------------------------------------
# Shared machinery of all model classes: init, parameter count, from_pretrained / save_pretrained


class _Pretrained(nn.Module):
    config: BertConfig
    hf_architecture = {"bert": "BertModel", "roberta": "RobertaModel", "electra": "ElectraModel",
                       "albert": "AlbertModel"}

    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation (google-research/bert: truncated normal, std 0.02; HF: plain normal):
        weights ~ N(0, initializer_range), biases 0, LayerNorm scale 1 and shift 0, [PAD] row 0."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, MaskedLMHead):
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Number of distinct parameters (a shared ALBERT layer counts once; the tied decoder is free)."""
        return sum(p.numel() for p in self.parameters())

    @classmethod
    def from_pretrained(cls, directory, **overrides):
        """Load `directory/config.json` and `model.safetensors` (or `pytorch_model.bin`). `overrides`
        replace config fields (e.g. num_labels=3, hidden_dropout_prob=0.0)."""
        directory = Path(directory)
        config_path = directory / "config.json"
        if not config_path.exists():
            raise FileNotFoundError(f"{config_path} not found")
        config = BertConfig.from_json_file(config_path, **overrides)
        if (directory / "model.safetensors").exists():
            sd = read_safetensors(directory / "model.safetensors")
        elif (directory / "pytorch_model.bin").exists():
            sd = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
        else:
            raise FileNotFoundError(f"{directory}: neither model.safetensors nor pytorch_model.bin")
        model = cls(config)
        fresh, dropped = load_hf_state_dict(model, sd)
        model.fresh_parameters = fresh
        if fresh or dropped:
            msg = f"{cls.__name__}.from_pretrained({str(directory)!r}):"
            if fresh:
                msg += f" freshly initialised (not in checkpoint, train them): {', '.join(fresh)}."
            if dropped:
                msg += f" unused checkpoint keys of heads this model lacks: {', '.join(dropped)}."
            warnings.warn(msg, stacklevel=2)
        return model

    def save_pretrained(self, directory) -> None:
        """Write config.json (HF field names, plus model_type and architectures) and model.safetensors in
        HF's key layout, so `transformers` loads it."""
        directory = Path(directory)
        config = self.config
        flavour = config.flavour
        prefix = "" if isinstance(self, BertModel) else flavour + "."
        tensors = {}
        for n, p in self.named_parameters():
            k = hf_name(n, config)
            is_encoder = k.startswith(("embeddings.", "embeddings_project.", "encoder.", "pooler."))
            tensors[(prefix if is_encoder else "") + k] = p
        d = config.to_dict()
        if flavour not in self.hf_architecture:
            raise ValueError(f"{type(self).__name__} has no {flavour} checkpoint layout")
        d["architectures"] = [self.hf_architecture[flavour]]
        if flavour == "electra":
            d["embedding_size"] = config.emb_size  # (HF's ElectraConfig always names E)
        atomic_write(directory / "config.json", (json.dumps(d, indent=2, sort_keys=True) + "\n").encode())
        write_safetensors(directory / "model.safetensors", tensors)


class BertModel(_Pretrained):
    """Embeddings + a stack of BertLayer + (optionally) the pooler. forward -> last hidden states."""

    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        if config.share_layers:
            # ALBERT: the same module object N times. nn.ModuleList holds N references to one BertLayer,
            # so `layers[i]` all run the same weights; parameters() / named_parameters() list them once
            # (as layers.0.*), while state_dict() still has layers.0 ... layers.N-1 (all equal tensors).
            shared = BertLayer(config)
            self.layers = nn.ModuleList([shared] * config.num_hidden_layers)
        else:
            self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))
        self.pooler = BertPooler(config) if add_pooling_layer else None
        self.apply(self._init_weights)

    def check_inputs(self, input_ids, attention_mask=None, token_type_ids=None) -> None:
        """Raise a clear ValueError for inputs that would otherwise fail deep inside (an IndexError, or
        on a GPU an asynchronous device-side assert that kills the process)."""
        c = self.config
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 \
                or input_ids.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"input_ids must be an integer tensor of shape (batch, seq_len), got "
                             f"{getattr(input_ids, 'dtype', type(input_ids))} "
                             f"{tuple(getattr(input_ids, 'shape', ()))}")
        B, T = input_ids.shape
        if T > c.max_len:
            raise ValueError(f"sequence length {T} exceeds the model's maximum of {c.max_len} positions")
        for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
            if t is not None and tuple(t.shape) != (B, T):
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {(B, T)} like input_ids")
        if torch.compiler.is_compiling():  # the value checks below read the values (on a GPU: a wait
            return                         # for the device); compiled code is for speed
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= c.vocab_size):
            raise ValueError(f"input_ids must lie in [0, {c.vocab_size}), got values in "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        if token_type_ids is not None and token_type_ids.numel() and (
                int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= c.type_vocab_size):
            raise ValueError(f"token_type_ids must lie in [0, {c.type_vocab_size})")

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        self.check_inputs(input_ids, attention_mask, token_type_ids)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        mask = make_attention_mask(attention_mask, x.dtype)  # (B, 1, 1, T) or None
        for layer in self.layers:
            x = layer(x, mask)
        return x  # (B, T, H)


# ----------------------------------------------------------------------------------------------------
# Heads


class MaskedLMOutput(NamedTuple):
    loss: Optional[torch.Tensor]
    logits: torch.Tensor  # (B, T, V) without labels; (N, V) at the labelled positions with labels


class PreTrainingOutput(NamedTuple):
    loss: Optional[torch.Tensor]
    logits: torch.Tensor  # MLM logits, as in MaskedLMOutput
    nsp_logits: torch.Tensor  # (B, 2): index 0 = "B follows A", 1 = "B is random" (BERT's convention)


class ClassifierOutput(NamedTuple):
    loss: Optional[torch.Tensor]
    logits: torch.Tensor  # (B, num_labels)


class MaskedLMHead(nn.Module):
    """h -> LayerNorm(GELU(W h + b)) -> E^T (.) + bias: a per-token transform, then scores against every
    word's embedding. Reusing the input embedding matrix E as the output layer ("weight tying", Press &
    Wolf 2016, arXiv:1608.05859) saves V x H parameters; only the bias (V,) is the head's own."""

    def __init__(self, config: BertConfig):
        super().__init__()
        E = config.emb_size  # ALBERT: the transform maps H down to E so it can meet the (V, E) table
        self.dense = nn.Linear(config.hidden_size, E)
        self.act = ACTIVATIONS[config.hidden_act]
        self.layer_norm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        # subtle: the tie is done by passing the embedding Parameter at call time instead of sharing it
        # as an attribute, so it survives load_state_dict, copy_, deepcopy and re-assignment.
        h = self.layer_norm(self.act(self.dense(hidden)))  # (..., H) -> (..., E)
        return F.linear(h, word_embeddings, self.bias)  # (..., E) x (V, E)^T -> (..., V)


def _mlm_logits_and_loss(head, hidden, word_embeddings, labels):
    """Without labels: logits at every position, (B, T, V). With labels (B, T), -100 = not masked:
    logits only at the N labelled positions, in row-major order, (N, V), and the mean cross-entropy.
    The transform and projection act on each position separately, so skipping unlabelled positions gives
    the same loss; it skips ~85% of the biggest matrix product in the model (tested equal)."""
    if labels is None:
        return None, head(hidden, word_embeddings)  # (B, T, V)
    if labels.shape != hidden.shape[:2]:
        raise ValueError(f"labels has shape {tuple(labels.shape)}, expected {tuple(hidden.shape[:2])}")
    selected = labels != -100  # (B, T) bool
    logits = head(hidden[selected], word_embeddings)  # (N, H) -> (N, V)
    target = labels[selected]  # (N,)
    # sum / max(N, 1): a batch with nothing masked gives 0 instead of NaN
    loss = F.cross_entropy(logits.float(), target, reduction="sum") / selected.sum().clamp(min=1)
    return loss, logits


class BertForMaskedLM(_Pretrained):
    hf_architecture = {"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM",
                       "albert": "AlbertForMaskedLM"}

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.head = MaskedLMHead(config)
        self.apply(self._init_weights)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> MaskedLMOutput:
        hidden = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        words = self.bert.embeddings.word_embeddings.weight  # (V, E): the tied decoder
        loss, logits = _mlm_logits_and_loss(self.head, hidden, words, labels)
        return MaskedLMOutput(loss, logits)


class BertForPreTraining(_Pretrained):
    """BERT's original objective: MLM + next sentence prediction (is segment B the real continuation of
    segment A?) from the pooled [CLS] vector. RoBERTa showed NSP can be dropped (arXiv:1907.11692, 4.2)."""
    hf_architecture = {"bert": "BertForPreTraining", "roberta": "BertForPreTraining"}

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=True)
        self.head = MaskedLMHead(config)
        self.nsp = nn.Linear(config.hidden_size, 2)
        self.apply(self._init_weights)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None,
                next_sentence_label=None) -> PreTrainingOutput:
        hidden = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        words = self.bert.embeddings.word_embeddings.weight  # (V, E): the tied decoder
        mlm_loss, logits = _mlm_logits_and_loss(self.head, hidden, words, labels)
        nsp_logits = self.nsp(self.bert.pooler(hidden))  # (B, 2)
        losses = [mlm_loss] if mlm_loss is not None else []
        if next_sentence_label is not None:
            losses.append(F.cross_entropy(nsp_logits.float(), next_sentence_label.view(-1)))
        return PreTrainingOutput(sum(losses) if losses else None, logits, nsp_logits)


class BertForSequenceClassification(_Pretrained):
    """Pooled [CLS] -> dropout -> linear: BERT's fine-tuning head for sentence (pair) classification."""
    hf_architecture = {"bert": "BertForSequenceClassification", "roberta": "BertForSequenceClassification"}

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=True)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.apply(self._init_weights)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> ClassifierOutput:
        hidden = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        logits = self.classifier(self.dropout(self.bert.pooler(hidden)))  # (B, num_labels)
        loss = None
        if labels is not None:
            if self.config.num_labels == 1:  # regression (e.g. STS-B similarity scores)
                loss = F.mse_loss(logits.float().view(-1), labels.float().view(-1))
            else:
                loss = F.cross_entropy(logits.float(), labels.view(-1))
        return ClassifierOutput(loss, logits)


class ElectraOutput(NamedTuple):
    loss: Optional[torch.Tensor]
    logits: torch.Tensor  # (B, T): > 0 means "this token was replaced"


class ReplacedTokenHead(nn.Module):
    """ELECTRA's discriminator head: h -> act(W h + b) -> one score per token (Clark et al. 2020,
    arXiv:2003.10555, section 2: a sigmoid output layer on each token's final hidden state)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACTIVATIONS[config.hidden_act]
        self.prediction = nn.Linear(config.hidden_size, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.prediction(self.act(self.dense(hidden))).squeeze(-1)  # (B, T, H) -> (B, T)


class ElectraForPreTraining(_Pretrained):
    """ELECTRA's discriminator, the model ELECTRA keeps: the encoder (at `.bert`, like every model here)
    and for every token the score "was it replaced?". With labels (B, T), 1 = replaced, the loss is the
    mean binary cross-entropy over the real (unpadded) tokens, as in HF's ElectraForPreTraining."""
    hf_architecture = {"electra": "ElectraForPreTraining"}

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.rtd = ReplacedTokenHead(config)
        self.apply(self._init_weights)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> ElectraOutput:
        hidden = self.bert(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        logits = self.rtd(hidden)  # (B, T)
        loss = None
        if labels is not None:
            real = attention_mask.bool() if attention_mask is not None \
                else torch.ones_like(labels, dtype=torch.bool)
            loss = F.binary_cross_entropy_with_logits(logits[real].float(), labels[real].float())
        return ElectraOutput(loss, logits)


class ElectraForMaskedLM(BertForMaskedLM):
    """ELECTRA's generator: a masked LM (usually narrower than the discriminator) whose samples replace
    the masked tokens. The network is BERT's MLM; only the checkpoint layout differs."""
    hf_architecture = {"electra": "ElectraForMaskedLM"}


def electra_generator_config(disc: BertConfig, fraction: float) -> BertConfig:
    """The config of ELECTRA's generator for a discriminator config: `fraction` as wide in whole heads
    of the discriminator's head size (the paper's 1/4 to 1/2, section 3.2), the MLP scaled alike, and
    the discriminator's embedding width E, so that the two can share their tables (the generator
    projects E to its own width)."""
    heads = max(1, round(disc.num_attention_heads * fraction))
    width = heads * (disc.hidden_size // disc.num_attention_heads)
    return dataclasses.replace(disc, hidden_size=width, num_attention_heads=heads,
                               embedding_size=disc.emb_size,
                               intermediate_size=max(1, round(disc.intermediate_size * width
                                                              / disc.hidden_size)))


def electra_eval_counts(out, attention_mask, counts):
    """ELECTRA's discriminator on the real tokens of one evaluated batch: add its summed loss, its right
    answers on replaced and on original tokens, and its raw scores (for the AUC) to `counts`."""
    real = attention_mask.bool()
    d_logits, replaced = out.disc_logits[real].float(), out.replaced[real]
    right = (d_logits > 0) == replaced
    counts["loss"] += F.binary_cross_entropy_with_logits(d_logits, replaced.float(), reduction="sum").item()
    counts["tokens"] += real.sum().item()
    counts["replaced"] += replaced.sum().item()
    counts["replaced_right"] += (right & replaced).sum().item()
    counts["original_right"] += (right & ~replaced).sum().item()
    counts.setdefault("scores", []).append(d_logits.cpu())
    counts.setdefault("truth", []).append(replaced.cpu())


def binary_auc(scores, truth):
    """Area under the ROC curve: the chance that a random replaced token scores above a random original
    one (ties count half), by the Mann-Whitney rank sum; 0.5 = no better than a coin, None if a class
    is missing."""
    y = truth.bool()
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        return None
    _, inverse, counts = torch.unique(scores.double(), return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    mean_rank = ends - (counts.double() - 1) / 2  # 1-based ranks, tied scores share their mean rank
    rank_sum = mean_rank[inverse][y].sum().item()
    return (rank_sum - n1 * (n1 + 1) / 2) / (n1 * n0)


def electra_eval_metrics(counts):
    """The discriminator's mean loss; its recall of replaced tokens (disc_acc_replaced), its accuracy
    on original ones, the precision of its "replaced" calls, its AUC; the share of replaced tokens."""
    original = counts["tokens"] - counts["replaced"]
    called = counts["replaced_right"] + original - counts["original_right"]  # said "replaced"
    scores, truth = (torch.cat(counts.get(k) or [torch.zeros(0)]) for k in ("scores", "truth"))
    return {"disc_loss": counts["loss"] / counts["tokens"],
            "disc_acc_replaced": counts["replaced_right"] / max(counts["replaced"], 1),
            "disc_acc_original": counts["original_right"] / max(original, 1),
            "disc_precision": counts["replaced_right"] / called if called else None,  # (None: never said it)
            "disc_auc": binary_auc(scores, truth),
            "replaced_share": counts["replaced"] / counts["tokens"]}


class ElectraPairOutput(NamedTuple):
    loss: Optional[torch.Tensor]  # generator MLM loss + disc_weight x discriminator loss
    logits: torch.Tensor  # the generator's MLM logits, as in MaskedLMOutput
    disc_logits: torch.Tensor  # (B, T) the discriminator's "replaced?" scores
    replaced: torch.Tensor  # (B, T) bool: which tokens the discriminator saw replaced
    gen_loss: Optional[torch.Tensor]
    disc_loss: Optional[torch.Tensor]


class ElectraPair(nn.Module):
    """ELECTRA pretraining as one module with one loss (Clark et al. 2020, arXiv:2003.10555, section 2),
    so that a training loop written for a masked LM runs it unchanged. Given masked inputs and their
    labels (-100 = not masked):
      1. the generator (a small masked LM) predicts the masked tokens: its MLM loss;
      2. each masked position is filled with a sample from the generator's distribution (no gradient
         flows through the sampling); a sample that equals the original counts as "original";
      3. the discriminator predicts, for every real token of the filled-in sequence, whether it was
         replaced: its binary cross-entropy, weighted by disc_weight (50 in the paper).
    The two share their token, position and segment embeddings (the paper's section 3.2; the tables'
    width E must then be the same, and the narrower generator projects E to its own hidden size)."""

    def __init__(self, generator: "ElectraForMaskedLM", discriminator: ElectraForPreTraining,
                 disc_weight=50.0):
        super().__init__()
        ge, de = generator.bert.embeddings, discriminator.bert.embeddings
        if generator.config.emb_size != discriminator.config.emb_size:
            raise ValueError(f"generator and discriminator must share the embedding width E, got "
                             f"{generator.config.emb_size} and {discriminator.config.emb_size}")
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            setattr(ge, name, getattr(de, name))  # one module, two users
        # (the discriminator first: the shared tables are then named after it, discriminator.bert.*)
        self.discriminator, self.generator, self.disc_weight = discriminator, generator, disc_weight
        self.config = discriminator.config

    def save_pretrained(self, directory) -> None:
        """The discriminator (the model ELECTRA keeps) in `directory`, the generator in
        directory/generator."""
        self.discriminator.save_pretrained(directory)
        self.generator.save_pretrained(Path(directory) / "generator")

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None) -> ElectraPairOutput:
        if labels is None:
            raise ValueError("ElectraPair needs labels: the masked positions and their original tokens")
        gen = self.generator(input_ids, attention_mask, token_type_ids, labels=labels)  # logits (N, V)
        masked = labels != -100
        with torch.no_grad():
            sample = torch.multinomial(F.softmax(gen.logits.float(), -1), 1).squeeze(-1)  # (N,)
        corrupted = input_ids.clone()
        corrupted[masked] = sample
        original = torch.where(masked, labels, input_ids)
        replaced = corrupted != original
        disc = self.discriminator(corrupted, attention_mask, token_type_ids, labels=replaced.long())
        return ElectraPairOutput(gen.loss + self.disc_weight * disc.loss, gen.logits, disc.logits, replaced,
                                 gen.loss, disc.loss)


# ----------------------------------------------------------------------------------------------------
# Fresh models from train.py's settings (s: a train.Settings; tok: a tokenizer.py tokenizer)
# ----------------------------------------------------------------------------------------------------
def fresh_config(s, tok):
    """A BertConfig for a model trained from scratch: RoBERTa for byte-level BPE (no segments, positions
    after the pad id), BERT for WordPiece; ALBERT (BERT's positions) when either of its switches is on."""
    albert = bool(s.embedding_size or s.share_layers)
    roberta = tok.kind == "bpe" and not albert
    return BertConfig(
        vocab_size=len(tok), hidden_size=s.hidden_size, num_hidden_layers=s.num_layers,
        num_attention_heads=s.num_heads, intermediate_size=s.intermediate_size,
        hidden_dropout_prob=s.dropout, attention_probs_dropout_prob=s.dropout,
        max_position_embeddings=s.max_len + (tok.pad_id + 1 if roberta else 0),
        type_vocab_size=1 if roberta and s.packing == "full" else 2, pad_token_id=tok.pad_id,
        model_type="roberta" if roberta else "albert" if albert else "bert",
        layer_norm_eps=1e-5 if roberta else 1e-12, hidden_act="gelu_new" if albert else "gelu",
        embedding_size=s.embedding_size or None, share_layers=s.share_layers)


def new_electra(s, tok):
    """--objective=electra: (ElectraPair, its run config): a discriminator of the settings' size
    and a generator electra_generator_config of it (generator_size as wide), one loss. ELECTRA
    numbers positions like BERT, whatever the tokenizer's pad id."""
    disc = BertConfig(vocab_size=len(tok), hidden_size=s.hidden_size, num_hidden_layers=s.num_layers,
                           num_attention_heads=s.num_heads, intermediate_size=s.intermediate_size,
                           hidden_dropout_prob=s.dropout, attention_probs_dropout_prob=s.dropout,
                           max_position_embeddings=s.max_len, type_vocab_size=1, pad_token_id=tok.pad_id,
                           model_type="electra")
    gen = electra_generator_config(disc, s.generator_size)
    model = ElectraPair(ElectraForMaskedLM(gen), ElectraForPreTraining(disc), s.disc_weight)
    return model, {"model": disc.to_dict(), "generator": gen.to_dict(), "disc_weight": s.disc_weight}


def new_model(s, tok):
    """--objective=mlm: a fresh BertForMaskedLM (BertForPreTraining with NSP/SOP pairs) and its run config."""
    cfg = fresh_config(s, tok)
    model = (BertForPreTraining if s.packing in ("nsp", "sop") else BertForMaskedLM)(cfg)
    return model, {"model": cfg.to_dict()}


# ----------------------------------------------------------------------------------------------------
# Checkpoint files: safetensors, read and written by hand
#
# Format (https://github.com/huggingface/safetensors): 8 bytes little-endian u64 = n, then n bytes of
# JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
# then the raw little-endian tensor bytes; offsets count from the first byte after the header.

_ST_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
              "U8": torch.uint8, "BOOL": torch.bool}
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


def read_safetensors(path) -> dict[str, torch.Tensor]:
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: too short to be a safetensors file")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise ValueError(f"{path}: header length {n} runs past the end of the file ({len(data)} bytes)")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as e:
        raise ValueError(f"{path}: header is not valid JSON ({e})") from None
    body = memoryview(data)[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info.get("dtype") not in _ST_DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        dtype, shape = _ST_DTYPES[info["dtype"]], list(info["shape"])
        begin, end = info["data_offsets"]
        nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if end - begin != nbytes or not 0 <= begin <= end <= len(body):
            raise ValueError(f"{path}: tensor {name!r} offsets {begin}..{end} do not fit its shape "
                             f"{shape} {info['dtype']} or the file")
        if nbytes == 0:
            out[name] = torch.empty(shape, dtype=dtype)
            continue
        # Copy the bytes into fresh (aligned, writable) memory, then reinterpret them as `dtype`.
        raw = torch.frombuffer(bytearray(body[begin:end]), dtype=torch.uint8)
        out[name] = raw.view(dtype).reshape(shape)
    return out


def write_safetensors(path, tensors: dict[str, torch.Tensor], metadata: Optional[dict] = None) -> None:
    """Write `tensors` as one safetensors file, atomically (temp file + os.replace), so a crash while
    saving never leaves a half-written checkpoint under the final name."""
    header, chunks, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in _ST_NAMES:
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} cannot be stored in safetensors")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + nbytes]}
        # ctypes.string_at copies `nbytes` bytes from the tensor's memory (little-endian hosts only)
        chunks.append(ctypes.string_at(t.data_ptr(), nbytes) if nbytes else b"")
        offset += nbytes
    header["__metadata__"] = {"format": "pt", **(metadata or {})}  # HF refuses files without "format"
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # pad so the tensor data starts 8-byte aligned (allowed by the format)
    atomic_write(path, struct.pack("<Q", len(h)) + h + b"".join(chunks))


_UMASK = os.umask(0o022)  # read the process's umask (the only way is to set it) and put it back
os.umask(_UMASK)


def save_folder(directory, tensors: dict, config: dict) -> None:
    """An HF model folder: config.json and model.safetensors (t5.py and xlnet.py, whose parameter names
    are HF's already, save through this)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    write_safetensors(directory / "model.safetensors", tensors, metadata={"format": "pt"})
    atomic_write(directory / "config.json", json.dumps(config, indent=2).encode())


def read_folder(directory) -> tuple[dict, dict]:
    """(config.json as a dict, the model.safetensors tensors) of an HF model folder."""
    directory = Path(directory)
    config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    return config, read_safetensors(directory / "model.safetensors")


def load_exactly(model: nn.Module, sd: dict, directory) -> nn.Module:
    """Load a state dict named like the model's own; a missing or unexpected key is a CheckpointError
    that names them all."""
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{directory}: missing keys {sorted(missing)}, "
                              f"unexpected keys {sorted(unexpected)}")
    return model


def atomic_write(path, data) -> None:
    """Write `data` (bytes, or a function that writes to a binary file) to a temp file in the same
    folder, flush it to disk, then rename it over `path`: a reader, or a rerun after a crash mid-write,
    sees the old complete file or the new complete file, never half of one. The project's one writer
    of files that must not be torn (weights, configs, checkpoints, caches, results)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes it private (0600); give it a normal file's mode
        with os.fdopen(fd, "wb") as f:
            data(f) if callable(data) else f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them "the" file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------------------------------
# Name map between our parameters and HF's checkpoint keys
#
# Encoder keys are written without a prefix here ("embeddings.*", "encoder.layer.*", "pooler.*"); in a
# checkpoint of a model with a head HF puts them under "bert." / "roberta.", and heads sit at top level.

HF_LAYER_NAMES = {  # ours (inside layers.<i>.)  ->  HF (inside encoder.layer.<i>.)
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "attn_norm": "attention.output.LayerNorm",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
    "ffn_norm": "output.LayerNorm",
}
ALBERT_LAYER_NAMES = {  # ours (inside layers.<i>.)  ->  HF ALBERT (inside albert_layers.0. of group <i>)
    "query": "attention.query", "key": "attention.key", "value": "attention.value",
    "attn_out": "attention.dense", "attn_norm": "attention.LayerNorm", "ffn_in": "ffn",
    "ffn_out": "ffn_output", "ffn_norm": "full_layer_layer_norm",
}
HF_EMBEDDING_NAMES = {"word_embeddings": "word_embeddings", "position_embeddings": "position_embeddings",
                      "token_type_embeddings": "token_type_embeddings", "layer_norm": "LayerNorm",
                      "projection": "projection"}
HF_HEAD_NAMES = {  # ours -> HF, per flavour (ELECTRA: the generator's MLM head, the discriminator's)
    "bert": {"head.dense": "cls.predictions.transform.dense",
             "head.layer_norm": "cls.predictions.transform.LayerNorm",
             "head.bias": "cls.predictions.bias", "nsp": "cls.seq_relationship", "classifier": "classifier"},
    "roberta": {"head.dense": "lm_head.dense", "head.layer_norm": "lm_head.layer_norm",
                "head.bias": "lm_head.bias", "nsp": "cls.seq_relationship", "classifier": "classifier"},
    "albert": {"head.dense": "predictions.dense", "head.layer_norm": "predictions.LayerNorm",
               "head.bias": "predictions.bias", "classifier": "classifier"},
    "electra": {"head.dense": "generator_predictions.dense",
                "head.layer_norm": "generator_predictions.LayerNorm", "head.bias": "generator_lm_head.bias",
                "rtd.dense": "discriminator_predictions.dense",
                "rtd.prediction": "discriminator_predictions.dense_prediction", "classifier": "classifier"},
}
# Keys that are copies of something else (the tied decoder) or not parameters at all (index buffers).
_TIED_DECODER = {"cls.predictions.decoder.": "cls.predictions.", "lm_head.decoder.": "lm_head.",
                 "generator_lm_head.": "generator_lm_head.", "predictions.decoder.": "predictions."}
_BUFFER_SUFFIXES = ("embeddings.position_ids", "embeddings.token_type_ids")
# Groups of keys that may be absent from a checkpoint as a whole (then freshly initialised) or present
# while our model lacks them (then dropped, with a warning): the heads and the pooler.
_OPTIONAL_GROUPS = ("pooler.", "cls.predictions.", "lm_head.", "cls.seq_relationship.", "classifier.",
                    "generator_predictions.", "generator_lm_head.", "discriminator_predictions.",
                    "predictions.")


def hf_name(ours: str, config: BertConfig) -> str:
    """Our parameter name (as in a model with an encoder at `.bert`, or in `BertModel` itself) -> the
    HF key with the encoder prefix removed. E.g. 'bert.layers.3.ffn_in.weight' -> 'encoder.layer.3.
    intermediate.dense.weight'; 'head.bias' -> 'cls.predictions.bias' (BERT) or 'lm_head.bias'."""
    name = ours[len("bert."):] if ours.startswith("bert.") else ours
    parts = name.split(".")
    albert = config.flavour == "albert"
    if parts[0] == "embeddings":
        if parts[1] == "projection" and config.flavour == "electra":  # ELECTRA keeps it beside embeddings
            return ".".join(["embeddings_project", *parts[2:]])
        if parts[1] == "projection" and albert:  # ALBERT puts it at the encoder's input
            return ".".join(["encoder.embedding_hidden_mapping_in", *parts[2:]])
        return ".".join(["embeddings", HF_EMBEDDING_NAMES[parts[1]], *parts[2:]])
    if parts[0] == "layers" and albert:  # one group per distinct layer (a shared one: layers.0 only)
        return ".".join(["encoder.albert_layer_groups", parts[1], "albert_layers.0",
                         ALBERT_LAYER_NAMES[parts[2]], *parts[3:]])
    if parts[0] == "layers":
        return ".".join(["encoder.layer", parts[1], HF_LAYER_NAMES[parts[2]], *parts[3:]])
    if parts[0] == "pooler":
        return "pooler." + parts[-1] if albert else name  # (ALBERT's pooler is one Linear, "pooler")
    heads = HF_HEAD_NAMES[config.flavour]
    for our_prefix, hf_prefix in heads.items():
        if name == our_prefix or name.startswith(our_prefix + "."):
            return hf_prefix + name[len(our_prefix):]
    raise KeyError(f"no HF name for parameter {ours!r}")


class CheckpointError(ValueError):
    """A checkpoint does not fit the model: the message names every missing, unexpected and misshapen key."""


def _normalise_checkpoint_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip the encoder prefix, rename old TF-era LayerNorm names, drop index buffers."""
    out = {}
    for k, v in sd.items():
        if k.endswith(_BUFFER_SUFFIXES):
            continue  # position_ids / token_type_ids: constant index buffers, not weights
        for prefix in ("bert.", "roberta.", "electra.", "albert."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        # subtle: checkpoints converted from TF (and old HF versions) call LayerNorm's scale and shift
        # gamma and beta.
        if k.endswith("LayerNorm.gamma") or k.endswith("layer_norm.gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith("LayerNorm.beta") or k.endswith("layer_norm.beta"):
            k = k[: -len("beta")] + "bias"
        if k in out:
            raise CheckpointError(f"checkpoint has key {k!r} twice (with and without prefix, "
                                  f"or gamma and weight)")
        out[k] = v
    return out


def load_hf_state_dict(model: nn.Module, sd: dict[str, torch.Tensor]) -> tuple[list, list]:
    """Copy an HF-layout state dict into `model`. Returns (fresh, dropped): our parameter names absent
    from the checkpoint (heads / pooler, left freshly initialised) and checkpoint keys of heads our model
    does not have. Any other mismatch raises CheckpointError naming all problems at once."""
    config = model.config
    sd = _normalise_checkpoint_keys(sd)
    # The decoder of the MLM head is the word embedding matrix (tied); its own bias is the head's bias.
    for dec_prefix, head_prefix in _TIED_DECODER.items():
        w, b = sd.pop(dec_prefix + "weight", None), sd.pop(dec_prefix + "bias", None)
        emb = sd.get("embeddings.word_embeddings.weight")
        if w is not None and emb is not None and (w.shape != emb.shape or not torch.equal(w, emb)):
            raise CheckpointError(f"{dec_prefix}weight differs from the word embeddings; this model "
                                  "requires them tied (as BERT and RoBERTa are)")
        if b is not None:
            sd.setdefault(head_prefix + "bias", b)

    ours = dict(model.named_parameters())  # deduplicated: a shared ALBERT layer appears once
    expected = {hf_name(n, config): n for n in ours}
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]

    def group(key):
        return next((g for g in _OPTIONAL_GROUPS if key.startswith(g)), None)

    our_groups = {group(k) for k in expected}
    # a head present in the checkpoint but not in our model (e.g. MLM weights loaded into BertModel)
    dropped = [k for k in unexpected if group(k) is not None and group(k) not in our_groups]
    unexpected = [k for k in unexpected if k not in dropped]
    # a head of ours entirely absent from the checkpoint (e.g. an encoder-only checkpoint into MLM)
    fresh_groups = {g for g in our_groups
                    if g is not None and all(k in missing for k in expected if group(k) == g)}
    fresh = [expected[k] for k in missing if group(k) in fresh_groups]
    missing = [k for k in missing if group(k) not in fresh_groups]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(ours[expected[k]].shape)}"
              for k in expected if k in sd and sd[k].shape != ours[expected[k]].shape]
    if missing or unexpected or shapes:
        lines = [f"checkpoint does not match {type(model).__name__} ({config.model_type}):"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {'; '.join(shapes)}")
        raise CheckpointError("\n".join(lines))
    with torch.no_grad():
        for k, n in expected.items():
            if k in sd:
                ours[n].copy_(sd[k])
    return fresh, dropped


if __name__ == "__main__":
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=99, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                     intermediate_size=37, max_position_embeddings=16)
    model = BertForMaskedLM(cfg).eval()
    print(f"parameters: {model.num_parameters()}")
    ids = torch.randint(1, cfg.vocab_size, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])  # second sequence: two padding tokens
    ids[1, 5:] = cfg.pad_token_id
    hidden = model.bert(ids, attention_mask=mask)
    print(f"hidden states: {tuple(hidden.shape)}")
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 3] = ids[0, 2], ids[1, 3]
    out = model(ids, attention_mask=mask, labels=labels)
    print(f"MLM logits at the 2 labelled positions: {tuple(out.logits.shape)}, loss {out.loss.item():.3f} "
          f"(ln V = {math.log(cfg.vocab_size):.3f})")
    # Expected output:
    # parameters: 22205
    # hidden states: (2, 7, 36)
    # MLM logits at the 2 labelled positions: (2, 99), loss 4.499 (ln V = 4.595)
    # (an untrained model is close to a uniform guess over the vocabulary, whose loss is ln V)
