"""
Cross-lingual post-training (XPT): turn an English masked LM into a Korean one.

Implements the method of Lee et al., "Exploring the Data Efficiency of Cross-Lingual Post-Training in
Pretrained Language Models", Applied Sciences 11(5):1974 (2021). The paper's sections, as this file
follows them:

  3.1 Transfer learning as post-training. Modelling a low-resource target language L_T (Korean) is
      treated as domain adaptation of a model pretrained on a high-resource source language L_S
      (English): we simply *continue* unsupervised masked-LM training of the L_S model on L_T text.
      Architecture and objective are inherited; the (expensive) L_S pretraining is skipped entirely.
  3.2 Which parameters to transfer. The transformer encoder layers are mostly language-independent,
      so they are reused. The L_T word vectors are new and randomly initialised "for simplicity"
      (bilingual embeddings would be an alternative). The other language-independent parts (position
      and segment embeddings, the embedding LayerNorm, the MLM head's transform) are reused too.
  3.3 The implicit translation layer (ITL). A layer that maps a sequence of vectors to contextualised
      vectors of equal length: one between the new embeddings and the first encoder layer
      (input-to-encoder, "translating" Korean embeddings into what the English encoder expects) and
      one after the last encoder layer (encoder-to-output). Here an ITL is one (or more) transformer
      encoder layers of the source's size.
  3.4 Two-phase post-training, like gradual unfreezing (Howard & Ruder 2018, arXiv:1801.06146):
      phase 1 freezes everything copied from L_S and learns only the L_T embeddings and the ITLs, so
      the random new parts cannot wreck the reused encoder with large early gradients; phase 2
      unfreezes everything and trains the whole model on L_T.

How it is built here (one idea worth knowing): an ITL is just another encoder layer, so the XPT model is
an ordinary `bert.BertForMaskedLM` with `k + L + k` layers, where the `k` first and `k` last layers are
the new ITLs and the `L` middle ones are copies of the source's layers. That keeps one model class for
everything: the same forward, the same checkpoints (HF `transformers` loads them as a plain BERT), the
same fine-tuning head. What makes it "XPT" is only *which parameters are copied* (`build_xpt`) and
*which are trainable when* (`set_phase`); both are recorded on the model in `model.xpt`.

Baselines from the same code (one switch, `method=`):
  scratch         same architecture (with the ITL layers), everything randomly initialised;
  embeddings-only Artetxe et al. 2020 (arXiv:1910.11856): new embeddings only, no ITLs, body frozen
                  in both phases;
  xpt-no-itl      XPT without the ITLs (two phases);
  xpt-one-phase   XPT with ITLs but no frozen phase (phase 1 trains everything too);
  xpt             the paper's method.

Differs from the paper:
  - ITLs are initialised with BERT's random init (the paper does not pin this down for us).
  - Optional, off by default: embeddings of tokens spelled the same in both vocabularies can be copied
    from the source (`source_tokenizer=`, `target_tokenizer=`); the paper uses random init.

Depends on torch and bert.py only.
"""
import copy
import math

import torch

from bert import (BertForMaskedLM, ElectraForMaskedLM, ElectraForPreTraining, ElectraPair,
                  electra_generator_config)

METHODS = ("scratch", "embeddings-only", "xpt-no-itl", "xpt-one-phase", "xpt")


