"""
The demo: the whole XPT story on the project's own toy corpus, in five printed stages.

    python train.py                    # runs this demo (train.py's default task)
    python demo.py                     # the same
    python demo.py --preset=tiny       # seconds: the smoke test's sizes
    python demo.py --stage=compare     # one stage: tokenizers | source | xpt | scratch | compare
    python demo.py --help              # every setting (DemoSettings: train.py's and the demo's own)

  1. tokenizers: an English and a Korean BPE (or WordPiece) learned from data/en_train.txt (+ the prose of
     the user's own Python standard library) and data/ko_train.txt;
  2. the English source model: the shipped data/source_en (or --source=pretrain: train.run_mlm here);
  3. XPT: train.run_xpt from the source to Korean, phase 1 then phase 2;
  4. the baseline: the same architecture from scratch, the same steps, data, masks and evaluation;
  5. the comparison on held-out Korean, every loss next to its unigram floor (results.json, a plot).

Why a file of its own: train.py is what a reader opens to learn masked-LM training; the demo is a story
told with it (presets, stages, caches, a source card, a reading of the numbers), and would bury the loop.
It uses only train.py's public functions. Every stage is cached under --out_dir; a rerun reuses them.
"""
import dataclasses
import functools
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import bert
import predict
import tokenizer as tokenizers_mod
import train
from train import (CheckpointMismatchError, build_datasets, evaluate, floors, get_tokenizer,  # noqa: F401
                   learned_context, pick_device, read_documents, read_log, run_mlm, run_xpt)

HERE = Path(__file__).resolve().parent

# Sizes of the demo. "default" is what `python train.py` runs (minutes on a laptop CPU); "tiny" is the
# smoke test's. Keys that are Settings fields fill in the settings not given on the command line; the
# others are the demo's own. Every number of "default" was chosen on a dev split carved from the training
# text (every 10th document), never on the held-out files that the README reports.
PRESETS = {
    "default": dict(
        # the source: the shipped English model (data/source_en), made by --source=pretrain with the
        # recipe below; --source=pretrain or --stage=source runs that recipe here instead
        source="shipped", hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512,
        source_steps=15000, source_lr=1e-3, en_vocab={"bpe": 4000, "wordpiece": 4000},
        # every run: 40% of the tokens masked (Wettig et al. 2023, arXiv:2202.08005: more signal per
        # step; evaluation still masks ~1/7 at a time), sequences of 32 tokens, 64 per batch
        mlm_probability=0.4, max_len=32, batch_size=64,
        # Korean: the same steps, data, masks and evaluation for both arms, each at its own tuned lr
        ko_vocab={"bpe": 2000, "wordpiece": 3000},
        # peak lr of each arm: the best of 1e-3, 2e-3, 3e-3 on the dev split (XPT 4.07 / 4.18 / 4.63 at
        # 3e-3 / 2e-3 / 1e-3; scratch 6.74 at 2e-3, 6.78 at 3e-3, 6.79 at 1e-3; floor 6.78)
        phase1_steps=200, phase2_steps=400, lr=3e-3, scratch_lr=2e-3, eval_every=100),
    "tiny": dict(
        source="pretrain", hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
        source_steps=30, source_lr=1e-3, en_vocab={"bpe": 400, "wordpiece": 400},
        ko_vocab={"bpe": 400, "wordpiece": 1400}, max_len=32, batch_size=8, mlm_probability=0.15,
        phase1_steps=10, phase2_steps=20, lr=1e-3, scratch_lr=1e-3, eval_every=10, max_docs=150),
}
SHIPPED_SOURCE = HERE / "data" / "source_en"
# How the shipped source is rebuilt (the README and data/README.md say the same):
REBUILD_SOURCE = ("python train.py --stage=source && rm -rf data/source_en "
                  "&& cp -r out/demo/source/model data/source_en")


def english_extra_docs():
    """More English for the source model, read at run time from the user's own Python installation
    (never copied into the repo): the prose of the standard library's language reference
    (pydoc_data/topics.py, ~460 KB) and the standard library's docstrings (~1.2 MB), paragraphs of more
    than 40 characters. Returns [] for a part that is missing. (A new list each call; the parsing of
    ~800 files, ~10 s, is done once per process.)"""
    return list(_english_extra_docs())


