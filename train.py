"""
Masked-LM pretraining and cross-lingual post-training (XPT): data, masking, the training loop.

    python train.py --task=mlm --corpus=FILE          # pretrain a masked LM on any text file
    python train.py --task=xpt --source=DIR --corpus=FILE   # post-train a source model on a new language
    python train.py --task=mlm --help                 # every setting with its default
    python train.py                                   # with no --task: the demo (demo.py)

What is here, in reading order:
  1. Settings: one block (`Settings`), each with a comment, overridable as --key=value.
  2. Data: pack token ids into sequences: RoBERTa's FULL-SENTENCES (Liu et al. 2019, arXiv:1907.11692,
     section 4.2) or BERT's sentence pairs (Devlin et al. 2018, arXiv:1810.04805, section 3.1); the
     batch of a step is a pure function of the step.
  3. Masking: `mask_tokens`, BERT's 80/10/10 rule, drawn anew every time a sequence is used (RoBERTa's
     dynamic masking), optionally whole-word or SpanBERT's spans; `make_inputs`: the objective as one
     function (XLNet's factorization orders and T5's corrupted spans come from their model's file).
  4. The loop: `train_step` is one optimizer step (forward, loss weighted for gradient accumulation,
     backward, clipping, AdamW); `train_loop` runs it with linear warm-up/decay and evaluations.
  5. Evaluation: `evaluate` at [MASK] positions (XLNet, T5: their own targets), next to the unigram floor.
  6. Tasks: `run_mlm` pretrains; `run_xpt` trains the phases of xpt.py with the same loop.
Plumbing (start or exact resume, atomic checkpoints, interrupts, the lock, the log, DDP, argument
parsing and checks, text in and caches): see runs.py, which changes nothing a model learns.

Differs from the references (RoBERTa/BERT training code):
  - The data position is a pure function of the step (a fixed permutation per epoch), and so is each
    step's mask (its generator is seeded from (seed, step)); resuming therefore needs no data-loader
    state, and a resumed CPU run is bit-identical to an uninterrupted one (tested).
  - One process group per run; no fp16 loss scaling (bf16 autocast on CUDA needs none).
  - --objective=electra: gradient accumulation weights the combined ELECTRA loss by each micro-batch's
    masked tokens, exact for the generator's term, approximate for the discriminator's (a mean over
    all real tokens); ELECTRA's generator input keeps BERT's 80/10/10 (the paper masks every chosen one).
"""
import contextlib
import dataclasses
import functools
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import bert
import runs
import t5
import tokenizer as tokenizers_mod
import xlnet
import xpt
# the plumbing (runs.py); a few names are also used through train by demo.py, finetune.py and the benches
from runs import (CheckpointMismatchError, CheckpointUnreadableError, NonFiniteLossError,  # noqa: F401
                  OutputInUseError, _file_sha, _Run, check_settings, data_sha,
                  distributed, fingerprint, get_tokenizer, output_lock, pick_device, rank0_first,
                  read_documents, read_log, read_text, save_model, split_documents, tokenize_documents)


# ----------------------------------------------------------------------------------------------------
# 1. Settings
# ----------------------------------------------------------------------------------------------------
@dataclass
class Settings:
    # --- what to run
    task: str = "demo"            # mlm (pretrain) | xpt (post-train a source) | demo (demo.py: the XPT story)
    out_dir: str = "out"          # where tokenizers, caches, checkpoints, logs and results go
    # --- data
    corpus: str = ""              # training text (mlm/xpt); the demo uses data/*_train.txt
    valid_corpus: str = ""        # held-out text; empty = hold out the last valid_fraction of documents
    valid_fraction: float = 0.05  # share of documents held out when valid_corpus is empty
    doc_format: str = "line"      # line: one document per line | blank: documents separated by blank lines
    tokenizer: str = "bpe"        # tokenizer kind to train: bpe (byte-level, RoBERTa) | wordpiece (BERT)
    tokenizer_dir: str = ""       # use this saved tokenizer instead of training one
    vocab_size: int = 4000        # vocabulary size when training a tokenizer
    packing: str = "full"         # full: RoBERTa FULL-SENTENCES | nsp: BERT pairs | sop: ALBERT's order
    max_len: int = 32             # tokens per training sequence, specials included (bench/defaults.py)
    # --- model (fresh models only; a source checkpoint brings its own)
    hidden_size: int = 128        # width of every layer
    num_layers: int = 2           # encoder layers (2: ~0.6 the cost of 4 per step; bench/defaults.py)
    num_heads: int = 4            # attention heads (hidden_size must divide by it)
    intermediate_size: int = 512  # feed-forward width (BERT uses 4 x hidden)
    embedding_size: int = 0       # ALBERT: word vectors this wide, projected to hidden_size (0 = hidden_size)
    share_layers: bool = False    # ALBERT: one block's weights for every layer
    dropout: float = 0.1          # hidden and attention dropout (--objective=t5 on the command line: 0)
    # --- optimisation
    steps: int = 8000             # optimizer steps of --task=mlm (Korean leaves the plateau after ~4,000)
    more_steps: int = 0           # mlm: continue the finished run N more steps (a fresh warm-up and decay)
    batch_size: int = 32          # sequences per micro-batch per process
    grad_accum: int = 1           # micro-batches per optimizer step
    lr: float = 1e-3              # peak learning rate
    warmup: float = 0.06          # warm-up as a fraction of the steps (RoBERTa: 6%)
    weight_decay: float = 0.01    # AdamW decoupled weight decay (not on biases and LayerNorm)
    max_grad_norm: float = 1.0    # gradient clipping; 0 = off
    mlm_probability: float = 0.4  # share of tokens chosen for prediction (BERT: 0.15; why 0.4: README)
    whole_word: bool = False      # mask all pieces of a word together
    span_masking: bool = False    # mask SpanBERT's spans (whole words, lengths ~ geometric, mean 3.8)
    objective: str = "mlm"        # mlm (BERT/RoBERTa) | electra (replaced-token detection) | plm (XLNet's
                                  # permutation LM, xlnet.py) | t5 (span corruption, t5.py); --task=mlm
    plm_k: int = 6                # plm: the last 1/K of each factorization order is predicted
    mean_span: float = 3.0        # t5: mean length of a corrupted span (mlm_probability: the noise share)
    generator_size: float = 0.25  # electra: the generator's width as a fraction of the discriminator's
    disc_weight: float = 50.0     # electra: weight of the discriminator's loss (the paper's lambda)
    # --- XPT (xpt.py)
    source: str = ""              # source model: HF-format dir (the demo also: shipped | pretrain)
    method: str = "xpt"           # scratch | embeddings-only | xpt-no-itl | xpt-one-phase | xpt
    itl_layers: int = 1           # encoder layers per implicit translation layer
    phase1_steps: int = 300       # phase 1: only the new parameters train
    phase2_steps: int = 700       # phase 2: everything trains
    reused_lr_scale: float = 1.0  # phase 2 learning-rate multiplier for parameters copied from the source
    init_shared: bool = False     # copy source vectors of tokens spelled the same in both vocabularies
    # --- bookkeeping
    eval_every: int = 250         # evaluate on the held-out slice every N steps (and at the end)
    eval_batches: int = 0         # held-out batches per evaluation; 0 = all of it
    patience: int = 0             # stop when the held-out loss has not improved for N evaluations
                                  # in a row, and keep the best weights; 0 = train all the steps
    min_steps: int = 0            # early stopping never fires before a run has done this many steps
                                  # (a small masked LM sits on a plateau for ~1,500 steps before it learns)
    phase1_patience: int = 0      # XPT phase 1 also stops on the held-out loss (its best weights go on to
                                  # phase 2) with this patience; 0 = phase 1 runs all its steps
    log_every: int = 10           # write a JSONL log line every N steps
    ckpt_every: int = 100         # write a checkpoint every N steps (and at the end)
    seed: int = 1337              # everything random derives from it
    device: str = "auto"          # auto (cuda if present) | cpu | cuda
    compile: bool = False         # torch.compile the model


