"""
Fine-tuning: sentence classification on [CLS], and distillation of a fine-tuned teacher into a student.

    python finetune.py --model=DIR --train=TSV --test=TSV                 # fine-tune, report accuracy
    python finetune.py --model=DIR --train=TSV --test=TSV --save=OUT      # ... and keep the classifier
    python finetune.py --model=SMALL --teacher=OUT --unlabeled=TXT --test=TSV   # distil OUT into SMALL
    python finetune.py --help                                             # every setting with its default

Why a file of its own: train.py is the masked-LM story (packed sequences, dynamic masking, resumable
steps, XPT phases). Classification has other data (TSV rows with labels), other batches (one sentence
per row, padded to the longest in the batch), another metric (accuracy) and no resume; folding it into
train.py would grow that file unreadable. From train.py it reuses the `--key=value` parser and its
--help, the learning-rate schedule (`lr_at`), the AdamW groups (`default_groups`), `pick_device`,
`read_documents`, `read_text` and `NonFiniteLossError`.

What is here, in reading order:
  1. Settings (`FinetuneSettings`), overridable as --key=value.
  2. Data: `read_tsv` (any TSV with a header, a text column and a label column), `label_map`,
     `encode_rows` ([CLS] text [SEP], cut to max_len), `collate` (pad to the longest in the batch).
  3. The loop: `finetune` (AdamW, linear warm-up/decay, clipping, seeded shuffling), which also
     distils when given a teacher; `accuracy`; `distill_loss`.
  4. `shrink`: a smaller student from a bigger model by keeping evenly spaced layers (DistilBERT).
  5. `MeanPoolClassifier`: one head (mean of the final hidden states) for every family here, XLNet and
     T5 included, so that pretraining objectives can be compared by the accuracy of their encoders.

Sources: BERT's fine-tuning recipe (Devlin et al. 2018, arXiv:1810.04805, section 4.1 and appendix A.3:
the final hidden state of [CLS] through the pooler, one linear layer, all parameters trained, a few
epochs at lr 2e-5..5e-5); knowledge distillation (Hinton et al. 2015, arXiv:1503.02531: soft targets at
temperature T, loss scaled by T^2) and its use on BERT with MSE on logits over unlabeled text (Tang et
al. 2019, arXiv:1903.12136); layer selection for the student (DistilBERT, Sanh et al. 2019,
arXiv:1910.01108, takes one layer in two from the teacher).

Shape legend: B = batch size, T = tokens in the batch's longest row, C = number of classes.

Differs from the references:
  - No sentence-pair input (one text column); token_type_ids are all 0.
  - Distillation here is pure (no mix with the hard labels): the student only ever sees the teacher's
    logits on unlabeled text, which is the setting where distillation is the only signal available.
  - Teacher and student must share the tokenizer (same vocabulary); the student is "smaller" in depth
    or width, not in vocabulary.
"""
import json
import math
import sys
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

import bert
import t5
import tokenizer as tokenizers_mod
import train
import xlnet


# ----------------------------------------------------------------------------------------------------
# 1. Settings
# ----------------------------------------------------------------------------------------------------
@dataclass
class FinetuneSettings:
    # --- data
    model: str = ""               # HF-format directory to start from (config.json + weights)
    tokenizer_dir: str = ""       # tokenizer files; empty = the ones in --model (or --teacher)
    train: str = ""               # labelled TSV to fine-tune on (header line first)
    test: str = ""                # labelled TSV to report accuracy on
    text_column: str = "text"     # column of the text: a header name or a 0-based index
    label_column: str = "label"   # column of the label: a header name or a 0-based index
    max_len: int = 128            # tokens per row, [CLS] and [SEP] included (longer rows are cut)
    # --- optimisation
    epochs: float = 3.0           # passes over the training rows (ignored when steps > 0)
    steps: int = 0                # optimizer steps; 0 = derive from epochs
    batch_size: int = 32          # rows per step
    lr: float = 5e-5              # peak learning rate (BERT: 2e-5 .. 5e-5)
    warmup: float = 0.1           # warm-up as a fraction of the steps (BERT: 10%)
    weight_decay: float = 0.01    # AdamW decoupled weight decay (not on biases and LayerNorm)
    max_grad_norm: float = 1.0    # gradient clipping; 0 = off
    dropout: float = -1.0         # hidden/attention dropout for the run; < 0 keeps the checkpoint's
    seed: int = 1337              # shuffling and the classifier's initialisation
    device: str = "auto"          # auto (cuda if present) | cpu | cuda
    save: str = ""                # write the fine-tuned classifier (+ tokenizer, labels.json) here
    # --- distillation (used when --teacher is given)
    teacher: str = ""             # a fine-tuned classifier directory (from --save) to distil from
    unlabeled: str = ""           # text file, one document per line: the distillation inputs
    distill_loss: str = "mse"     # mse: on logits (Tang et al.) | soft_ce: cross-entropy at temperature
    temperature: float = 2.0      # soft_ce temperature T (the loss is scaled by T^2, as in Hinton et al.)
    student_layers: int = 0       # keep this many evenly spaced encoder layers of --model; 0 = all