def build_xpt(source, target_vocab_size, *, method="xpt", itl_layers=1, target_pad_token_id=None,
              reuse_positions=True, reuse_token_types=True, reuse_embedding_norm=True,
              reuse_head_transform=True, source_tokenizer=None, target_tokenizer=None, seed=None,
              generator_size=0.25, disc_weight=50.0):
    """A masked LM for the target vocabulary built from a source `bert.BertForMaskedLM` (section 3.2):
    new word embeddings, k ITL layers at each end (k = itl_layers for the methods that have ITLs), the
    source's L layers in between, copied with the language-independent parts of its embeddings and
    MLM head (the reuse_* switches). An encoder-only source is fine (its fresh MLM head is not copied).
    target_pad_token_id: the target tokenizer's pad id (RoBERTa positions depend on it). source_ and
    target_tokenizer both given: vectors of tokens in both vocabularies are copied too (beyond the
    paper). seed: the new parameters' init (None: the global RNG). An ELECTRA source (beyond the paper):
    see `_electra_pair`. Returns the model, in phase 1, with `model.xpt` = {"method", "reused" (names
    copied from the source), "itl_in", "body", "itl_out" (layer ranges), "copied_embeddings", ...}."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    src_cfg = source.config
    if getattr(src_cfg, "share_layers", False):
        raise ValueError("XPT needs a source without cross-layer sharing (share_layers=False): the "
                         "reused layers and the ITLs must be separate parameters")
    if target_vocab_size < 1:
        raise ValueError(f"target_vocab_size must be positive, got {target_vocab_size}")
    k = itl_layers if method in ("xpt", "xpt-one-phase", "scratch") else 0
    if k < 0:
        raise ValueError(f"itl_layers must be >= 0, got {itl_layers}")
    L = src_cfg.num_hidden_layers
    cfg = copy.deepcopy(src_cfg)
    cfg.vocab_size = target_vocab_size
    cfg.num_hidden_layers = k + L + k  # ITL_in, the source's layers, ITL_out
    if target_pad_token_id is not None:
        cfg.pad_token_id = target_pad_token_id
    electra = isinstance(source, ElectraForPreTraining)
    model, generator = _fresh_models(cfg, electra, generator_size, seed)

    reused, skipped, copied_embeddings = set(), [], 0
    if method != "scratch":
        reused, skipped = reuse_source(model, source, k, positions=reuse_positions,
                                       token_types=reuse_token_types, embedding_norm=reuse_embedding_norm,
                                       head_transform=reuse_head_transform)
        if source_tokenizer is not None and target_tokenizer is not None:
            copied_embeddings = copy_shared_embeddings(source, model, source_tokenizer, target_tokenizer)
    if electra:
        model, reused = _electra_pair(model, generator, reused, disc_weight)
    model.xpt = {"method": method, "reused": reused, "itl_in": range(0, k), "body": range(k, k + L),
                 "itl_out": range(k + L, k + L + k), "copied_embeddings": copied_embeddings,
                 "not_reused_because_fresh": skipped}
    set_phase(model, 1)
    return model


def _fresh_models(cfg, electra, generator_size, seed):
    """The target model, freshly initialised (and for an ELECTRA source its new generator), under `seed`
    in a forked RNG so that building does not disturb the caller's random stream."""
    def build():
        body = (ElectraForPreTraining if electra else BertForMaskedLM)(cfg)
        return body, ElectraForMaskedLM(electra_generator_config(cfg, generator_size)) if electra else None
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def reuse_source(model, source, k, *, positions=True, token_types=True, embedding_norm=True,
                 head_transform=True):
    """Copy the source's language-independent parts into the target model (section 3.2). Returns
    (names of the copied parameters, parts left new because the source's were freshly initialised)."""
    reused, skipped = set(), []
    # subtle: an encoder-only checkpoint (e.g. MiniLM) loads into BertForMaskedLM with a *random* MLM
    # head, listed in `source.fresh_parameters`. Copying that would freeze random weights and call them
    # "reused"; such parts stay new instead (seeded init, trained in phase 1).
    fresh = set(getattr(source, "fresh_parameters", None) or [])

    def copy_module(dst, src, prefix):
        names = [f"{prefix}.{n}" for n, _ in src.named_parameters()]
        if any(n in fresh for n in names):
            skipped.append(prefix)
            return
        dst.load_state_dict(src.state_dict())
        reused.update(names)

    se, te = source.bert.embeddings, model.bert.embeddings
    # 3.2: the encoder layers are (mostly) language-independent -> reuse all of them, in order,
    # between the two ITLs.
    for i in range(source.config.num_hidden_layers):
        copy_module(model.bert.layers[k + i], source.bert.layers[i], f"bert.layers.{k + i}")
    # Word order is not language-specific in its *mechanism*: the position table tells the
    # encoder where a token is, which the reused layers were trained to read.
    if positions:
        copy_module(te.position_embeddings, se.position_embeddings, "bert.embeddings.position_embeddings")
        shift_roberta_positions(te.position_embeddings.weight, se.position_embeddings.weight, model.config,
                                source.config)
    # Segment embeddings mark sentence A/B: a structural signal, not a lexical one.
    if token_types:
        copy_module(te.token_type_embeddings, se.token_type_embeddings,
                    "bert.embeddings.token_type_embeddings")
    # The embedding LayerNorm sets the scale of what enters the encoder; keep what it expects.
    if embedding_norm:
        copy_module(te.layer_norm, se.layer_norm, "bert.embeddings.layer_norm")
    # ALBERT-style factorised embeddings: the E->H projection belongs with the encoder's input.
    if te.projection is not None and se.projection is not None:
        copy_module(te.projection, se.projection, "bert.embeddings.projection")
    # The MLM head's transform (dense + GELU + LayerNorm) maps encoder states to "embedding
    # space"; it is language-independent in the same sense as the layers. The decoder is tied to
    # the NEW word embeddings, and its bias (a per-token log-frequency prior) is new.
    if head_transform and isinstance(source, ElectraForPreTraining):  # "replaced?" reads hidden states only
        copy_module(model.rtd, source.rtd, "rtd")
    elif head_transform:
        copy_module(model.head.dense, source.head.dense, "head.dense")
        copy_module(model.head.layer_norm, source.head.layer_norm, "head.layer_norm")
    return reused, skipped