USAGE = ["usage: python train.py --task=mlm|xpt [--key=value ...]",
         "(with no --task, python train.py runs the demo: python demo.py --help lists its settings)"]


def parse_args(argv, defaults=None, usage=None):
    """--key=value overrides into a Settings (or into `defaults`, any settings dataclass): runs.parse_args."""
    return runs.parse_args(argv, defaults if defaults is not None else Settings(), usage or USAGE)


# ----------------------------------------------------------------------------------------------------
# 2. Data
# ----------------------------------------------------------------------------------------------------
def pack_full_sentences(ids, offsets, max_len, bos_id, eos_id, pad_id):
    """RoBERTa's FULL-SENTENCES: the documents one after another (each followed by the separator
    </s>), cut into pieces of max_len - 2 tokens, each wrapped as <s> ... </s>. Sequences cross document
    boundaries; only the last one is padded. Returns dict of (N, max_len) tensors."""
    if max_len < 3:
        raise ValueError(f"max_len must be >= 3, got {max_len}")
    # Insert a separator after every document: position offsets[i+1] in the flat stream.
    stream = np.insert(ids.astype(np.int64), offsets[1:], eos_id)
    assert len(stream) == len(ids) + len(offsets) - 1  # (one per document)
    body = max_len - 2
    n = math.ceil(len(stream) / body)
    out = np.full((n, max_len), pad_id, dtype=np.int64)
    mask = np.zeros((n, max_len), dtype=np.int64)
    for i in range(n):
        piece = stream[i * body:(i + 1) * body]
        out[i, 0] = bos_id
        out[i, 1:1 + len(piece)] = piece
        out[i, 1 + len(piece)] = eos_id
        mask[i, :2 + len(piece)] = 1
    return {"input_ids": torch.from_numpy(out), "attention_mask": torch.from_numpy(mask)}


def pack_sentence_pairs(ids, offsets, max_len, cls_id, sep_id, pad_id, seed, order=False):
    """BERT's sentence pairs: [CLS] A [SEP] B [SEP] with segment ids 0 for A and 1 for B. For each
    window of a document, A is its first part (cut at a random point); B is the rest (label 0, IsNext)
    or, with probability 1/2, a span of another random document (label 1, NotNext). Drawn once,
    with a seeded generator (BERT's create_pretraining_data does the same; masks stay dynamic).

    order=True: ALBERT's sentence-order prediction instead (Lan et al. 2019, arXiv:1909.11942, section
    3.1): B is always the rest of the same window, and with probability 1/2 the two segments are
    swapped (label 1) or not (label 0), so the task is the order of two consecutive segments, not the
    topic of a random one."""
    rng = np.random.default_rng(seed)
    n_docs = len(offsets) - 1
    if n_docs < 2 and not order:
        raise ValueError("next-sentence prediction needs at least 2 documents")
    room = max_len - 3
    if room < 2:
        raise ValueError(f"max_len must be >= 5 for sentence pairs, got {max_len}")
    docs = [ids[offsets[i]:offsets[i + 1]].astype(np.int64) for i in range(n_docs)]
    rows, segs, masks, labels = [], [], [], []
    for d, doc in enumerate(docs):
        for start in range(0, max(len(doc) - 1, 1), room):
            window = doc[start:start + room]
            if len(window) < 2:
                continue
            cut = int(rng.integers(1, len(window)))
            a, b = window[:cut], window[cut:]
            label = 0
            if order:
                if rng.random() < 0.5:
                    a, b, label = b, a, 1  # swapped
            elif rng.random() < 0.5:
                other = int(rng.integers(0, n_docs - 1))
                other += other >= d  # any document but this one
                o = docs[other]
                s = int(rng.integers(0, max(len(o) - len(b), 0) + 1))
                b = o[s:s + max(len(b), 1)]
                label = 1
            tokens = np.concatenate([[cls_id], a, [sep_id], b, [sep_id]])[:max_len]
            seg = np.concatenate([np.zeros(len(a) + 2, dtype=np.int64),
                                  np.ones(len(b) + 1, dtype=np.int64)])[:max_len]
            row, srow, m = (np.full(max_len, v, dtype=np.int64) for v in (pad_id, 0, 0))
            row[:len(tokens)], srow[:len(seg)], m[:len(tokens)] = tokens, seg, 1
            rows.append(row), segs.append(srow), masks.append(m), labels.append(label)
    if not rows:
        raise ValueError("corpus too small: no document has 2 or more tokens for a sentence pair")
    t = lambda x: torch.from_numpy(np.stack(x))  # noqa: E731
    return {"input_ids": t(rows), "token_type_ids": t(segs), "attention_mask": t(masks),
            "next_sentence_label": torch.tensor(labels)}