def parse_args(argv):
    """--key=value overrides into FinetuneSettings (train.py's typed parser); --help lists them."""
    return train.parse_args(argv, FinetuneSettings(), usage=[
        "usage: python finetune.py --model=DIR --train=TSV --test=TSV [--key=value ...]"])


# ----------------------------------------------------------------------------------------------------
# 2. Data
# ----------------------------------------------------------------------------------------------------
def _column(header, wanted, path, what):
    """Index of a column given by header name or 0-based index (as a string or int)."""
    if isinstance(wanted, int) or str(wanted).isdigit():
        i = int(wanted)
        if i >= len(header):
            raise ValueError(f"{path}: {what} column index {i} is out of range; the header has "
                             f"{len(header)} columns: {header}")
        return i
    if wanted not in header:
        raise ValueError(f"{path}: no {what} column named {wanted!r}; the header has {header}")
    return header.index(wanted)


def read_tsv(path, text_column="text", label_column="label"):
    """(text, label) string pairs of a tab-separated file whose first line is a header.

    Lines are split on tabs by hand, not parsed as CSV: NSMC reviews contain bare quotes. Rows with too
    few fields or an empty text are skipped (and counted in the warning); an empty file, a missing
    column or a file with no usable rows raises."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TSV file not found: {path}")
    lines = train.read_text(path, encoding="utf-8-sig").split("\n")  # (\r\n and \r are \n already)
    header_line = lines[0] if lines else ""
    if not header_line.strip():
        raise ValueError(f"{path} is empty (expected a header line, then one row per example)")
    header = header_line.split("\t")
    ti = _column(header, text_column, path, "text")
    li = _column(header, label_column, path, "label")
    rows, skipped = [], 0
    for line in lines[1:]:
        parts = line.split("\t")
        if len(parts) <= max(ti, li) or not parts[ti].strip() or not parts[li].strip():
            skipped += line.strip() != ""  # blank lines are not worth a warning
            continue
        rows.append((parts[ti].strip(), parts[li].strip()))
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} rows with missing fields or empty text", stacklevel=2)
    if not rows:
        raise ValueError(f"{path} has a header but no usable rows")
    return rows


def label_map(rows):
    """{label string: id}, ids in sorted label order (so '0' -> 0, '1' -> 1 for NSMC). Needs >= 2."""
    labels = sorted({label for _, label in rows})
    if len(labels) < 2:
        raise ValueError(f"classification needs at least 2 classes; the training rows only have {labels}")
    return {label: i for i, label in enumerate(labels)}


def encode_rows(rows, tok, max_len, labels=None):
    """[(ids, label id or None)]: [CLS] text [SEP] (RoBERTa: <s> text </s>), the text cut to fit
    max_len. labels=None (unlabeled text, for distillation) gives label None; a label not in `labels`
    raises (a test set must not invent classes)."""
    if max_len < 3:
        raise ValueError(f"max_len must be >= 3, got {max_len}")
    texts = [r if isinstance(r, str) else r[0] for r in rows]
    out = []
    for row, ids in zip(rows, tok.encode_batch(texts)):
        y = None
        if labels is not None:
            if row[1] not in labels:
                raise ValueError(f"label {row[1]!r} was not seen in the training rows {sorted(labels)}")
            y = labels[row[1]]
        out.append(([tok.cls_id] + ids[:max_len - 2] + [tok.sep_id], y))
    return out


def collate(examples, pad_id):
    """Pad a list of (ids, label) to the longest row: input_ids and attention_mask (B, T), labels (B,)
    when every example has one."""
    T = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, (ids, _) in enumerate(examples):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        mask[i, :len(ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if all(y is not None for _, y in examples):
        batch["labels"] = torch.tensor([y for _, y in examples])
    return batch


# ----------------------------------------------------------------------------------------------------
# 3. The loop
# ----------------------------------------------------------------------------------------------------
def distill_loss(student_logits, teacher_logits, kind="mse", temperature=2.0):
    """Distance of the student's logits (B, C) from the teacher's (B, C).
    mse:     mean squared error on the raw logits (Tang et al. 2019): keeps the teacher's scale.
    soft_ce: cross-entropy between softmax(teacher / T) and softmax(student / T), times T^2.
    subtle: the T^2 keeps the gradient's size independent of T (Hinton et al. 2015, section 2): the
    gradient of the soft term shrinks as 1/T^2 when T grows."""
    s, t = student_logits.float(), teacher_logits.float()
    if kind == "mse":
        return F.mse_loss(s, t)
    if kind == "soft_ce":
        return -(F.softmax(t / temperature, -1) * F.log_softmax(s / temperature, -1)).sum(-1).mean() \
            * temperature ** 2
    raise ValueError(f"distill_loss must be 'mse' or 'soft_ce', got {kind!r}")


def _groups(model, weight_decay):
    return [{k: v for k, v in g.items() if k != "lr_scale"}
            for g in train.default_groups(model, weight_decay)]


def finetune(model, examples, s, pad_id, *, teacher=None, desc="fine-tune", on_epoch=None):
    """Train `model` (a BertForSequenceClassification) on `examples` = [(ids, label id)] and return
    the per-step losses. With `teacher`, distil instead: examples may be unlabeled, and the loss is
    distill_loss(student, teacher) on each batch (s.distill_loss, s.temperature).

    The order of the rows is a fixed permutation per epoch seeded by s.seed, so two runs with the same
    settings see the same batches. on_epoch(epoch) is called after each full pass over the rows (epoch =
    1, 2, ...; e.g. to pick the number of epochs on a dev split within one schedule)."""
    if not examples:
        raise ValueError("no training examples")
    device = train.pick_device(s.device)
    model.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
    n = len(examples)
    per_epoch = math.ceil(n / s.batch_size)
    steps = s.steps if s.steps > 0 else max(1, math.ceil(s.epochs * per_epoch))
    warmup_steps = max(1, int(s.warmup * steps))
    optimizer = torch.optim.AdamW(_groups(model, s.weight_decay), lr=s.lr)
    losses = []
    bar = tqdm(range(steps), desc=desc, dynamic_ncols=True, leave=False)
    for step in bar:
        epoch, pos = divmod(step, per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(s.seed * 1_000_003 + epoch))
        idx = perm[pos * s.batch_size:(pos + 1) * s.batch_size]
        batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx], pad_id).items()}
        for group in optimizer.param_groups:
            group["lr"] = s.lr * train.lr_at(step, steps, warmup_steps)
        if teacher is None:
            loss = model(**batch).loss
        else:
            labels = batch.pop("labels", None)  # noqa: F841 (pure distillation ignores them)
            with torch.no_grad():
                target = teacher(**batch).logits  # (B, C)
            loss = distill_loss(model(**batch).logits, target, s.distill_loss, s.temperature)
        if not math.isfinite(loss.item()):
            raise train.NonFiniteLossError(f"loss is {loss.item()} at step {step + 1} ({desc})")
        loss.backward()
        if s.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if on_epoch is not None and (step + 1) % per_epoch == 0:
            on_epoch((step + 1) // per_epoch)
    bar.close()
    return losses


@torch.no_grad()
def predict(model, examples, pad_id, batch_size=64, device="cpu"):
    """Logits (N, C) of every example, in order; the model is left in the mode it was in."""
    was = model.training
    model.eval()
    device = train.pick_device(device) if isinstance(device, str) else device
    model.to(device)
    out = []
    # Rows sorted by length so each batch pads little; put back in order at the end.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    for i in range(0, len(order), batch_size):
        batch = collate([(examples[j][0], None) for j in order[i:i + batch_size]], pad_id)
        out.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu())
    model.train(was)
    logits = torch.cat(out)  # (N, C), sorted by length
    return logits[torch.argsort(torch.tensor(order))]


def finetune_best_epoch(model, train_examples, dev_examples, test_examples, s, pad_id, desc="fine-tune"):
    """Fine-tune for s.epochs, scoring dev and test accuracy after every epoch; returns the dev-best
    epoch's {"epoch", "dev_acc", "test_acc"} (the first of equals: the fewest epochs) and the whole
    "curve". The epoch count is thereby chosen on the dev rows within one schedule."""
    device = train.pick_device(s.device)
    curve = []

    def on_epoch(epoch):
        curve.append({"epoch": epoch, "dev_acc": accuracy(model, dev_examples, pad_id, device=device),
                      "test_acc": accuracy(model, test_examples, pad_id, device=device)})
        model.train()
    finetune(model, train_examples, s, pad_id, desc=desc, on_epoch=on_epoch)
    return {**max(curve, key=lambda c: c["dev_acc"]), "curve": curve}


def accuracy(model, examples, pad_id, batch_size=64, device="cpu"):
    """Share of examples whose argmax logit is the label."""
    logits = predict(model, examples, pad_id, batch_size, device)
    labels = torch.tensor([y for _, y in examples])
    return (logits.argmax(-1) == labels).float().mean().item()


# ----------------------------------------------------------------------------------------------------
# 4. A smaller student
# ----------------------------------------------------------------------------------------------------
def shrink(model, num_layers):
    """Keep `num_layers` evenly spaced encoder layers of `model` (first and last included when there
    are 2 or more), like DistilBERT's one-in-two. Changes the model in place and returns it."""
    layers = model.bert.layers
    L = len(layers)
    if not 1 <= num_layers <= L:
        raise ValueError(f"student_layers must be in 1..{L}, got {num_layers}")
    keep = [round(i * (L - 1) / max(num_layers - 1, 1)) for i in range(num_layers)] if num_layers > 1 else [0]
    model.bert.layers = torch.nn.ModuleList([layers[i] for i in keep])
    model.config.num_hidden_layers = num_layers
    return model


