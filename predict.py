"""
Use a trained masked LM: fill in masked words, or score held-out text next to its floor.

    python predict.py --model=data/source_en "The cat <mask> on the mat."      # the top 5 fillers
    python predict.py --model=out/demo/xpt/model "오늘은 날씨가 <mask> 좋아서 산책했어요."
    python predict.py --model=DIR --text_file=FILE --corpus=TRAIN   # held-out loss at [MASK] + floor
    python predict.py --help

Any folder that train.py, demo.py or finetune.py wrote (or an HF BERT/RoBERTa masked LM with its
tokenizer files) works; an ELECTRA folder fills masks with its generator (DIR/generator). The mask may
be written <mask> or [MASK] whatever the tokenizer's; with byte-level BPE, the space before it belongs to
the masked word, as in training (RoBERTa's <mask> lstrip).

Why a file of its own: using a model is not training one. train.py stays the lecture on training; this
is what a reader runs afterwards, in the same few lines they would write themselves (load, encode, one
forward pass, softmax at the masked positions).
"""
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import torch

import bert
import runs
import tokenizer as tokenizers_mod
import train


@dataclass
class PredictSettings:
    model: str = ""               # a model folder (HF format, with its tokenizer files)
    top_k: int = 5                # fillers shown per masked position
    text_file: str = ""           # score this held-out text instead (masked-LM loss at [MASK] positions)
    corpus: str = ""              # with --text_file: the model's training text, for the unigram floor
    device: str = "cpu"           # cpu | cuda | auto


USAGE = ['usage: python predict.py --model=DIR "text with <mask>" ["more text" ...]',
         "       python predict.py --model=DIR --text_file=FILE [--corpus=TRAIN]"]


def load(model_dir, device="cpu"):
    """(masked LM in eval mode, tokenizer) of a model folder; ELECTRA: its generator fills the masks."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise FileNotFoundError(f"--model={model_dir}: no config.json there (a folder train.py wrote, e.g. "
                                f"out/model)")
    tok = tokenizers_mod.load_tokenizer(model_dir)
    if bert.BertConfig.from_json_file(model_dir / "config.json").model_type == "electra":
        if not (model_dir / "generator" / "config.json").exists():
            raise FileNotFoundError(f"{model_dir} is an ELECTRA discriminator without its generator/ folder: "
                                    f"it detects replaced tokens, it cannot fill masks")
        model = bert.ElectraForMaskedLM.from_pretrained(model_dir / "generator")
    else:
        model = bert.BertForMaskedLM.from_pretrained(model_dir)
    return model.to(runs.pick_device(device)).eval(), tok


def encode_with_masks(tok, text):
    """Ids of `text` between [CLS]/<s> and [SEP]/</s>, each <mask> or [MASK] one mask id.
    subtle: with byte-level BPE the space before a mask is dropped: in training, <mask> replaced the
    word's own 'Ġword' token, space included."""
    parts = text.replace("[MASK]", "<mask>").split("<mask>")
    if len(parts) == 1:
        raise ValueError(f"no <mask> (or [MASK]) in {text!r}: mark the word to fill in")
    ids = [tok.cls_id]
    for i, part in enumerate(parts):
        if i:
            ids.append(tok.mask_id)
        ids += tok.encode(part.rstrip(" ") if i < len(parts) - 1 and tok.kind == "bpe" else part)
    return ids + [tok.sep_id]


@torch.no_grad()
def fill(model, tok, text, top_k=5):
    """For each mask in `text`, the top_k (token, probability) pairs, best first."""
    ids = encode_with_masks(tok, text)
    if len(ids) > model.config.max_len:
        raise ValueError(f"{len(ids)} tokens: longer than the model's {model.config.max_len} positions")
    device = next(model.parameters()).device
    logits = model(torch.tensor([ids], device=device)).logits[0]  # (T, V)
    where = [i for i, t in enumerate(ids) if t == tok.mask_id]
    probs = torch.softmax(logits[where].float(), dim=-1)  # (masks, V)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return [[(tok.decode([int(i)]), float(p)) for p, i in zip(ps, idx)]
            for ps, idx in zip(top.values, top.indices)]


def score(model, tok, text_file, corpus="", device="cpu"):
    """The held-out masked-LM loss of a text file at [MASK] positions (train.evaluate), and the unigram
    floor when the training corpus is given. Returns (evaluation, floor or None)."""
    s = train.Settings(max_len=model.config.max_len)
    train_data, valid_data = train.build_datasets(s, tok, corpus or text_file, text_file)
    r = train.evaluate(model, valid_data, mask_id=tok.mask_id, vocab_size=len(tok),
                       special_ids=tok.special_ids, batch_size=32, device=runs.pick_device(device))
    return r, (train.floors(tok, train_data, valid_data)[0] if corpus else None)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    kinds = {f.name: f.type for f in fields(PredictSettings)}
    argv = runs.joined_args(argv, {k: {"str": str, "int": int}.get(v, v) for k, v in kinds.items()})
    texts = [a for a in argv if not a.startswith("--")]  # (the texts to fill: every other argument)
    p = runs.parse_args([a for a in argv if a.startswith("--")], PredictSettings(), USAGE)
    if not p.model:
        raise ValueError("--model=DIR is required (a folder train.py wrote, e.g. out/model)")
    if not texts and not p.text_file:
        raise ValueError('give a text with <mask> ("The cat <mask> on the mat.") or --text_file=FILE')
    if runs.device_problems(p.device):
        raise ValueError(runs.device_problems(p.device)[0])
    model, tok = load(p.model, p.device)
    for text in texts:
        print(text)
        for k, options in enumerate(fill(model, tok, text, p.top_k), 1):
            print(f"  mask {k}: " + ", ".join(f"{t.strip() or repr(t)} {pr:.1%}" for t, pr in options))
    if p.text_file:
        r, floor = score(model, tok, p.text_file, p.corpus, p.device)
        line = (f"{p.text_file}: held-out loss {r['loss']:.4f} at [MASK] positions, "
                f"masked-token accuracy {r['acc']:.1%}")
        if floor is not None:
            line += (f"; unigram floor of {p.corpus} {floor:.4f} ({r['loss'] - floor:+.3f} nat): "
                     f"learned context: {train.learned_context(r['loss'], floor)}")
        print(line)


def cli(argv=None):
    return runs.command(main, argv)


if __name__ == "__main__":
    raise SystemExit(cli())
    # python predict.py --model=data/source_en "The cat <mask> on the mat."   prints (the shipped source):
    # The cat <mask> on the mat.
    #   mask 1: ...