@torch.no_grad()
def shift_roberta_positions(weight, source_weight, cfg, src_cfg):
    """subtle: RoBERTa's first real position has row pad_token_id + 1. A target tokenizer with another
    pad id moves every position to another row, so the copied table moves with it (in place)."""
    shift = cfg.pad_token_id - src_cfg.pad_token_id
    if not (src_cfg.is_roberta and shift):
        return
    n = source_weight.shape[0] - (src_cfg.pad_token_id + 1) - max(shift, 0)
    weight[cfg.pad_token_id + 1:cfg.pad_token_id + 1 + n] = \
        source_weight[src_cfg.pad_token_id + 1:src_cfg.pad_token_id + 1 + n]


def _electra_pair(discriminator, generator, reused, disc_weight):
    """XPT from an ELECTRA source (beyond the paper): the target discriminator was built exactly like the
    masked LM (its replaced-token head reused like the MLM transform: it reads hidden states, not
    words); the new target-language generator shares its embedding tables, has no source counterpart
    and trains in both phases. Returns (bert.ElectraPair, reused names under "discriminator.")."""
    return ElectraPair(generator, discriminator, disc_weight), {f"discriminator.{n}" for n in reused}


def _token_key(tokenizer, token):
    """A spelling that is comparable across tokenizer kinds: (starts a word?, surface string).

    subtle: WordPiece marks *continuations* with '##'; byte-level BPE marks *word starts* with 'Ġ' (the
    byte-level image of a space). 'Ġhello' (BPE) and 'hello' (WordPiece) are the same word start;
    'llo' (BPE) and '##llo' (WordPiece) are the same continuation.
    """
    if getattr(tokenizer, "kind", None) == "wordpiece":
        if token.startswith("##"):
            return (False, token[2:])
        return (True, token)
    if token.startswith("\u0120"):
        return (True, token[1:])
    return (False, token)


@torch.no_grad()
def copy_shared_embeddings(source, target, source_tokenizer, target_tokenizer):
    """Copy the source vectors of tokens that both vocabularies contain (same spelling, same
    word-start/continuation role; special tokens matched by role). Returns how many were copied."""
    src_index = {}
    for i in range(len(source_tokenizer)):
        src_index.setdefault(_token_key(source_tokenizer, source_tokenizer.id_to_token(i)), i)
    src_w = source.bert.embeddings.word_embeddings.weight
    dst_w = target.bert.embeddings.word_embeddings.weight
    if src_w.shape[1] != dst_w.shape[1]:
        raise ValueError(f"embedding widths differ: source {src_w.shape[1]}, target {dst_w.shape[1]}")
    pairs = {}
    for role in ("pad_id", "unk_id", "cls_id", "sep_id", "mask_id"):
        s, t = getattr(source_tokenizer, role, None), getattr(target_tokenizer, role, None)
        if s is not None and t is not None:
            pairs[t] = s
    special = set(getattr(target_tokenizer, "special_ids", []))
    for j in range(len(target_tokenizer)):
        if j in pairs or j in special:
            continue
        i = src_index.get(_token_key(target_tokenizer, target_tokenizer.id_to_token(j)))
        if i is not None and i < src_w.shape[0]:
            pairs[j] = i
    pairs = {j: i for j, i in pairs.items() if j < dst_w.shape[0] and i < src_w.shape[0]}
    if pairs:
        dst = torch.tensor(list(pairs.keys()))
        src = torch.tensor(list(pairs.values()))
        dst_w[dst] = src_w[src].to(dst_w.dtype)
    return len(pairs)


def _local(name):
    """A parameter's name inside the (target) masked LM or discriminator: 'discriminator.' dropped."""
    return name[len("discriminator."):] if name.startswith("discriminator.") else name