def load_classifier(directory, num_labels, dropout=-1.0, student_layers=0):
    """BertForSequenceClassification from any HF-format directory (a masked-LM checkpoint gets a fresh
    pooler and classifier, which from_pretrained names in a warning we do not need to repeat); an XLNet
    or T5 folder gets the mean-pooling head (section 5)."""
    if _model_type(directory) in ("xlnet", "t5"):
        if student_layers:
            raise ValueError(f"{directory}: --student_layers shrinks BERT-family encoders only")
        return MeanPoolClassifier(load_pretrained(directory), num_labels, 0.1 if dropout < 0 else dropout)
    over = {"num_labels": num_labels}
    if dropout >= 0:
        over.update(hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bert.BertForSequenceClassification.from_pretrained(directory, **over)
    return shrink(model, student_layers) if student_layers else model


# ----------------------------------------------------------------------------------------------------
# 5. One head for every encoder
# ----------------------------------------------------------------------------------------------------
class MeanPoolClassifier(torch.nn.Module):
    """The mean of the final hidden states over the real tokens -> dropout -> linear, on any pretrained
    model here: BERT/RoBERTa/ALBERT, ELECTRA's discriminator, XLNet (its content stream), T5 (its
    encoder). Each family has its own head in HF (BERT's pooler on [CLS], XLNet's last token, T5's
    decoder); comparing pretraining objectives needs one head for all, so that a difference in
    accuracy is the encoder's and not the head's. The whole model trains, the unused LM heads idle."""

    def __init__(self, model, num_labels, dropout=0.1):
        super().__init__()
        self.model, self.config = model, model.config
        self.dropout = torch.nn.Dropout(dropout)
        width = getattr(model.config, "d_model", None) or model.config.hidden_size  # (XLNet, T5 | BERT)
        self.classifier = torch.nn.Linear(width, num_labels)
        self.classifier.weight.data.normal_(0.0, 0.02)
        self.classifier.bias.data.zero_()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        keep = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        h = encode(self.model, input_ids, keep)  # (B, T, H)
        w = keep.unsqueeze(-1).to(h.dtype)  # (B, T, 1): 1 at real tokens
        logits = self.classifier(self.dropout((h * w).sum(1) / w.sum(1).clamp(min=1)))  # (B, C)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels.view(-1))
        return bert.ClassifierOutput(loss, logits)

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())