def build_datasets(s, tok, train_path, valid_path=None, cache_dir=None):
    """(train, valid) dicts of tensors from text files, tokenized with `tok` and packed per settings."""
    docs, vdocs = split_documents(s, train_path, valid_path)
    key = fingerprint(tok)
    parts = [tokenize_documents(ds, tok, cache_dir, key) for ds in (docs, vdocs)]
    runs.check_token_counts(s, train_path, docs, *(len(ids) for ids, _ in parts), held_out=not valid_path)
    out = []
    for ids, offsets in parts:
        if s.packing == "full":
            data = pack_full_sentences(ids, offsets, s.max_len, tok.bos_id, tok.eos_id, tok.pad_id)
        elif s.packing in ("nsp", "sop"):
            data = pack_sentence_pairs(ids, offsets, s.max_len, tok.cls_id, tok.sep_id, tok.pad_id, s.seed,
                                       order=s.packing == "sop")
        else:
            raise ValueError(f"packing must be 'full', 'nsp' or 'sop', got {s.packing!r}")
        out.append(data)
    return out[0], out[1]


def batch_indices(n, step, global_batch, seed):
    """Row indices of the global batch of `step`: walk through a fixed random permutation of the n rows,
    a new permutation each epoch. A pure function of the step: this *is* the data position."""
    places = (divmod(i, n) for i in range(step * global_batch, (step + 1) * global_batch))  # (epoch, pos)
    return torch.stack([_permutation(n, seed, epoch)[pos] for epoch, pos in places])


@functools.lru_cache(maxsize=1)  # (the epoch's permutation, drawn once)
def _permutation(n, seed, epoch):
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


# ----------------------------------------------------------------------------------------------------
# 3. Masking
# ----------------------------------------------------------------------------------------------------
def mask_tokens(input_ids, *, mask_id, vocab_size, special_ids, mlm_probability=0.15, generator=None,
                word_starts=None, spans=False):
    """BERT's masking, vectorised and pure: returns (inputs, labels), input_ids is not modified.
    spans=True: SpanBERT's span masking instead (`mask_spans`).

    Each position that is not a special token (padding must be among special_ids) is chosen with
    probability mlm_probability. labels = the original id at chosen positions, -100 elsewhere (the value
    cross_entropy ignores). Of the chosen positions:
      80% -> mask_id, 10% -> a random non-special token, 10% -> unchanged.
    subtle: why not always [MASK]? The model never sees [MASK] at fine-tuning time; keeping or
    corrupting some chosen tokens forces it to build a good representation of *every* input token
    (Devlin et al. 2018, section 3.1 and appendix C.2).

    word_starts: optional bool tensor (vocab_size,), True where a token begins a word. Given, whole words
    are chosen together (the choice is drawn at the word's first piece and shared by its continuations);
    the 80/10/10 replacement is still drawn per token, as in BERT's whole-word release.
    """
    if spans:
        return mask_spans(input_ids, mask_id=mask_id, vocab_size=vocab_size, special_ids=special_ids,
                          mlm_probability=mlm_probability, generator=generator, word_starts=word_starts)
    ids = input_ids
    special, candidate = _maskable(ids, vocab_size, special_ids, mlm_probability)
    r = torch.rand(ids.shape, generator=generator, device=ids.device)
    if word_starts is not None:
        r = torch.gather(r, 1, word_first_position(ids, candidate, word_starts))  # a word shares one draw
    chosen = candidate & (r < mlm_probability)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    action = torch.rand(ids.shape, generator=generator, device=ids.device)
    allowed = torch.nonzero(~special).squeeze(1)  # the non-special ids a random replacement may use
    random_ids = allowed[torch.randint(len(allowed), ids.shape, generator=generator, device=ids.device)]
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return inputs, labels


def _maskable(ids, vocab_size, special_ids, mlm_probability):
    """(special: (V,) bool over the vocabulary, candidate: (B, T) bool, True where a token may be masked)."""
    if not 0.0 <= mlm_probability <= 1.0:
        raise ValueError(f"mlm_probability must be in [0, 1], got {mlm_probability}")
    special = torch.zeros(vocab_size, dtype=torch.bool, device=ids.device)
    special[torch.as_tensor(list(special_ids), dtype=torch.long, device=ids.device)] = True
    return special, ~special[ids]


def span_lengths(n, generator=None, p=0.2, max_len=10):
    """n span lengths from SpanBERT's clipped geometric distribution: P(l) proportional to p (1-p)^(l-1)
    for l = 1 .. max_len (mean 3.8 at p = 0.2, max 10; Joshi et al. 2019, arXiv:1907.10529, section 3.1)."""
    probs = torch.tensor([p * (1 - p) ** (k - 1) for k in range(1, max_len + 1)])
    return torch.multinomial(probs / probs.sum(), n, replacement=True, generator=generator) + 1