@functools.cache
def _english_extra_docs():
    docs = []
    try:
        from pydoc_data.topics import topics
    except ImportError:
        topics = {}
    texts = list(topics.values())
    import ast
    import sysconfig
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in sorted(root.rglob("*.py")):
        if {"site-packages", "test", "tests", "idlelib"} & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                texts.append(ast.get_docstring(node) or "")
    for text in texts:
        for para in text.split("\n\n"):
            para = " ".join(para.split())
            if len(para) > 40:
                docs.append(para)
    return tuple(docs)


def _piece(tok, i):
    """How token i reads: its text, or, for a byte-level piece of a character (which alone decodes to
    U+FFFD), its bytes in hex (<EC><98>)."""
    text = tok.decode([i])
    if "\ufffd" not in text or tok.kind != "bpe":
        return text
    return "".join(f"<{tokenizers_mod.BYTE_DECODER[c]:02X}>" for c in tok.id_to_token(i))


def _stage(title, text):
    print(f"\n=== {title} ===")
    print(text)


def _write_lines(path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(d + "\n" for d in docs)
    if not path.exists() or path.read_text(encoding="utf-8") != body:
        path.write_text(body, encoding="utf-8")
    return path


def _retrying(fn, what, directory):
    """Run a cached stage; if its cache was made from other inputs, say so and redo the stage."""
    try:
        return fn()
    except CheckpointMismatchError as e:
        why = str(e).splitlines()[1].strip()
        print(f"{what}: cached result in {directory} was made from other inputs ({why} ...); training again")
        import shutil
        shutil.rmtree(directory)
        return fn()


@dataclasses.dataclass
class DemoSettings(train.Settings):
    preset: str = "default"       # demo size: default (~minutes on a laptop CPU) | tiny (seconds, for tests)
    stage: str = "all"            # demo stage: all | tokenizers | source | xpt | scratch | compare
    source_steps: int = 1500      # pretraining steps of the English source model (--source=pretrain)
    source_lr: float = 0.0        # peak learning rate of the source pretraining; 0 = --lr
    scratch_lr: float = 0.0       # peak learning rate of the scratch arm; 0 = --lr


USAGE = ["usage: python demo.py [--key=value ...]   (or python train.py with no --task)",
         "(--preset fills in model and step sizes that are not given on the command line)"]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    s = train.check_settings(train.parse_args(argv, DemoSettings(), USAGE))
    if s.task != "demo":
        raise ValueError(f"demo.py runs the demo; for --task={s.task} use python train.py --task={s.task}")
    with train.output_lock(s.out_dir):
        run_demo(s, given=train.runs.given_names(argv))


def cli(argv=None):
    return train.runs.command(main, argv)


def run_demo(s, given=()):
    """The demo, stage by stage. `given`: the settings named on the command line (the preset does not
    override them)."""
    t0 = time.time()
    s, p, out = configure(s, given)
    files = corpus_files(s, p, out)
    en_tok, ko_tok, source_dir = stage_tokenizers(s, p, out, files)
    if s.stage == "tokenizers":
        return
    source = stage_source(s, out, files, en_tok, source_dir)
    if source is None:
        return
    train_data, valid_data = build_datasets(s, ko_tok, files["ko_train"], files["ko_valid"], out / "cache")
    scratch_s = dataclasses.replace(s, lr=s.scratch_lr or s.lr)
    stage_arms(s, scratch_s, out, source_dir, ko_tok, train_data, valid_data)
    if s.stage in ("all", "compare"):
        ko_floors = floors(ko_tok, train_data, valid_data)
        stage_compare(s, scratch_s, out, source, ko_floors, t0)


def configure(s, given):
    """Check the demo's settings and fill in the preset. Returns (settings, preset, output folder)."""
    p = PRESETS.get(s.preset)
    if p is None:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {s.preset!r}")
    stages = ("all", "tokenizers", "source", "xpt", "scratch", "compare")
    if s.stage not in stages:
        raise ValueError(f"stage must be one of {stages}, got {s.stage!r}")
    if s.packing != "full" or s.tokenizer_dir:
        raise ValueError("the demo trains its own tokenizers and masked LMs: drop --packing and "
                         "--tokenizer_dir (they are for --task=mlm / --task=xpt)")
    if s.tokenizer not in ("bpe", "wordpiece"):
        raise ValueError(f"tokenizer must be 'bpe' or 'wordpiece', got {s.tokenizer!r}")
    out = Path(s.out_dir) / ("demo" if s.preset == "default" else f"demo-{s.preset}")
    # The preset fills in every setting the user did not give on the command line.
    names = {f.name for f in fields(s)}
    s = dataclasses.replace(s, **{k: v for k, v in p.items() if k in names and k not in given})
    if "lr" in given and "scratch_lr" not in given:
        s = dataclasses.replace(s, scratch_lr=s.lr)  # one learning rate given: both arms use it
    if s.stage == "source":
        if s.source not in ("", "shipped", "pretrain"):
            print(f"(--stage=source pretrains the English source here; --source={s.source} is not used)")
        s = dataclasses.replace(s, source="pretrain")
    return s, p, out


def corpus_files(s, p, out):
    """The demo's text files under out/corpus: {"en_train": a function (the source's English, ~2 MB
    with the stdlib's prose: written only when needed), "en_valid", "ko_train", "ko_valid"}."""
    data, max_docs = HERE / "data", p.get("max_docs")

    @functools.cache
    def english_text():
        full = s.preset == "default" or s.source == "shipped"  # the shipped source's text, any preset
        docs = read_documents(data / "en_train.txt")[:None if full else max_docs]
        return _write_lines(out / "corpus" / "en_train.txt", docs + english_extra_docs() if full else docs)
    files = {"en_train": english_text}
    for name in ("en_valid", "ko_train", "ko_valid"):
        docs = read_documents(data / f"{name}.txt")[:max_docs]
        files[name] = _write_lines(out / "corpus" / f"{name}.txt", docs)
    return files


def stage_tokenizers(s, p, out, files):
    """1. An English (only when the source is pretrained here) and a Korean tokenizer; where the source
    model is. Returns (English tokenizer or None, Korean tokenizer, source folder)."""
    en_vocab, ko_vocab = p["en_vocab"][s.tokenizer], p["ko_vocab"][s.tokenizer]
    if s.source == "pretrain":
        source_dir = out / "source" / "model"
        src_text = f"English {en_vocab} tokens from {files['en_train']().stat().st_size / 1e3:.0f} KB, "
    elif s.source == "shipped":
        source_dir = SHIPPED_SOURCE
        src_text = f"English: the shipped source model's own (in {source_dir.relative_to(HERE)}), "
    else:
        source_dir = Path(s.source)
        src_text = f"English: the source model's own (in {source_dir}), "
    _stage("1. tokenizers",
           f"Each language gets its own {s.tokenizer} vocabulary, learned from its own text: {src_text}"
           f"Korean {ko_vocab} tokens from {files['ko_train'].stat().st_size / 1e3:.0f} KB.\n"
           f"XPT never shares a vocabulary between the languages: the Korean model gets new word embeddings.")
    en_tok = get_tokenizer(s, read_documents(files["en_train"]()), out, "tokenizer_en", vocab_size=en_vocab) \
        if s.source == "pretrain" else None
    ko_tok = get_tokenizer(s, read_documents(files["ko_train"]), out, "tokenizer_ko", vocab_size=ko_vocab)
    sample = "오늘은 날씨가 정말 좋아서 공원에 산책하러 갔어요."
    pieces = [_piece(ko_tok, i) for i in ko_tok.encode(sample)]
    print(f"Korean sample, as {len(pieces)} tokens: {' | '.join(pieces)}")
    return en_tok, ko_tok, source_dir


def stage_source(s, out, files, en_tok, source_dir):
    """2. The English source model: pretrained here (--source=pretrain) or the shipped/given one, then
    scored next to its floor. Returns its summary, or None when the demo ends with this stage."""
    src_s = dataclasses.replace(s, steps=s.source_steps, lr=s.source_lr or s.lr, tokenizer_dir="",
                                eval_every=max(s.eval_every, s.source_steps // 30),
                                ckpt_every=max(s.ckpt_every, s.source_steps // 30))
    want = s.stage in ("all", "source")
    if s.source == "pretrain" and want:
        _stage("2. the English source model (L_S)",
               f"A small masked LM ({s.num_layers} layers, hidden {s.hidden_size}) pretrained on English for "
               f"{s.source_steps} steps. It stands in for the big English model that XPT starts from.")
        en_train = files["en_train"]()
        _retrying(lambda: run_mlm(src_s, out / "source", en_train, files["en_valid"], en_tok,
                                  desc="English source"), "source", out / "source")
        _write_source_card(src_s, out / "source", en_train, files["en_valid"])
    elif want:
        _stage("2. the English source model (L_S)",
               f"The English masked LM that XPT starts from, in {source_dir}"
               + (f" (shipped with the project: a small model pretrained by\n"
                  f"`python train.py --stage=source`, {s.source_steps} steps; --source=pretrain runs that "
                  f"stage here)" if s.source == "shipped" else "")
               + ". It stands in for the big English model of the paper.")
    if s.stage == "source":
        print(f"\nthe source model is in {source_dir}; to make it the shipped one: "
              f"rm -rf {SHIPPED_SOURCE} && cp -r {source_dir} {SHIPPED_SOURCE}")
        return None
    if not (source_dir / "config.json").exists():
        raise FileNotFoundError(f"no source model in {source_dir}: run the 'source' stage first "
                                f"(python train.py --stage=source)")
    longest = bert.BertConfig.from_json_file(source_dir / "config.json").max_len
    if s.max_len > longest:
        raise ValueError(f"--max_len={s.max_len} is longer than the source model's {longest} positions "
                         f"({source_dir}); use --max_len={longest} or less")
    if s.eval_batches:
        raise ValueError("the demo scores the whole held-out text (its floor covers all of it): "
                         "drop --eval_batches")
    return _source_summary(s, source_dir, files["en_train"](), files["en_valid"], out / "cache")


def stage_arms(s, scratch_s, out, source_dir, ko_tok, train_data, valid_data):
    """3. XPT and 4. scratch on the same Korean data, steps, masks and evaluation."""
    n_target = s.phase1_steps + s.phase2_steps
    if s.stage in ("all", "xpt"):
        _stage("3. XPT: English model -> Korean",
               "Keep the English encoder layers, add new Korean word embeddings and an implicit translation\n"
               f"layer at each end. Phase 1 ({s.phase1_steps} steps) trains only the new parts; phase 2 "
               f"({s.phase2_steps} steps) trains everything. Peak learning rate {s.lr:g}.")
        _retrying(lambda: run_xpt(s, source_dir, ko_tok, train_data, valid_data, out / "xpt", method="xpt"),
                  "xpt", out / "xpt")
    if s.stage in ("all", "scratch"):
        _stage("4. the baseline: Korean from scratch",
               f"The same architecture, randomly initialised, trained on the same Korean data for the same "
               f"{n_target} steps\n({n_target * s.batch_size * s.max_len:,} token slots, the same masks) and "
               f"evaluated on the same held-out text. Peak learning rate {scratch_s.lr:g} (tuned for scratch "
               f"like XPT's for XPT).")
        _retrying(lambda: run_xpt(scratch_s, source_dir, ko_tok, train_data, valid_data, out / "scratch",
                                  method="scratch"), "scratch", out / "scratch")


def stage_compare(s, scratch_s, out, source, ko_floors, t0):
    """5. Every loss next to its floor, the reading in words, results.json and the plot."""
    ko_floor, ko_acc_floor = ko_floors
    n_target = s.phase1_steps + s.phase2_steps
    _stage("5. comparison on held-out Korean",
           "Masked-LM loss at [MASK] positions (every held-out token masked once; lower is better), next to\n"
           f"the unigram floor: the loss of always guessing the training-token frequencies, "
           f"{ko_floor:.3f} here.")
    results = {}
    for arm, lr in (("xpt", s.lr), ("scratch", scratch_s.lr)):
        evals = _read_evals(out / arm)
        results[arm] = {"final": evals[-1], "best_loss": min(e["eval_loss"] for e in evals), "lr": lr,
                        "curve": evals}
    _print_table(source, results, ko_floor, ko_acc_floor)
    fx, fs = results["xpt"]["final"]["eval_loss"], results["scratch"]["final"]["eval_loss"]
    print()
    print(_reading(fx, fs, ko_floor, n_target))
    _fill_examples(out, read_documents(out / "corpus" / "ko_valid.txt")[:3])
    summary = {"preset": s.preset, "tokenizer": s.tokenizer, "eval_masking": "mask-only",
               "unigram_loss": {"ko": ko_floor, "en": source["floor"]},
               "majority_accuracy": {"ko": ko_acc_floor, "en": source["acc_floor"]}, "source": source,
               "target_steps": n_target, "seconds": round(time.time() - t0, 1), "arms": results}
    bert.atomic_write(out / "results.json", json.dumps(summary, indent=1).encode())
    print(f"wrote {out / 'results.json'}")
    _plot(results, ko_floor, out / "learning_curve.png")


def _fill_examples(out, docs):
    """The models side by side on held-out sentences, one word masked (predict.py): a learner sees what
    "learned context" means, not only a loss."""
    models = {arm: predict.load(out / arm / "model") for arm in ("xpt", "scratch")}
    print("\nWhat each model fills in (held-out sentences, the third word replaced by one mask; top 3):")
    for doc in docs:
        words = doc.split(".")[0].split()[:6]
        if len(words) < 4:
            continue
        print(f"  {' '.join(words[:2] + ['<mask>'] + words[3:])}   (the word: {words[2]})")
        for arm, (model, tok) in models.items():
            [options] = predict.fill(model, tok, " ".join(words[:2] + ["<mask>"] + words[3:]), top_k=3)
            print(f"    {arm:8s} " + ", ".join(f"{w.strip() or repr(w)} {p:.0%}" for w, p in options))


def _print_table(source, results, ko_floor, ko_acc_floor):
    rows = [("", "loss", "best loss", "vs floor", "accuracy", "learned context")]
    rows.append(("English source", f"{source['final_loss']:.3f}",
                 f"{source['best_loss']:.3f}" if source["best_loss"] is not None else "-",
                 f"{source['final_loss'] - source['floor']:+.3f}", f"{source['acc']:.1%}",
                 learned_context(source["final_loss"], source["floor"])))
    for arm, r in results.items():
        f = r["final"]
        rows.append((f"Korean {arm}", f"{f['eval_loss']:.3f}", f"{r['best_loss']:.3f}",
                     f"{f['eval_loss'] - ko_floor:+.3f}", f"{f['eval_acc']:.1%}",
                     learned_context(f["eval_loss"], ko_floor)))
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)))
    print(f"(unigram floors: English {source['floor']:.3f}, Korean {ko_floor:.3f}; 'learned context: yes' = "
          f"more than 0.1 nat below the floor;\n accuracy floors, always guessing the most frequent token: "
          f"English {source['acc_floor']:.1%}, Korean {ko_acc_floor:.1%})")


def _reading(fx, fs, floor, steps):
    """What the final Korean numbers show, in words, and never more."""
    lines = []
    below_x, below_s = floor - fx, floor - fs
    if fx < fs:
        lines.append(f"After the same {steps} steps on the same Korean text, XPT's held-out loss is "
                     f"{fs - fx:.3f} nat below scratch's ({fx:.3f} vs {fs:.3f}).")
    else:
        lines.append(f"XPT does NOT beat scratch here: {fx:.3f} vs {fs:.3f} after the same {steps} steps.")
    for name, below, loss in (("XPT", below_x, fx), ("scratch", below_s, fs)):
        if learned_context(loss, floor) == "yes":
            lines.append(f"{name} is {below:.3f} nat below the unigram floor: it predicts masked Korean "
                         f"tokens from their context, not only from token frequencies.")
        else:
            lines.append(f"{name} is not clearly below the unigram floor ({-below:+.3f} nat): it has learned "
                         f"little beyond Korean token frequencies.")
    if fx < fs and learned_context(fx, floor) == "yes":
        lines.append("The reused English layers carry over: with the same Korean data and steps, XPT uses "
                     "context that scratch\nhas not learned yet (one seed, one size; the README gives the "
                     "spread over seeds).")
    return "\n".join(lines)


def _write_source_card(s, source_out, en_train, en_valid):
    """source.json next to a pretrained source model: how it was made and how it did (so that a shipped
    copy of the folder says it itself)."""
    evals = [r for r in read_log(source_out / "run" / "log.jsonl") if "eval_loss" in r]
    card = {"made_by": "python train.py --stage=source (train.run_mlm on English text)",
            "rebuild": REBUILD_SOURCE,
            "text": {"en_train": "data/en_train.txt + demo.english_extra_docs() (the Python standard "
                                 "library's pydoc_data/topics.py and docstrings, read at run time)"
                     if s.preset == "default" else "data/en_train.txt",
                     "train_bytes": en_train.stat().st_size,
                     "held_out": "data/en_valid.txt", "python": sys.version.split()[0]},
            "settings": {k: getattr(s, k) for k in ("hidden_size", "num_layers", "num_heads",
                                                     "intermediate_size", "steps", "lr", "batch_size",
                                                     "max_len", "warmup", "weight_decay", "dropout",
                                                     "mlm_probability", "seed", "tokenizer")},
            "eval_masking": "mask-only",
            "curve": [{"step": r["step"], "eval_loss": r["eval_loss"]} for r in evals]}
    bert.atomic_write(source_out / "model" / "source.json", (json.dumps(card, indent=1) + "\n").encode())


def _source_summary(s, source_dir, en_train, en_valid, cache):
    """The English source next to its floor: held-out English loss at [MASK] positions (evaluated here,
    with the source's own tokenizer) and the unigram floor of the same held-out text."""
    tok = tokenizers_mod.load_tokenizer(source_dir)
    device = pick_device(s.device)
    model = bert.BertForMaskedLM.from_pretrained(source_dir).to(device)
    s = dataclasses.replace(s, max_len=model.config.max_len)  # score it at its own sequence length
    train_data, valid = build_datasets(s, tok, en_train, en_valid, cache)
    r = evaluate(model, valid, mask_id=tok.mask_id, vocab_size=len(tok), special_ids=tok.special_ids,
                 batch_size=s.batch_size, device=device)
    floor, acc_floor = floors(tok, train_data, valid)
    card = source_dir / "source.json"
    curve = json.loads(card.read_text())["curve"] if card.exists() else []
    best = min([r["loss"]] + [e["eval_loss"] for e in curve]) if curve else None
    summary = {"dir": str(source_dir), "final_loss": r["loss"], "best_loss": best, "acc": r["acc"],
               "floor": floor, "acc_floor": acc_floor}
    how = f"made by `{REBUILD_SOURCE.split(' && ')[0]}`; see {card}" if card.exists() \
        else "an external checkpoint"
    print(f"\nEnglish source {source_dir} ({how}):\n  held-out English loss {r['loss']:.3f} at [MASK] "
          f"positions, unigram floor {floor:.3f} ({r['loss'] - floor:+.3f} nat): learned context: "
          f"{learned_context(r['loss'], floor)}")
    return summary


def _read_evals(arm_dir):
    """Held-out evaluations of a finished arm, across its phases (steps are counted from the arm's
    start in the logs already). An arm whose phases did not all finish is an error, not a result."""
    phase_dirs = sorted(Path(arm_dir).glob("phase*"))
    unfinished = [d.name for d in phase_dirs if not (d / "final.pt").exists()]
    if not phase_dirs or unfinished:
        raise FileNotFoundError(f"{arm_dir} has no finished run ({', '.join(unfinished) or 'nothing'} "
                                f"unfinished): run its stage first")
    evals = []
    for d in phase_dirs:
        evals += [{**r, "phase": int(d.name[5:])} for r in read_log(d / "log.jsonl") if "eval_loss" in r]
    return sorted(evals, key=lambda r: r["step"])


def _plot(results, floor, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(install matplotlib for a learning-curve plot)")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for arm, r in results.items():
        steps = [e["step"] for e in r["curve"]]
        axes[0].plot(steps, [e["eval_loss"] for e in r["curve"]], label=arm, marker=".")
        axes[1].plot(steps, [e["eval_acc"] for e in r["curve"]], label=arm, marker=".")
    axes[0].axhline(floor, color="black", linestyle="--", linewidth=1, label="unigram floor (no context)")
    p1 = [e["step"] for e in results.get("xpt", {}).get("curve", []) if e.get("phase") == 1]
    if p1:  # where XPT unfreezes the reused layers
        for ax in axes:
            ax.axvline(max(p1), color="grey", linestyle=":", label="XPT: phase 1 | phase 2")
    axes[0].set(xlabel="Korean training steps", ylabel="held-out MLM loss at [MASK] positions")
    axes[1].set(xlabel="Korean training steps", ylabel="held-out masked-token accuracy")
    for ax in axes:
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(cli())