def _layer_indices(name):
    """'bert.layers.3.attention...' -> 3, else None."""
    parts = _local(name).split(".")
    if len(parts) > 2 and parts[0] == "bert" and parts[1] == "layers":
        return int(parts[2])
    return None


def trainable_names(model, phase):
    """The names of the parameters that train in `phase` (1 or 2) for the model's method."""
    info = _info(model)
    names = [n for n, _ in model.named_parameters()]
    method, reused = info["method"], info["reused"]
    if method in ("scratch", "xpt-one-phase"):
        return set(names)  # no frozen phase
    if method == "embeddings-only" or phase == 1:
        # subtle: "new" = everything NOT copied from the source. That includes the new word
        # embeddings (and so the tied decoder), the decoder bias, the ITLs, and any part whose reuse
        # switch was turned off.
        return {n for n in names if n not in reused}
    return set(names)


def phases(method, phase1_steps, phase2_steps):
    """The training plan of `method`: [(phase, steps), ...] in order, each phase one run of the loop
    with its own learning-rate schedule. Every method trains phase1_steps + phase2_steps in all, so the
    baselines get exactly XPT's budget:
      xpt, xpt-no-itl:        phase 1 (frozen body) then phase 2 (everything);
      scratch, xpt-one-phase: one phase-2 run (no frozen phase) of the whole length;
      embeddings-only:        one phase-1 run (body frozen throughout) of the whole length.
    A phase of 0 steps is left out."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if method in ("scratch", "xpt-one-phase"):
        plan = [(2, phase1_steps + phase2_steps)]
    elif method == "embeddings-only":
        plan = [(1, phase1_steps + phase2_steps)]
    else:
        plan = [(1, phase1_steps), (2, phase2_steps)]
    return [(phase, steps) for phase, steps in plan if steps > 0]


def set_phase(model, phase):
    """Make exactly the parameters of `phase` trainable (requires_grad) and freeze the rest.

    subtle: requires_grad=False alone is not a safe freeze with AdamW. PyTorch's AdamW skips a parameter
    whose .grad is None, but a parameter that still holds a gradient tensor (zeros after
    zero_grad(set_to_none=False), or a stale one from an earlier phase) is moved by its momentum and by
    the decoupled weight decay. So a frozen parameter must not be in the optimizer at all: after
    set_phase, build the optimizer from `optimizer_groups(model, ...)`, which holds only the trainable
    parameters (train.py does this at the start of every phase).
    """
    if phase not in (1, 2):
        raise ValueError(f"phase must be 1 or 2, got {phase!r}")
    train = trainable_names(model, phase)
    for n, p in model.named_parameters():
        p.requires_grad_(n in train)
    model.xpt["phase"] = phase
    return model


def no_weight_decay(name, param):
    """Biases and LayerNorm parameters (every 1-d tensor) get no weight decay (RoBERTa/BERT practice):
    decaying a LayerNorm gain or a bias towards 0 has no regularising meaning. The one rule of the
    project: train.py's groups use it too."""
    return param.ndim < 2 or name.endswith(".bias")


def optimizer_groups(model, weight_decay=0.01, reused_lr_scale=1.0):
    """AdamW parameter groups of the *trainable* parameters only.

    - No weight decay on biases and LayerNorm parameters (`no_weight_decay`).
    - `reused_lr_scale` < 1 gives the parameters copied from the source a lower learning rate in phase
      2 (each group carries an "lr_scale" that train.py's schedule multiplies in).
    """
    reused = _info(model)["reused"] if hasattr(model, "xpt") else set()
    groups = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = no_weight_decay(n, p)
        scale = reused_lr_scale if n in reused else 1.0
        key = (no_decay, scale)
        groups.setdefault(key, {"params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay,
                                "lr_scale": scale})
        groups[key]["params"].append(p)
        groups[key]["names"].append(n)
    return list(groups.values())


def _info(model):
    if not hasattr(model, "xpt"):
        raise ValueError("this model was not built by xpt.build_xpt (it has no `.xpt` record)")
    return model.xpt