def mask_spans(input_ids, *, mask_id, vocab_size, special_ids, mlm_probability=0.15, generator=None,
               word_starts=None):
    """SpanBERT's span masking, with mask_tokens' arguments and outputs: per row, spans of whole words
    (of tokens without word_starts) with lengths from `span_lengths` start at random words until
    mlm_probability of the row's non-special tokens are chosen (the last span is cut to fit the
    budget, at a word boundary); each span is replaced as a whole 80/10/10 ([MASK] / random tokens /
    unchanged). A Python loop per row: readable, and ~1 ms per row of 64 tokens on a CPU.
    Differs from SpanBERT: spans never cross a special token (their rows here are single documents)."""
    ids = input_ids
    special, candidate = _maskable(ids, vocab_size, special_ids, mlm_probability)
    first = word_first_position(ids, candidate, word_starts) if word_starts is not None \
        else torch.arange(ids.shape[1]).expand_as(ids)
    chosen = torch.zeros_like(candidate)
    action = torch.zeros(ids.shape)  # one draw per span, shared by its tokens
    for b in range(ids.shape[0]):
        starts = [t for t in range(ids.shape[1]) if candidate[b, t] and first[b, t] == t]  # word starts
        ends = starts[1:] + [ids.shape[1]]
        words = [(a, min(e, a + int(candidate[b, a:e].sum()))) for a, e in zip(starts, ends)]  # (start, end)
        budget = int(round(mlm_probability * int(candidate[b].sum())))
        n_chosen, tries = 0, 0
        while n_chosen < budget and tries < 100 * len(words):
            tries += 1
            w = int(torch.randint(len(words), (1,), generator=generator))
            length = int(span_lengths(1, generator)[0])
            u = float(torch.rand(1, generator=generator))
            for a, e in words[w:w + length]:
                if n_chosen >= budget:
                    break
                new = [t for t in range(a, e) if not chosen[b, t]]
                for t in new:
                    chosen[b, t], action[b, t] = True, u
                n_chosen += len(new)
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    allowed = torch.nonzero(~special).squeeze(1)
    random_ids = allowed[torch.randint(len(allowed), ids.shape, generator=generator, device=ids.device)]
    inputs = torch.where(chosen & (action < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return inputs, labels


def word_first_position(ids, candidate, word_starts):
    """(B, T): for every position, the position of the first piece of its word. A position starts a word
    if its token starts a word, is special, or follows a special token (a stray continuation piece right
    after <s> has no word to belong to). candidate: (B, T) bool, True where the token is not special."""
    start = word_starts.to(ids.device)[ids] | ~candidate
    start[:, 1:] |= ~candidate[:, :-1]
    start[:, 0] = True
    pos = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
    return torch.cummax(torch.where(start, pos, torch.zeros_like(pos)), dim=1).values


OBJECTIVES = runs.OBJECTIVE_FILES  # objectives whose model and batches live in the model's file (plm, t5)


def make_inputs(s, tok_info):
    """The objective as one function make(packed batch, generator) -> the model's inputs and labels:
    masking for the masked LMs (BERT, RoBERTa, ELECTRA); XLNet's orders, T5's spans (`OBJECTIVES`)."""
    if s.objective in OBJECTIVES:
        return lambda batch, g: OBJECTIVES[s.objective].make_batch(batch, tok_info, s, g)

    def mask(batch, g):
        batch["input_ids"], batch["labels"] = mask_tokens(
            batch["input_ids"], mask_id=tok_info["mask_id"], vocab_size=tok_info["vocab_size"],
            special_ids=tok_info["special_ids"], mlm_probability=s.mlm_probability, generator=g,
            word_starts=tok_info.get("word_starts"), spans=s.span_masking)
        return batch
    return mask


# ----------------------------------------------------------------------------------------------------
# 4. The training loop
# ----------------------------------------------------------------------------------------------------
def lr_at(step, total, warmup_steps):
    """Linear warm-up to 1 over warmup_steps, then linear decay to 0 at `total` (a multiplier)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total - step) / max(1, total - warmup_steps))


def default_groups(model, weight_decay):
    """AdamW groups of the trainable parameters: no weight decay on biases and LayerNorm."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if xpt.no_weight_decay(n, p) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]


def train_step(net, optimizer, batch, *, lr, accum, micro, rank=0, world=1, max_grad_norm=1.0,
               autocast=contextlib.nullcontext):
    """One optimizer step on one masked global batch: for each of this process's `accum` micro-batches,
    forward, loss weighted by its share of the masked tokens, backward; then clip and AdamW.
    Returns (the mean loss over all masked tokens of the global batch, the gradient norm before
    clipping, a 0-d tensor: reading it waits for the device, so the caller does that only when it
    logs); with a non-finite loss nothing is stepped and the norm is None."""
    device = next(net.parameters()).device
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # (xpt: copied parameters may have a lower rate)
    n_total = int((batch["labels"] != -100).sum())  # masked tokens in the whole global batch
    loss_sum = torch.zeros((), device=device)
    for j in range(accum):
        lo = (j * world + rank) * micro  # this process's rows of micro-batch j
        mb = {k: v[lo:lo + micro].to(device, non_blocking=True) for k, v in batch.items()}
        n_mb = int((mb["labels"] != -100).sum())
        # DDP all-reduces gradients after every backward; no_sync skips that for all but the last
        sync = contextlib.nullcontext() if (world == 1 or j == accum - 1) else net.no_sync()
        with sync:
            with autocast():
                out = net(**mb)
            # subtle: gradient accumulation. out.loss is the MEAN over this micro-batch's masked
            # tokens, but micro-batches hold different numbers of masked tokens. Weighting each by
            # n_mb / n_total makes the accumulated gradient the gradient of the mean over ALL
            # masked tokens of the global batch, exactly as if it had been one big batch. DDP then
            # AVERAGES gradients over the `world` processes, so we multiply by world to undo that.
            # (The naive `loss / accum` is only right when every micro-batch has equal counts.)
            # A micro-batch with nothing masked still runs backward (0 x its logits): under DDP every
            # process must take part in every gradient all-reduce, or the others wait forever.
            loss = out.loss * (n_mb * world / max(n_total, 1)) if n_mb else out.logits.sum() * 0.0
            loss.backward()
        loss_sum += out.loss.detach().float() * n_mb if n_mb else 0.0
    if world > 1:
        torch.distributed.all_reduce(loss_sum)
    step_loss = loss_sum.item() / max(n_total, 1)
    if not math.isfinite(step_loss):
        optimizer.zero_grad(set_to_none=True)
        return step_loss, None
    # the gradient norm before clipping is returned (and logged): a spike or a drift shows there
    # first; max_norm=inf measures without clipping
    grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(),
                                               max_grad_norm if max_grad_norm > 0 else math.inf)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss, grad_norm


def train_loop(model, train_data, valid_data, *, out_dir, steps, tok_info, s, groups=None,
               run_config=None, desc="train", step_offset=0, floor=None):
    """Train `model` (any module whose forward(**batch) returns `.loss` and `.logits`) for `steps`
    optimizer steps, evaluating every s.eval_every steps; returns the evaluations. Resumes from out_dir
    (runs._Run: the bookkeeping). step_offset: where this run starts in a longer story (XPT's phase 2
    after phase 1): data, masks and evaluation points continue from there; the lr schedule is the run's.
    Early stopping (s.patience, after s.min_steps) keeps the dev-best weights; Ctrl-C or SIGTERM finishes
    the step, writes a checkpoint and raises runs.Interrupted."""
    groups = groups if groups is not None else default_groups(model, s.weight_decay)
    run = _Run.start(model, out_dir, steps, s, groups, run_config, desc, step_offset)
    if run.finished is not None:
        return run.finished
    make = make_inputs(s, tok_info)
    n_rows = len(train_data["input_ids"])
    global_batch = s.batch_size * s.grad_accum * run.world
    warmup_steps = max(1, int(s.warmup * steps))

    def run_eval():
        r = evaluate(model, valid_data, mask_id=tok_info["mask_id"], vocab_size=tok_info["vocab_size"],
                     special_ids=tok_info["special_ids"], batch_size=max(s.batch_size, 64), device=run.device,
                     max_batches=s.eval_batches, autocast=run.autocast,  # (whole-word too: token by token)
                     make=make if s.objective in OBJECTIVES else None)
        return run.record_eval(r, floor, None if floor is None else learned_context(r["loss"], floor))

    model.train()
    bar = tqdm(total=steps, initial=run.step, desc=desc, disable=not run.master, dynamic_ncols=True,
               leave=True)
    with runs.stop_requests() as stop:
        while run.step < steps:
            step = run.step  # (steps done so far in this run; step_offset + step in the whole story)
            # the global batch of this step, masked with a generator seeded by (seed, step): both are pure
            # functions of the step, so a resumed run sees exactly what an uninterrupted one would
            idx = batch_indices(n_rows, step_offset + step, global_batch, s.seed)
            batch = {k: v[idx] for k, v in train_data.items()}
            g = torch.Generator().manual_seed(s.seed * 7919 + step_offset + step)
            batch = make(batch, g)  # the objective's inputs and labels (masking for the masked LMs)
            lr = s.lr * lr_at(step, steps, warmup_steps)
            loss, grad_norm = train_step(run.net, run.optimizer, batch, lr=lr, accum=s.grad_accum,
                                         micro=s.batch_size, rank=run.rank, world=run.world,
                                         max_grad_norm=s.max_grad_norm, autocast=run.autocast)
            if grad_norm is None:  # a non-finite loss: nothing was stepped
                bar.close()
                raise run.non_finite(loss)
            run.step += 1
            run.log_step(loss, grad_norm, lr, tokens=int(batch["attention_mask"].sum()), bar=bar,
                         every=s.log_every, last=run.step == steps)
            bar.update(1)
            if s.eval_every and (step_offset + run.step) % s.eval_every == 0 and run.step != steps:
                # (global steps, so that every arm of a comparison is evaluated at the same points)
                r = run_eval()
                bar.set_postfix(loss=f"{loss:.3f}", eval=f"{r['loss']:.3f}")
                run.keep_if_best(r)
                if run.stalled():
                    break
            asked = run.stop_requested(stop) if run.step != steps else 0
            if asked:  # Ctrl-C / SIGTERM: the step is done; checkpoint it and stop
                bar.close()
                raise run.interrupt(asked)
            if s.ckpt_every and run.step % s.ckpt_every == 0 and run.step != steps:
                run.checkpoint()
            run.barrier()
    bar.close()
    evals = run.finish(run_eval)
    if stop["signum"]:  # asked during the last step (or the one that stalled): done, but the command stops
        raise runs.Interrupted(stop["signum"], step_offset + run.step, run.final_path)
    return evals


# ----------------------------------------------------------------------------------------------------
# 5. Evaluation: the held-out loss at [MASK] positions, next to the floor of a model without context
# ----------------------------------------------------------------------------------------------------
def unigram_loss(train_ids, valid_ids, vocab_size, special_ids=()):
    """The context-free floor: the held-out loss of a predictor that ignores the context and always
    guesses the training-token frequencies, add-0.5 smoothed:

        p(t) = (c_t + 0.5) / (N + 0.5 V),    F = -mean over held-out tokens t of ln p(t)

    c_t = count of t in the training ids, N = their total, V = vocab_size; special tokens are left out of
    the counts and of the held-out tokens alike. A masked LM evaluated at [MASK] positions (`evaluate`)
    that does not get clearly below F has learned nothing from context, only token frequencies."""
    special = np.zeros(vocab_size, dtype=bool)
    special[list(special_ids)] = True
    train_ids, valid_ids = np.asarray(train_ids, dtype=np.int64), np.asarray(valid_ids, dtype=np.int64)
    train_ids, valid_ids = train_ids[~special[train_ids]], valid_ids[~special[valid_ids]]
    if len(valid_ids) == 0:
        raise ValueError("the held-out text has no (non-special) tokens")
    counts = np.bincount(train_ids, minlength=vocab_size)
    p = (counts + 0.5) / (len(train_ids) + 0.5 * vocab_size)
    return float(-np.log(p[valid_ids]).mean())


def majority_accuracy(train_ids, valid_ids, special_ids=()):
    """The accuracy floor beside `unigram_loss`: always guess the most frequent training token (specials
    left out); the share of held-out tokens that guess gets right."""
    special = set(int(i) for i in special_ids)
    train_ids = [int(t) for t in np.asarray(train_ids) if int(t) not in special]
    valid_ids = [int(t) for t in np.asarray(valid_ids) if int(t) not in special]
    if not train_ids or not valid_ids:
        raise ValueError("need non-special tokens in both the training and the held-out text")
    top = int(np.bincount(train_ids).argmax())
    return sum(t == top for t in valid_ids) / len(valid_ids)


def floors(tok, train_data, valid_data):
    """(unigram loss, majority accuracy) of the packed held-out ids, counts from the packed training ids
    (special tokens, the packing's among them, are left out of both)."""
    tr, va = train_data["input_ids"].numpy().ravel(), valid_data["input_ids"].numpy().ravel()
    return unigram_loss(tr, va, len(tok), tok.special_ids), majority_accuracy(tr, va, tok.special_ids)


def learned_context(loss, floor, margin=0.1):
    """A held-out loss read against its unigram floor: "yes" only when the loss is more than `margin`
    nats below the floor (what token frequencies alone cannot reach)."""
    return "yes" if loss < floor - margin else "no"


def eval_mask_groups(input_ids, *, vocab_size, special_ids, mlm_probability=0.15):
    """Split the maskable held-out positions into k = round(1 / mlm_probability) groups (a fixed seed:
    the groups depend on the held-out data alone, never on a run's seed). Masking one group at a time
    predicts every held-out token exactly once, about 1/k of the tokens per pass. Returns
    (groups (B, T) with -1 at special positions, k)."""
    k = max(1, round(1 / mlm_probability))
    candidate = _maskable(input_ids, vocab_size, special_ids, mlm_probability)[1]
    g = torch.Generator().manual_seed(20210305)
    groups = torch.randint(k, input_ids.shape, generator=g)
    return torch.where(candidate, groups, torch.full_like(groups, -1)), k


@torch.no_grad()
def evaluate(model, data, *, mask_id, vocab_size, special_ids, batch_size, device, mlm_probability=0.15,
             max_batches=0, autocast=contextlib.nullcontext, make=None):
    """Held-out masked-LM loss (mean over the predicted tokens), perplexity and accuracy, at [MASK]
    positions only: every held-out token is replaced by [MASK] once (one group of `eval_mask_groups`
    per pass, about 1/7 of the tokens) and predicted from its unmasked context.

    subtle: why not score the 80/10/10 inputs that training uses? At the 10% of chosen positions left
    unchanged the answer is in the input, so a model that has learned no context at all still beats the
    unigram floor F by about half a nat (~0.9 F + 0.1 ln 4) by copying it. With [MASK] everywhere, F
    (`unigram_loss`) is what ignoring the context is worth (a reference level, not a strict bound: a
    context-free model can land a little below smoothed counts), and every model is scored on exactly
    the same task (train_loop keeps mlm_probability at 0.15 here whatever the training's masking rate),
    token by token, whole-word models too: a run of [MASK]s over a word's pieces says where words begin
    and end, which F does not credit (such a model sat 0.3-0.6 nat "below" F on the plateau).
    make: XLNet and T5 (`make_inputs`) are scored on their own task instead, its draws from a fixed seed,
    at their targets that are ordinary tokens (`ordinary_targets`: T5's span tokens, not its format), each
    as the choice among the ordinary tokens (T5: where a span ends is random, t5.make_batch)."""
    was_training = model.training
    model.eval()
    groups, k = eval_mask_groups(data["input_ids"], vocab_size=vocab_size, special_ids=special_ids,
                                 mlm_probability=mlm_probability)
    n = len(data["input_ids"])
    total_loss, total_right, total_n = 0.0, 0, 0
    disc = dict.fromkeys(("loss", "tokens", "replaced", "replaced_right", "original_right"), 0.0)
    pairs = [0, 0]  # NSP/SOP: sentence pairs right, scored
    g = torch.Generator().manual_seed(20210305)  # (make's draws: the same targets in every evaluation)
    # ELECTRA samples its replacements: draw them from a fixed seed, leaving the training RNG untouched
    cuda = [device] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(0)
        for b, start in enumerate(range(0, n, batch_size)):
            if max_batches and b >= max_batches:
                break
            batch = {k_: v[start:start + batch_size] for k_, v in data.items()}
            sentence = batch.pop("next_sentence_label", None)  # NSP/SOP: scored once per batch, below
            ids = batch["input_ids"]
            for group in range(1 if make else k):
                chosen = groups[start:start + batch_size] == group
                if make is None and not chosen.any():
                    continue
                inputs = torch.where(chosen, torch.full_like(ids, mask_id), ids)
                labels = torch.where(chosen, ids, torch.full_like(ids, -100))
                mb = make(batch, g) if make else {**batch, "input_ids": inputs, "labels": labels}
                mb = {k_: v.to(device) for k_, v in mb.items()}
                with autocast():
                    out = model(**mb)
                logits = out.logits.float()
                target = mb["labels"]
                keep = ordinary_targets(target, vocab_size, special_ids) if make else target != -100
                if logits.dim() == 3:  # full logits: keep the scored positions
                    logits = logits[keep]
                target = target[keep]
                if make:  # (the choice among the ordinary tokens)
                    every = torch.arange(logits.shape[-1], device=logits.device)
                    logits = logits.masked_fill(~ordinary_targets(every, vocab_size, special_ids), -math.inf)
                total_loss += F.cross_entropy(logits, target, reduction="sum").item()
                total_right += (logits.argmax(-1) == target).sum().item()
                total_n += target.numel()
                if hasattr(out, "disc_logits"):  # ELECTRA: its discriminator too
                    bert.electra_eval_counts(out, mb["attention_mask"], disc)
                if sentence is not None and hasattr(out, "nsp_logits"):
                    pairs[0] += (out.nsp_logits.argmax(-1).cpu() == sentence).sum().item()
                    pairs[1] += len(sentence)
                    sentence = None
    model.train(was_training)
    if total_n == 0:
        raise ValueError("the held-out data has no maskable tokens")
    loss = total_loss / total_n
    r = {"loss": loss, "ppl": math.exp(min(loss, 50)), "acc": total_right / total_n, "tokens": total_n,
         **({"scored": "on its own targets"} if make else {})}
    if disc["tokens"]:
        r.update(bert.electra_eval_metrics(disc))
    if pairs[1]:
        r["sentence_acc"] = pairs[0] / pairs[1]
    return r


def ordinary_targets(labels, vocab_size, special_ids):
    """True where a label is scored: an ordinary token of the tokenizer (not -100, not special, not one
    of T5's sentinels above its vocab_size ids). T5's format is not scored: t5.make_batch says why."""
    inside = (labels >= 0) & (labels < vocab_size)
    return inside & _maskable(labels.clamp(0, vocab_size - 1), vocab_size, special_ids, 0.0)[1]


def task_floor(make, train_data, valid_data, vocab_size, special_ids, batch_size=64):
    """XLNet's and T5's floor: the unigram loss of exactly the targets `evaluate` scores for them
    (`ordinary_targets`, drawn the same way), counts from the training rows' scored targets;
    vocab_size and special_ids are the tokenizer's."""
    def targets(data):
        g, n = torch.Generator().manual_seed(20210305), len(data["input_ids"])
        ys = [make({k: v[i:i + batch_size] for k, v in data.items()}, g)["labels"]
              for i in range(0, n, batch_size)]
        return torch.cat([y[ordinary_targets(y, vocab_size, special_ids)] for y in ys]).numpy()
    return unigram_loss(targets(train_data), targets(valid_data), vocab_size)


# ----------------------------------------------------------------------------------------------------
# 6. Tasks: MLM pretraining and XPT post-training
# ----------------------------------------------------------------------------------------------------
def tokenizer_info(tok, s):
    return {"mask_id": tok.mask_id, "vocab_size": len(tok), "special_ids": list(tok.special_ids),
            "pad_id": tok.pad_id, "eos_id": tok.eos_id,
            "word_starts": torch.tensor(tok.word_start_flags()) if s.whole_word else None}  # (V,) bool


def new_model(s, tok):
    """A fresh model for the objective and its run config, each built from the settings by its own file:
    BERT/RoBERTa/ALBERT and ELECTRA's pair (bert.py), XLNet (xlnet.py), T5 (t5.py)."""
    makers = {"mlm": bert.new_model, "electra": bert.new_electra, "plm": xlnet.new_model, "t5": t5.new_model}
    return makers[s.objective](s, tok)


def run_mlm(s, out_dir=None, corpus=None, valid_corpus=None, tok=None, desc="mlm"):
    """Pretrain a masked LM from scratch on a text file; returns (model, tokenizer, evals)."""
    out_dir = Path(out_dir or s.out_dir)
    corpus = corpus or s.corpus
    if not corpus:
        raise ValueError("--task=mlm needs --corpus=FILE")
    valid_corpus = valid_corpus if valid_corpus is not None else s.valid_corpus

    def prepare():
        t = tok or get_tokenizer(s, split_documents(s, corpus, valid_corpus)[0], out_dir)
        return (t, *build_datasets(s, t, corpus, valid_corpus, out_dir / "cache"))
    tok, train_data, valid_data = rank0_first(prepare)
    torch.manual_seed(s.seed)
    model, run_config = new_model(s, tok)
    if distributed()[0] == 0:  # (under torchrun: once)
        print(f"{desc}: {sum(p.numel() for p in model.parameters()):,} parameters, "
              f"{len(train_data['input_ids']):,} training sequences of {s.max_len} tokens, "
              f"{len(valid_data['input_ids']):,} held out")
    finished_before = (out_dir / "run" / "final.pt").exists()
    run_config, info = {**run_config, "data": data_sha(train_data, valid_data)}, tokenizer_info(tok, s)
    floor = (task_floor(make_inputs(s, info), train_data, valid_data, info["vocab_size"], info["special_ids"])
             if s.objective in OBJECTIVES else floors(tok, train_data, valid_data)[0])  # (read evals by it)
    evals = train_loop(model, train_data, valid_data, out_dir=out_dir / "run", steps=s.steps, tok_info=info,
                       s=s, run_config=run_config, desc=desc, floor=floor)
    logs = [out_dir / "run" / "log.jsonl"]
    if s.more_steps:  # from the finished run's weights: a segment of its own (fresh optimizer and schedule)
        more = out_dir / f"run+{s.more_steps}"
        finished_before = (more / "final.pt").exists()
        evals = evals + train_loop(model, train_data, valid_data, out_dir=more, steps=s.more_steps,
                                   tok_info=info, s=s, desc=f"{desc} +{s.more_steps}", floor=floor,
                                   run_config={**run_config, "after": s.steps}, step_offset=evals[-1]["step"])
        logs.append(more / "log.jsonl")
    save_model(model, tok, out_dir / "model")  # (ELECTRA: the discriminator, and model/generator)
    report(desc, evals, floor, out_dir / "model", logs, finished_before)
    return model, tok, evals


def run_xpt(s, source_dir, tok, train_data, valid_data, out_dir, method=None, source_tok=None):
    """XPT (xpt.py) from a source checkpoint through both phases with the same training loop.
    Prints the report first and the held-out loss at the end of each phase. Returns (model, evals)."""
    method = method or s.method
    out_dir = Path(out_dir)
    if s.packing != "full":
        raise ValueError("XPT post-trains a masked LM: use --packing=full (NSP needs BertForPreTraining)")
    source_cls = bert.BertForMaskedLM
    if bert.BertConfig.from_json_file(Path(source_dir) / "config.json").model_type == "electra":
        source_cls = bert.ElectraForPreTraining  # XPT of the discriminator, with a new generator
    source = source_cls.from_pretrained(source_dir)
    if s.init_shared and source_tok is None:
        source_tok = tokenizers_mod.load_tokenizer(source_dir)  # the source's own vocabulary files
    model = xpt.build_xpt(source, len(tok), method=method, itl_layers=s.itl_layers,
                          target_pad_token_id=tok.pad_id, seed=s.seed, source_tokenizer=source_tok,
                          target_tokenizer=tok if source_tok else None, generator_size=s.generator_size,
                          disc_weight=s.disc_weight)
    master = distributed()[0] == 0  # (under torchrun: print once)
    if master:
        print(xpt.report(model))
    info, floor = tokenizer_info(tok, s), floors(tok, train_data, valid_data)[0]
    cfg = {"model": model.config.to_dict(), "method": method, "source": str(source_dir),
           **({"generator": model.generator.config.to_dict()} if hasattr(model, "generator") else {}),
           "source_sha": _file_sha(Path(source_dir) / "model.safetensors")
           if (Path(source_dir) / "model.safetensors").exists() else "",
           "data": data_sha(train_data, valid_data), "itl_layers": s.itl_layers,
           "reused_lr_scale": s.reused_lr_scale, "init_shared": bool(source_tok)}
    evals = []
    phases = xpt.phases(method, s.phase1_steps, s.phase2_steps)
    offset = 0
    for phase, steps in phases:
        xpt.set_phase(model, phase)
        groups = xpt.optimizer_groups(model, s.weight_decay, s.reused_lr_scale if phase == 2 else 1.0)
        n_train = sum(p.numel() for g in groups for p in g["params"])
        name = method if len(phases) == 1 else f"{method} phase {phase}"
        if master:
            print(f"{name}: {steps} steps, {n_train:,} trainable parameters")
        # early stopping: s.patience (after s.min_steps) in the last phase; in phase 1 s.phase1_patience
        # (0: all its steps), whose best weights then start phase 2
        last = phase == phases[-1][0]
        ps = s if last else dataclasses.replace(s, patience=s.phase1_patience, min_steps=0)
        ev = train_loop(model, train_data, valid_data, out_dir=out_dir / f"phase{phase}", steps=steps,
                        tok_info=info, s=ps, groups=groups, run_config={**cfg, "phase": phase},
                        desc=name, step_offset=offset, floor=floor)
        offset = ev[-1]["step"]  # (= offset + steps unless phase 1 stopped early)
        evals.extend({**e, "phase": phase} for e in ev)
    save_model(model, tok, out_dir / "model")
    return model, evals


def report(desc, evals, floor, model_dir, logs, finished_before=False, task="mlm"):
    """Print what a finished command ends with: how good against its floor, and where everything is."""
    r = evals[-1]
    if distributed()[0] == 0:  # (under torchrun: once)
        verdict = learned_context(r["loss"], floor)
        print(runs.summary_lines(desc, r, floor, verdict, model_dir, logs, finished_before, task))


def run_xpt_task(s):
    out_dir = Path(s.out_dir)

    def prepare():
        tok = get_tokenizer(s, split_documents(s, s.corpus, s.valid_corpus)[0], out_dir)
        return (tok, *build_datasets(s, tok, s.corpus, s.valid_corpus, out_dir / "cache"))
    tok, train_data, valid_data = rank0_first(prepare)
    run_dir = out_dir / s.method
    finished_before = (run_dir / f"phase{xpt.phases(s.method, s.phase1_steps, s.phase2_steps)[-1][0]}"
                       / "final.pt").exists()
    model, evals = run_xpt(s, s.source, tok, train_data, valid_data, run_dir)
    logs = sorted(run_dir.glob("phase*/log.jsonl"))
    report(s.method, evals, floors(tok, train_data, valid_data)[0], run_dir / "model", logs, finished_before,
           "xpt")
    return model, evals


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    s = runs.check_task(check_settings(parse_args(argv)), runs.given_names(argv))
    with output_lock(s.out_dir):
        run_mlm(s) if s.task == "mlm" else run_xpt_task(s)


def cli(argv=None):
    return runs.command(main, argv)


if __name__ == "__main__":  # with no --task, the demo (demo.py imports this file as `train`: route there)
    if runs.task_named(sys.argv[1:]) != "demo":
        raise SystemExit(cli())
    import demo
    raise SystemExit(demo.cli())