def encode(model, input_ids, attention_mask):
    """The final hidden states (B, T, H) of any pretrained model here (see MeanPoolClassifier)."""
    if isinstance(model, xlnet.XLNetLMHeadModel):
        return model.streams(input_ids, attention_mask)[0]
    if isinstance(model, t5.T5ForConditionalGeneration):
        return model.encoder(input_ids, attention_mask)
    return model.bert(input_ids, attention_mask)


def _model_type(directory):
    path = Path(directory) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None  # (from_pretrained then says what is wrong with the folder)


def load_pretrained(directory):
    """The pretrained model in an HF folder, by its config's model_type (any family train.py saves)."""
    kind = _model_type(directory)
    if kind == "xlnet":
        return xlnet.XLNetLMHeadModel.from_pretrained(directory)
    if kind == "t5":
        return t5.T5ForConditionalGeneration.from_pretrained(directory)
    cls = bert.ElectraForPreTraining if kind == "electra" else bert.BertForMaskedLM
    with warnings.catch_warnings():  # (a head the folder lacks: unused here)
        warnings.simplefilter("ignore")
        return cls.from_pretrained(directory)


# ----------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------
def main(argv=None):
    s = parse_args(sys.argv[1:] if argv is None else argv)
    if not s.model:
        raise ValueError("--model=DIR is required (an HF-format checkpoint directory)")
    torch.manual_seed(s.seed)
    has_tokenizer = lambda d: any((Path(d) / f).exists() for f in ("vocab.txt", "vocab.json"))  # noqa: E731
    # The tokenizer: --tokenizer_dir, else the model's own, else (a bare student) the teacher's.
    tok = tokenizers_mod.load_tokenizer(s.tokenizer_dir or (s.model if has_tokenizer(s.model) or not s.teacher
                                                            else s.teacher))
    if s.teacher:  # distillation: the teacher brings the labels
        labels = json.loads((Path(s.teacher) / "labels.json").read_text())
        teacher = load_classifier(s.teacher, len(labels))
        model = load_classifier(s.model, len(labels), s.dropout, s.student_layers)
        # Teacher and student read the same ids, so they must share one vocabulary.
        for d in [s.teacher] + ([s.model] if has_tokenizer(s.model) else []):
            if has_tokenizer(d) and len(tokenizers_mod.load_tokenizer(d)) != len(tok):
                raise ValueError(f"{d} has another vocabulary ({len(tokenizers_mod.load_tokenizer(d))} "
                                 f"tokens) than the tokenizer in use ({len(tok)}): distillation needs one "
                                 f"shared tokenizer")
        if teacher.config.vocab_size != model.config.vocab_size:
            raise ValueError(f"teacher vocabulary {teacher.config.vocab_size} != student vocabulary "
                             f"{model.config.vocab_size}: distillation needs one shared tokenizer")
        if not s.unlabeled:
            raise ValueError("--teacher needs --unlabeled=FILE (text to distil on, one document per line)")
        docs = train.read_documents(s.unlabeled)
        examples = encode_rows(docs, tok, s.max_len)
        print(f"distilling {s.teacher} into {s.model} ({model.num_parameters():,} vs "
              f"{teacher.num_parameters():,} parameters) on {len(docs):,} documents, {s.distill_loss} loss")
    else:
        if not s.train:
            raise ValueError("--train=TSV is required")
        rows = read_tsv(s.train, s.text_column, s.label_column)
        labels = label_map(rows)
        model = load_classifier(s.model, len(labels), s.dropout, s.student_layers)
        examples = encode_rows(rows, tok, s.max_len, labels)
        teacher = None
        print(f"fine-tuning {s.model} ({model.num_parameters():,} parameters) on {len(rows):,} rows, "
              f"{len(labels)} classes {list(labels)}")
    if s.save and isinstance(model, MeanPoolClassifier):  # (said before training, not after)
        raise ValueError(f"--save keeps BERT-family classifiers (HF's layout); {s.model} is "
                         f"{_model_type(s.model)}, whose mean-pooling head here has none")
    losses = finetune(model, examples, s, tok.pad_id, teacher=teacher,
                      desc="distil" if teacher is not None else "fine-tune")
    print(f"training loss: first {losses[0]:.4f}, last {losses[-1]:.4f} ({len(losses)} steps)")
    if s.test:
        test = encode_rows(read_tsv(s.test, s.text_column, s.label_column), tok, s.max_len, labels)
        acc = accuracy(model, test, tok.pad_id, device=s.device)
        line = f"test accuracy: {acc:.2%} on {len(test):,} rows"
        if teacher is None:  # the floor: always answering the training rows' most frequent label
            top = Counter(y for _, y in examples).most_common(1)[0][0]
            line += f"; majority class {sum(y == top for _, y in test) / len(test):.2%}"
        print(line)
        if teacher is not None:
            print(f"teacher accuracy: {accuracy(teacher, test, tok.pad_id, device=s.device):.2%}")
    if s.save:
        out = Path(s.save)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tok.save(out)
        (out / "labels.json").write_text(json.dumps(labels, ensure_ascii=False))
        # HF's names for the classes (pipelines print them instead of LABEL_0, LABEL_1)
        config = json.loads((out / "config.json").read_text(encoding="utf-8"))
        config.update(id2label={str(i): label for label, i in labels.items()}, label2id=labels)
        (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"saved the classifier to {out}")
    return model