def _groups(model):
    """Readable parameter groups: (label, [parameter names])."""
    info = _info(model)
    names = [n for n, _ in model.named_parameters()]
    out = []

    def add(label, pred):
        sel = [n for n in names if pred(n)]
        if sel:
            out.append((label, sel))

    def in_layers(rng):
        return lambda n: _layer_indices(n) in rng

    add("word embeddings", lambda n: _local(n).startswith("bert.embeddings.word_embeddings"))
    add("position embeddings", lambda n: _local(n).startswith("bert.embeddings.position_embeddings"))
    add("segment embeddings", lambda n: _local(n).startswith("bert.embeddings.token_type_embeddings"))
    add("embedding LayerNorm", lambda n: _local(n).startswith("bert.embeddings.layer_norm"))
    add("embedding projection", lambda n: _local(n).startswith("bert.embeddings.projection"))
    r = info["itl_in"]
    add(f"ITL in ({len(r)} layer{'s' * (len(r) != 1)})", in_layers(r))
    r = info["body"]
    add(f"encoder layers {r.start}-{r.stop - 1} (source)", in_layers(r))
    r = info["itl_out"]
    add(f"ITL out ({len(r)} layer{'s' * (len(r) != 1)})", in_layers(r))
    add("MLM head transform", lambda n: n.startswith("head.") and not n.endswith("head.bias"))
    add("MLM decoder bias", lambda n: n == "head.bias")
    add("replaced-token head", lambda n: _local(n).startswith("rtd."))
    add("ELECTRA generator", lambda n: n.startswith("generator."))
    seen = {n for _, sel in out for n in sel}
    add("other", lambda n: n not in seen)
    return out


def report(model):
    """A readable table: parameter groups, counts, reused/new, trainable in phase 1 / phase 2."""
    info = _info(model)
    params = dict(model.named_parameters())
    p1, p2 = trainable_names(model, 1), trainable_names(model, 2)

    def status(sel, train):
        k = sum(n in train for n in sel)
        return "train" if k == len(sel) else "frozen" if k == 0 else "mixed"

    rows = [("group", "params", "origin", "phase 1", "phase 2")]
    totals = {"all": 0, "reused": 0, 1: 0, 2: 0}
    for label, sel in _groups(model):
        count = sum(params[n].numel() for n in sel)
        k = sum(n in info["reused"] for n in sel)
        origin = "reused" if k == len(sel) else "new" if k == 0 else "mixed"
        rows.append((label, f"{count:,}", origin, status(sel, p1), status(sel, p2)))
        totals["all"] += count
        totals["reused"] += sum(params[n].numel() for n in sel if n in info["reused"])
        totals[1] += sum(params[n].numel() for n in sel if n in p1)
        totals[2] += sum(params[n].numel() for n in sel if n in p2)
    rows.append(("total", f"{totals['all']:,}", f"{totals['reused'] / max(totals['all'], 1):.0%} reused",
                 f"{totals[1]:,}", f"{totals[2]:,}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    copied = info["copied_embeddings"]
    lines = [f"XPT model, method={info['method']!r}"
             + (f", {copied} embeddings copied from the source" if copied else "")]
    for j, r in enumerate(rows):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells))
        if j == 0 or j == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    notes = ["(the decoder is tied to the word embeddings, so it has no row of its own)"]
    if info.get("not_reused_because_fresh"):
        notes.append(f"(not reused, the source had them freshly initialised: "
                     f"{', '.join(info['not_reused_because_fresh'])})")
    return "\n".join(lines + notes)


if __name__ == "__main__":
    from bert import BertConfig

    torch.manual_seed(0)
    source = BertForMaskedLM(BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=4,
                                        num_attention_heads=4, intermediate_size=128,
                                        max_position_embeddings=128))
    model = build_xpt(source, target_vocab_size=800, method="xpt", itl_layers=1)
    print(report(model))
    ids = torch.randint(5, 800, (2, 9))
    print("logits:", tuple(model(ids).logits.shape), "ln(V) =", round(math.log(800), 3))
    # Expected:
    # XPT model, method='xpt'
    # group                         params      origin  phase 1  phase 2
    # ---------------------------  -------  ----------  -------  -------
    # word embeddings               51,200         new    train    train
    # position embeddings            8,192      reused   frozen    train
    # segment embeddings               128      reused   frozen    train
    # embedding LayerNorm              128      reused   frozen    train
    # ITL in (1 layer)              33,472         new    train    train
    # encoder layers 1-4 (source)  133,888      reused   frozen    train
    # ITL out (1 layer)             33,472         new    train    train
    # MLM head transform             4,288      reused   frozen    train
    # MLM decoder bias                 800         new    train    train
    # ---------------------------  -------  ----------  -------  -------
    # total                        265,568  55% reused  118,944  265,568
    # (the decoder is tied to the word embeddings, so it has no row of its own)
    # logits: (2, 9, 800) ln(V) = 6.685