def _demo():
    """No arguments: a self-contained example on a toy task written on the spot (no files needed)."""
    import random
    import tempfile
    rng = random.Random(0)
    good = ["great", "lovely", "wonderful", "superb"]
    bad = ["awful", "boring", "terrible", "dreadful"]
    rows = [(f"the film was {rng.choice(w)} and the cast was {rng.choice(w)}", lab)
            for _ in range(64) for w, lab in ((good, "pos"), (bad, "neg"))]
    with tempfile.TemporaryDirectory() as d:
        tok = tokenizers_mod.BPETokenizer.train([t for t, _ in rows], vocab_size=300)
        cfg = bert.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=40, pad_token_id=tok.pad_id,
                              model_type="roberta", type_vocab_size=1, layer_norm_eps=1e-5)
        torch.manual_seed(0)
        bert.BertForMaskedLM(cfg).save_pretrained(d)  # a (random) "pretrained" model directory
        tok.save(d)
        for name, part in (("train.tsv", rows[:96]), ("test.tsv", rows[96:])):
            Path(d, name).write_text("text\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in part))
        main([f"--model={d}", f"--train={d}/train.tsv", f"--test={d}/test.tsv", "--epochs=10", "--lr=3e-3",
              "--batch_size=16", "--device=cpu"])
    # Expected output (after a progress bar):
    # fine-tuning /tmp/... (29,186 parameters) on 96 rows, 2 classes ['neg', 'pos']
    # training loss: first 0.6934, last 0.0290 (60 steps)
    # test accuracy: 100.00% on 32 rows


def cli(argv=None):
    """main() for the command line: a user's mistake is one line "error: ..." and exit status 2."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        _demo() if not argv else main(argv)
    except (ValueError, FileNotFoundError, train.NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
