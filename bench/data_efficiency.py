"""
The paper's claim, measured in miniature: how much Korean text does XPT save?

    python bench/data_efficiency.py --preset=tiny        # toy data from the repository, < 1 minute (the test)
    python bench/data_efficiency.py --preset=cpu         # real NSMC Korean on 2 cores (README: its time), resumable
    python bench/data_efficiency.py --preset=gpu         # the same design, bigger budgets (never run yet)
    python bench/data_efficiency.py --report=bench/results/data_efficiency_cpu.json   # the README's tables
    python bench/data_efficiency.py --help

Lee et al., "Exploring the Data Efficiency of Cross-Lingual Post-Training in Pretrained Language
Models", Applied Sciences 11(5):1974 (2021), report that XPT from an English model matches a Korean model
trained from scratch with up to 32x less Korean text. This script repeats that measurement:

  source    an English masked LM trained as one: the project's own data/source_en (python train.py
            --stage=source made it: held-out English loss 3.62 at [MASK] positions, unigram floor 7.06);
            --source=DIR takes any other HF-format masked-LM folder;
  budgets   Korean NSMC reviews (../shared/data/nsmc/unlabeled.txt, NSMC's test texts kept out), budgets
            4x apart over a 64x range, each a prefix of one seeded shuffle (a bigger budget holds the
            smaller ones); a dev split (early stopping, learning rates) and a test split (what is
            reported) cut from the front of the same shuffle, disjoint from every budget;
  tokenizer one Korean BPE for every budget and arm, learned from the largest budget's text (never the
            dev or test text): losses under different vocabularies are not comparable;
  training  phase 1 (XPT's frozen phase) a fixed number of steps; then phase 2, and scratch and the
            one-phase methods, train until the dev loss has not improved for `patience` evaluations
            (train.py --patience), the weights of the dev-best step kept; a step cap that the logs show
            is not what stops the runs (each run records whether it stopped early or at the cap);
  lr        the peak learning rate of xpt and of scratch is the best of a small grid on the dev split
            at one budget, seed 1 (train.py's warm-up and linear decay over the step cap); xpt's
            ablations, each differing from xpt in one part, take xpt's (gpu preset: every method its own);
  seeds     xpt and scratch with paired seeds at every budget (seed k: the same data order and masks
            for both), the other xpt.METHODS one seed each;
  loss      masked-LM loss on the test split at [MASK] positions only (train.evaluate: evaluation masks
            fixed by the data alone, the same task for every arm and seed), at the dev-best step;
  floors    the unigram loss of each budget (add-0.5 token frequencies of the budget, scored on the
            test split); for NSMC accuracy, the majority class, a bag-of-words logistic regression and a
            randomly initialised encoder fine-tuned like the others;
  accuracy  NSMC sentiment: the encoders of the preset's ft_methods and ft_budgets (cpu: xpt and
            scratch at the largest budget, every seed; gpu: every method and budget) fine-tuned on
            labelled train.tsv rows (texts also in test.tsv left out), lr and epoch chosen on a
            labelled dev split, tested on test.tsv rows;
  ratio     for each method and budget b: the budget B at which scratch's mean test loss (linear in
            log-budget between the grid's points) equals the method's mean, ratio = B / b, with its range
            over the paired seeds; beyond the grid it is "> 64x" (or "< 1x"), never extrapolated. A
            method beats scratch at a budget only when its mean loss is lower by more than twice the
            standard deviation of the paired differences.

Every run lives in its own folder under --out_dir, named by a hash of everything that defines it, with a
result.json (written atomically): a rerun skips finished runs and resumes unfinished ones from their
checkpoints, and changed settings run again in a new folder. --workers runs that many arms at once, one
thread each (for these small models, faster than one job using every core).
Outputs: results.json, data_efficiency.png (with matplotlib) and the markdown tables on stdout. A bad
setting or a missing input stops the command with "error: ..." and exit status 2.

Differs from the paper: budgets of kilobytes, not gigabytes; a 4-layer, 128-wide source; one ITL layer
at each end; 40% masking and 32-token sequences (the demo's recipe); NSMC accuracy only.
"""
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import multiprocessing
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import bert  # noqa: E402
import demo  # noqa: E402
import finetune  # noqa: E402
import prepare  # noqa: E402  (data/prepare.py)
import train  # noqa: E402
import xpt  # noqa: E402

PAPER_RATIO = 32
HEADLINE = ("xpt", "scratch")  # the arms with paired seeds

# Sizes of each preset. Budgets are UTF-8 bytes of Korean training text. Runs: batch x max_len tokens
# per step, 40% of them masked; evaluation on the dev split every eval_every global steps; phase 1
# phase1_steps; phase 2 (or a one-phase method) at most max_steps steps in all, stopped by `patience`.
PRESETS = {
    "tiny": dict(
        budgets=(5_000, 20_000), dev_lines=10, test_lines=20, ko_vocab=400, max_len=32,
        batch_size=8, mlm_probability=0.4, phase1_steps=2, max_steps=8, eval_every=4, patience=2,
        lr_grid=(3e-3,), lr_grid_methods=HEADLINE, lr_budget=5_000, seeds=(1, 2),
        methods=("scratch", "embeddings-only", "xpt"), labelled=100, ft_dev=50, test=0, ft_lr_grid=(1e-3,),
        ft_epochs=1, ft_batch=16, bow_l2=(1e-3, 1e-1), ft_methods=HEADLINE, ft_budgets=(20_000,), workers=1),
    "cpu": dict(
        budgets=(3_125, 12_500, 50_000, 200_000), dev_lines=150, test_lines=1000, ko_vocab=2000, max_len=32,
        batch_size=64, mlm_probability=0.4, phase1_steps=100, max_steps=2500, eval_every=50, patience=2,
        lr_grid=(1e-3, 3e-3), lr_grid_methods=HEADLINE, lr_budget=50_000, seeds=(1, 2, 3),
        methods=xpt.METHODS, labelled=5000, ft_dev=1000, test=2000, ft_lr_grid=(3e-4, 1e-3), ft_epochs=2,
        ft_batch=32, bow_l2=(1e-4, 1e-3, 1e-2), ft_methods=HEADLINE, ft_budgets=(200_000,), workers=2),
    "gpu": dict(
        budgets=(25_000, 100_000, 400_000, 1_600_000, 6_400_000), dev_lines=1000, test_lines=3000,
        ko_vocab=4000, max_len=32, batch_size=64, mlm_probability=0.4, phase1_steps=500, max_steps=20000,
        eval_every=100, patience=5, lr_grid=(5e-4, 1e-3, 3e-3), lr_grid_methods=xpt.METHODS, lr_budget=400_000,
        seeds=(1, 2, 3, 4, 5),
        methods=xpt.METHODS, labelled=10000, ft_dev=2000, test=5000, ft_lr_grid=(5e-5, 1e-4, 3e-4, 1e-3),
        ft_epochs=3, ft_batch=32, bow_l2=(1e-4, 1e-3, 1e-2), ft_methods=xpt.METHODS,
        ft_budgets=(25_000, 100_000, 400_000, 1_600_000, 6_400_000), workers=1),
}
PRESETS["gpu"]["seeds_all"] = True  # every method with every seed (the cpu preset: the headline arms only)


PRESET_FT_MAX_LEN = 32  # fine-tuning rows are cut to the source's 32 positions (NSMC reviews: ~25 tokens)


@dataclass
class BenchSettings:
    preset: str = "tiny"          # tiny (toy data, the test) | cpu (real NSMC, 2 cores) | gpu (the full sweep)
    out_dir: str = "out/data_efficiency"  # runs, corpora, results; a rerun resumes from here
    source: str = str(ROOT / "data" / "source_en")  # the English masked LM (HF-format folder)
    nsmc: str = str(ROOT.parent / "shared" / "data" / "nsmc")  # NSMC folder (train.tsv, test.tsv, unlabeled.txt)
    workers: int = 0              # arms trained at once, one thread each; 0 = the preset's
    device: str = "auto"          # auto (cuda if present) | cpu | cuda
    report: str = ""              # print the tables of a results.json (no training) and stop
    json_out: str = ""            # also write results.json here (e.g. bench/results/data_efficiency_cpu.json)
    lr_probe: str = ""            # extra peak lrs for the grid's methods, e.g. "3e-4": reported, never chosen


# ----------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------
def _key(obj):
    """A short hash of a JSON-able object: the name of a folder whose contents it defines."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _write_atomic(path, text):
    bert.atomic_write(path, text.encode("utf-8"))


def _read_json(path):
    """The object in a JSON file, or None when it is missing or unreadable (a rerun then redoes it)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _mean_std(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return float(np.mean(xs)), (float(np.std(xs, ddof=1)) if len(xs) > 1 else None)


# ----------------------------------------------------------------------------------------------------
# Floors that need no encoder
# ----------------------------------------------------------------------------------------------------
def majority_class(train_labels, test_labels):
    """Accuracy of always answering the most frequent training label."""
    top = Counter(train_labels).most_common(1)[0][0]
    return sum(y == top for y in test_labels) / len(test_labels)


def bow_logreg(train_rows, dev_rows, test_rows, l2_grid=(1e-4, 1e-3, 1e-2), steps=300, seed=0):
    """Bag-of-words logistic regression: binary features for the whitespace-separated words seen at
    least twice in the training texts, softmax regression trained full-batch with Adam, the L2 weight
    chosen on the dev rows. rows = [(text, label)]. Returns (test accuracy, chosen l2)."""
    counts = Counter(w for text, _ in train_rows for w in set(text.split()))
    vocab = {w: i for i, w in enumerate(sorted(w for w, c in counts.items() if c >= 2))}
    labels = {y: i for i, y in enumerate(sorted({y for _, y in train_rows}))}

    def encode(rows):  # EmbeddingBag input: the flat feature ids and each row's start
        ids, offsets = [], []
        for text, _ in rows:
            offsets.append(len(ids))
            ids.extend(sorted({vocab[w] for w in text.split() if w in vocab}))
        y = torch.tensor([labels.get(label, -1) for _, label in rows])
        return torch.tensor(ids, dtype=torch.long), torch.tensor(offsets, dtype=torch.long), y

    data = [encode(rows) for rows in (train_rows, dev_rows, test_rows)]
    best = None
    for l2 in l2_grid:
        torch.manual_seed(seed)
        bag = torch.nn.EmbeddingBag(max(len(vocab), 1), len(labels), mode="sum")
        torch.nn.init.zeros_(bag.weight)
        bias = torch.nn.Parameter(torch.zeros(len(labels)))
        opt = torch.optim.Adam([bag.weight, bias], lr=0.05)
        ids, offsets, y = data[0]
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(bag(ids, offsets) + bias, y) + l2 * bag.weight.pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            acc = [float(((bag(i, o) + bias).argmax(-1) == t).float().mean()) for i, o, t in data[1:]]
        if best is None or acc[0] > best[0]:
            best = (acc[0], acc[1], l2)
    return best[1], best[2]


# ----------------------------------------------------------------------------------------------------
# The ratio
# ----------------------------------------------------------------------------------------------------
def budget_reaching(budgets, scratch_losses, loss):
    """The budget at which scratch's curve reaches `loss`, the curve linear in log-budget between the
    grid's points: ("=", B) inside the grid; ("<", smallest budget) when scratch is already there at the
    smallest budget; (">", largest budget) when it never gets there on the grid. The first crossing counts."""
    if loss >= scratch_losses[0]:
        return ("=", budgets[0]) if loss == scratch_losses[0] else ("<", budgets[0])
    for (b0, l0), (b1, l1) in zip(zip(budgets, scratch_losses), zip(budgets[1:], scratch_losses[1:])):
        if l1 <= loss < l0:
            t = (l0 - loss) / (l0 - l1)
            return "=", float(math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0))))
    return ">", budgets[-1]


def ratio_text(kind, value):
    return f"{kind} {value:.3g}x" if kind in "<>" else f"{value:.3g}x"


def efficiency_ratio(budgets, scratch_losses, loss, budget):
    """(kind, ratio) with ratio = B / budget for B = budget_reaching(...): how many times more Korean
    text scratch needs to reach the loss that a method reached with `budget` bytes."""
    kind, b = budget_reaching(budgets, scratch_losses, loss)
    return kind, b / budget


# ----------------------------------------------------------------------------------------------------
# The experiment: data, tokenizer and splits, fixed once (a frozen object handed to every step)
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Experiment:
    preset: str
    p: dict                 # the preset's sizes
    out: Path               # out_dir / preset
    source: Path            # the English masked LM
    source_sha: str
    device: str
    tok: object             # the Korean tokenizer
    data: dict              # budget -> packed training data; "dev", "test" -> packed held-out data
    data_sha: dict          # budget -> hash of (training data, dev data)
    ft: dict                # fine-tuning rows: "train", "dev", "test" -> [(ids, label id)]; "labels"; "sha"


def korean_files(p, b, out):
    """Write (once per input) the corpus files under out/corpus: one train file per budget, dev.txt,
    test.txt, and labelled.tsv / ft_dev.tsv / ft_test.tsv. Returns their paths."""
    d = out / "corpus"
    names = {**{x: f"train_{x}.txt" for x in p["budgets"]}, "dev": "dev.txt", "test": "test.txt",
             "labelled": "labelled.tsv", "ft_dev": "ft_dev.tsv", "ft_test": "ft_test.tsv"}
    paths = {k: d / v for k, v in names.items()}
    meta = {"format": 3, "preset": b.preset, "nsmc": b.nsmc if b.preset != "tiny" else "data/ko_*.txt",
            **{k: p[k] for k in ("budgets", "dev_lines", "test_lines", "labelled", "ft_dev", "test")}}
    if all(q.exists() for q in paths.values()) and _read_json(d / "meta.json") == json.loads(json.dumps(meta)):
        return paths
    if b.preset == "tiny":  # toy data in the repository; the label is the speech level (polite or plain)
        docs = train.read_documents(ROOT / "data" / "ko_train.txt")
        held = train.read_documents(ROOT / "data" / "ko_valid.txt")
        dev, test = held[:p["dev_lines"]], held[p["dev_lines"]:p["dev_lines"] + p["test_lines"]]
        style = lambda t: "polite" if ("요" in t or "니다" in t) else "plain"  # noqa: E731
        rows = [(t, style(t)) for t in docs]
        labelled, ft_dev, ft_test = rows[:p["labelled"]], rows[p["labelled"]:p["labelled"] + p["ft_dev"]], \
            [(t, style(t)) for t in held]
    else:
        try:
            files = prepare.find_nsmc(b.nsmc)
        except prepare.PrepareError as e:
            raise prepare.PrepareError(f"{e} (set --nsmc=FOLDER with train.tsv, test.tsv, unlabeled.txt)") from e
        if "unlabeled" not in files:
            raise FileNotFoundError(f"{b.nsmc} has no unlabeled.txt (set --nsmc=FOLDER of the prepared layout)")
        print(f"preparing Korean corpora from {b.nsmc} ...")
        exclude = {doc for doc, _ in prepare.read_nsmc_rows(files["test"])}
        pool, _ = prepare.select(prepare.read_lines(files["unlabeled"]), seed=0, exclude=exclude)
        n_dev, n_test = p["dev_lines"], p["test_lines"]
        dev, test, docs = pool[:n_dev], pool[n_dev:n_dev + n_test], pool[n_dev + n_test:]
        # subtle: NSMC's train and test files share some texts; a labelled row whose text is also a test
        # text would be tested on after being trained on, so every test text is kept out of the sample
        everything = prepare.sample_labelled(files["train"], sys.maxsize, 0)
        rows = [(t, label) for t, label in everything if t not in exclude]
        labelled, ft_dev = rows[:p["labelled"]], rows[p["labelled"]:p["labelled"] + p["ft_dev"]]
        ft_test = prepare.sample_labelled(files["test"], p["test"], 0)
    available = sum(map(prepare.nbytes, docs))
    for x in p["budgets"]:
        if x > available:
            raise ValueError(f"budget {x} bytes exceeds the {available} bytes of Korean text available")
        part, used = [], 0
        for doc in docs:
            used += prepare.nbytes(doc)
            if used > x:
                break
            part.append(doc)
        _write_atomic(paths[x], "".join(doc + "\n" for doc in part))
    for k, lines in (("dev", dev), ("test", test)):
        _write_atomic(paths[k], "".join(doc + "\n" for doc in lines))
    for k, rows_ in (("labelled", labelled), ("ft_dev", ft_dev), ("ft_test", ft_test)):
        _write_atomic(paths[k], "".join(f"{line}\n" for line in
                                        ["text\tlabel"] + [f"{prepare.normalize(t)}\t{y}" for t, y in rows_]))
    _write_atomic(d / "meta.json", json.dumps(meta))  # last: only after every file above is written
    return paths


def experiment(b):
    """Build (or load from the caches under out_dir) everything the runs share."""
    p = PRESETS[b.preset]
    out = Path(b.out_dir) / b.preset
    source = Path(b.source)
    if not (source / "config.json").exists():
        raise FileNotFoundError(f"--source={source} has no config.json (an HF-format masked-LM folder)")
    weights = source / "model.safetensors"
    source_sha = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.exists() else ""
    paths = korean_files(p, b, out)
    s = run_settings(p, lr=p["lr_grid"][0], seed=1, device=b.device)
    largest = max(p["budgets"])
    with contextlib.redirect_stdout(io.StringIO()):  # the tokenizer's progress is noise in the workers
        tok = train.get_tokenizer(s, train.read_documents(paths[largest]), out, "tokenizer_ko",
                                  kind="bpe", vocab_size=p["ko_vocab"])
    data, data_sha = {}, {}
    for x in p["budgets"]:
        data[x], data["dev"] = train.build_datasets(s, tok, paths[x], paths["dev"], out / "cache")
        data_sha[x] = train.data_sha(data[x], data["dev"])
    data["test"] = train.build_datasets(s, tok, paths["test"], paths["test"], out / "cache")[1]
    rows = {k: finetune.read_tsv(paths[k]) for k in ("labelled", "ft_dev", "ft_test")}
    labels = finetune.label_map(rows["labelled"])
    max_len = PRESET_FT_MAX_LEN
    ft = {"labels": labels, "rows": rows,
          "train": finetune.encode_rows(rows["labelled"], tok, max_len, labels),
          "dev": finetune.encode_rows(rows["ft_dev"], tok, max_len, labels),
          "test": finetune.encode_rows(rows["ft_test"], tok, max_len, labels),
          "sha": hashlib.sha256(b"".join(paths[k].read_bytes() for k in ("labelled", "ft_dev", "ft_test")))
          .hexdigest()[:16]}
    return Experiment(b.preset, p, out, source, source_sha, b.device, tok, data, data_sha, ft)


def run_settings(p, *, lr, seed, device):
    """train.Settings of every post-training run (phase 1 fixed, then early stopping on the dev split)."""
    return train.Settings(max_len=p["max_len"], batch_size=p["batch_size"], lr=lr, seed=seed,
                          mlm_probability=p["mlm_probability"], phase1_steps=p["phase1_steps"],
                          phase2_steps=p["max_steps"] - p["phase1_steps"], eval_every=p["eval_every"],
                          patience=p["patience"], ckpt_every=100, log_every=10, itl_layers=1, device=device)


# ----------------------------------------------------------------------------------------------------
# One arm: post-train with early stopping, score the dev-best weights on the test split
# ----------------------------------------------------------------------------------------------------
# train.Settings fields added after runs were cached, with their default: left out of an arm's identity
# while at that default, so that the cached runs stay valid
SETTINGS_ADDED = {"span_masking": False, "objective": "mlm", "generator_size": 0.25, "disc_weight": 50.0}


def arm_config(e, method, budget, seed, lr):
    s = run_settings(e.p, lr=lr, seed=seed, device=e.device)
    settings = {k: v for k, v in dataclasses.asdict(s).items()
                if k != "device" and not (k in SETTINGS_ADDED and v == SETTINGS_ADDED[k])}
    return {"source": e.source_sha or str(e.source), "method": method, "budget": budget, "seed": seed,
            "lr": lr, "settings": settings, "data": e.data_sha[budget], "test": train.data_sha(e.data["test"])}


def arm_dir(e, method, budget, seed, lr):
    return e.out / "runs" / method / str(budget) / f"seed{seed}-lr{lr:g}-{_key(arm_config(e, method, budget, seed, lr))}"


def finished(path, config):
    """The result.json in `path` if it was made by exactly this config, else None."""
    r = _read_json(Path(path) / "result.json")
    return r if r is not None and r.get("config") == json.loads(json.dumps(config)) else None


def run_arm(e, method, budget, seed, lr):
    """Post-train one arm (train.run_xpt with early stopping) and score its dev-best weights on the test
    split. Every line it prints goes to output.txt in its folder."""
    config = arm_config(e, method, budget, seed, lr)
    d = arm_dir(e, method, budget, seed, lr)
    r = finished(d, config)
    if r is not None:
        return r
    t0 = time.time()
    d.mkdir(parents=True, exist_ok=True)
    s = run_settings(e.p, lr=lr, seed=seed, device=e.device)
    with open(d / "output.txt", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        model, evals = train.run_xpt(s, e.source, e.tok, e.data[budget], e.data["dev"], d, method=method)
        info = train.tokenizer_info(e.tok, s)
        test = train.evaluate(model, e.data["test"], mask_id=info["mask_id"], vocab_size=info["vocab_size"],
                              special_ids=info["special_ids"], batch_size=max(s.batch_size, 64),
                              device=train.pick_device(e.device))
    last = evals[-1]["phase"]
    final = [ev for ev in evals if ev["phase"] == last]
    best = min(final, key=lambda ev: ev["loss"])
    r = {"method": method, "budget_bytes": budget, "seed": seed, "lr": lr, "best_step": best["step"],
         "steps": evals[-1]["step"], "stopped": "early" if evals[-1]["step"] < e.p["max_steps"] else "cap",
         "dev_loss": best["loss"], "test_loss": test["loss"], "test_mask_acc": test["acc"],
         "curve": [{"step": ev["step"], "dev_loss": round(ev["loss"], 4)} for ev in evals],
         "seconds": round(time.time() - t0, 1), "config": config}
    _write_atomic(d / "result.json", json.dumps(r, indent=1))
    return r


# ----------------------------------------------------------------------------------------------------
# Fine-tuning: NSMC accuracy, the epoch chosen on the labelled dev split
# ----------------------------------------------------------------------------------------------------
def ft_settings(e, lr, seed):
    return finetune.FinetuneSettings(epochs=e.p["ft_epochs"], batch_size=e.p["ft_batch"], lr=lr,
                                     max_len=PRESET_FT_MAX_LEN, seed=seed, device=e.device)


def run_finetune(e, model_dir, lr, seed, tag):
    """Fine-tune the encoder in model_dir on the labelled rows; dev and test accuracy after every
    epoch; the reported test accuracy is the one of the dev-best epoch. Cached in model_dir/../."""
    fs = ft_settings(e, lr, seed)
    config = {"model": hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()[:16],
              "settings": {k: v for k, v in dataclasses.asdict(fs).items() if k != "device"}, "rows": e.ft["sha"]}
    path = Path(model_dir).parent / f"finetune-{tag}-{_key(config)}.json"
    r = _read_json(path)
    if r is not None and r.get("config") == json.loads(json.dumps(config)):
        return r
    t0 = time.time()
    torch.manual_seed(seed)
    clf = finetune.load_classifier(model_dir, len(e.ft["labels"]))
    with contextlib.redirect_stderr(io.StringIO()):
        best = finetune.finetune_best_epoch(clf, e.ft["train"], e.ft["dev"], e.ft["test"], fs, e.tok.pad_id,
                                            desc=f"fine-tune {tag}")
    r = {"lr": lr, **best, "seconds": round(time.time() - t0, 1), "config": config}
    _write_atomic(path, json.dumps(r, indent=1))
    return r


def source_summary(e):
    """The English source next to its floor (held-out English loss at [MASK] positions and the unigram
    loss of the same text, train.py's demo summary) when it is the shipped source, whose English text
    is known: data/en_train.txt + the stdlib prose it was trained on, data/en_valid.txt held out."""
    out = {"dir": str(e.source), "sha": e.source_sha}
    if e.source.resolve() != demo.SHIPPED_SOURCE.resolve() or e.preset == "tiny":  # (tiny: seconds count)
        return out
    en_train = e.out / "english" / "en_train.txt"
    if not en_train.exists():
        docs = train.read_documents(ROOT / "data" / "en_train.txt") + demo.english_extra_docs()
        _write_atomic(en_train, "".join(d + "\n" for d in docs))
    s = run_settings(e.p, lr=1e-3, seed=1, device=e.device)
    r = demo._source_summary(s, e.source, en_train, ROOT / "data" / "en_valid.txt", e.out / "cache")
    return {**out, "dir": "data/source_en", **{k: r[k] for k in ("final_loss", "floor", "acc", "acc_floor")}}


def random_encoder(e, seed):
    """A randomly initialised encoder of the arms' shape (scratch's starting point), saved once."""
    d = e.out / "random_encoder" / f"seed{seed}" / "model"
    if not (d / "model.safetensors").exists():
        source = bert.BertForMaskedLM.from_pretrained(e.source)
        model = xpt.build_xpt(source, len(e.tok), method="scratch", itl_layers=1, target_pad_token_id=e.tok.pad_id,
                              seed=seed)
        model.save_pretrained(d)
    return d


# ----------------------------------------------------------------------------------------------------
# Workers: each task is a small tuple; a worker builds the Experiment once from the caches
# ----------------------------------------------------------------------------------------------------
_WORKER = {}


def _init_worker(b_dict, threads):
    torch.set_num_threads(threads)
    _WORKER["b"] = BenchSettings(**b_dict)


def _task(task):
    """("arm", method, budget, seed, lr) | ("ft", method, budget, seed, lr, ft_lr) | ("random", seed, ft_lr)
    -> (task, result, seconds spent)."""
    if "e" not in _WORKER:
        _WORKER["e"] = experiment(_WORKER["b"])
    e, kind, t0 = _WORKER["e"], task[0], time.time()
    if kind == "arm":
        r = run_arm(e, *task[1:])
    elif kind == "ft":
        _, method, budget, seed, lr, ft_lr = task
        r = run_finetune(e, arm_dir(e, method, budget, seed, lr) / "model", ft_lr, seed, "nsmc")
    elif kind == "random":
        _, seed, ft_lr = task
        r = run_finetune(e, random_encoder(e, seed), ft_lr, seed, "nsmc")
    else:
        raise ValueError(f"unknown task {task!r}")
    return task, r, time.time() - t0


def run_tasks(tasks, pool, desc, spent):
    """Run tasks (in the pool, or here when pool is None); {task: result}, with one progress bar.
    spent["seconds"] adds up the workers' time (a cached result costs ~0)."""
    results = {}
    tasks = list(dict.fromkeys(tasks))  # each once, in order
    it = pool.imap_unordered(_task, tasks) if pool is not None else map(_task, tasks)
    for task, r, seconds in tqdm(it, total=len(tasks), desc=desc, dynamic_ncols=True):
        results[task] = r
        spent["seconds"] += seconds
        if seconds > 1:  # it trained: this call's wall time so far joins timing.json now (a killed call counts)
            spent["trained"] = True  # (many cached results, ~0.1 s each, are not training)
            spent["tick"]()
    return results


# ----------------------------------------------------------------------------------------------------
# The whole measurement
# ----------------------------------------------------------------------------------------------------
def reported(b, presets, tables):
    """--report=FILE: print tables(results) of a results.json and return True (nothing to run); else
    refuse an unknown preset and return False. (Shared by the benches that write results.json.)"""
    if b.report:
        print(tables(json.loads(Path(b.report).read_text(encoding="utf-8"))))
        return True
    if b.preset not in presets:
        raise ValueError(f"preset must be one of {list(presets)}, got {b.preset!r}")
    return False


def run(b):
    if reported(b, PRESETS, markdown):
        return None
    if b.workers < 0:
        raise ValueError(f"workers must be >= 0 (0 = the preset's), got {b.workers}")
    p = PRESETS[b.preset]
    workers, probe_lrs = b.workers or p["workers"], lr_probe(b)
    t0 = time.time()
    e = experiment(b)
    _WORKER.update(b=b, e=e)
    pool = None
    if workers > 1:
        # spawn: fresh interpreters (forking a process that already ran torch can hang its thread pool)
        ctx = multiprocessing.get_context("spawn")
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(dataclasses.asdict(b), 1))
    # timing.json: the wall time of every call that trained something, summed over calls (rewritten after
    # each task that trained, so a call that is killed still counts what it spent); --lr_probe's wall
    # time is left out (spent["excluded"])
    before = _read_json(e.out / "timing.json") or {}
    timing = dict(before)
    spent = {"seconds": 0.0, "excluded": 0.0}

    def tick():
        timing.update(seconds=round(before.get("seconds", 0) + time.time() - t0 - spent["excluded"], 1),
                      calls=before.get("calls", 0) + 1)
        _write_atomic(e.out / "timing.json", json.dumps(timing))

    spent["tick"] = tick
    try:
        summary = _measure(e, p, pool, spent, probe_lrs)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    if summary.pop("trained"):
        tick()
    summary["seconds"] = timing.get("seconds", round(time.time() - t0, 1))
    summary["calls"] = timing.get("calls", 1)
    body = json.dumps(summary, indent=1)
    _write_atomic(e.out / "results.json", body)
    print(f"wrote {e.out / 'results.json'}")
    if b.json_out:
        _write_atomic(b.json_out, body)
        print(f"wrote {b.json_out}")
    plot(summary, e.out / "data_efficiency.png")
    print(f"\nCommand: python bench/data_efficiency.py --preset={b.preset}\n")
    print(markdown(summary))
    return summary


def lr_probe(b):
    try:
        return [float(x) for x in b.lr_probe.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"lr_probe must be comma-separated learning rates, got {b.lr_probe!r}") from None


def _measure(e, p, pool, spent, probe_lrs=()):
    budgets, seeds = sorted(p["budgets"]), list(p["seeds"])
    # 1. learning rates: each method of lr_grid_methods at lr_budget, seed 1, each value of the grid; the
    #    best dev loss wins. The other methods (xpt's ablations: each differs from xpt in one part) take
    #    xpt's rate.
    tuned = [m for m in p["methods"] if m in p["lr_grid_methods"]]
    if "xpt" in p["methods"] and "xpt" not in tuned:
        raise ValueError("lr_grid_methods must include xpt: the other methods take its learning rate")
    grid = [("arm", m, p["lr_budget"], seeds[0], lr) for m in tuned for lr in p["lr_grid"]]
    done = run_tasks(grid, pool, "lr grid (dev split)", spent)
    lr = {m: min(p["lr_grid"], key=lambda x: done[("arm", m, p["lr_budget"], seeds[0], x)]["dev_loss"])
          for m in tuned}
    lr.update({m: lr["xpt"] for m in p["methods"] if m not in tuned})
    lr_table = {m: {f"{x:g}": round(done[("arm", m, p["lr_budget"], seeds[0], x)]["dev_loss"], 4)
                    for x in p["lr_grid"]} for m in tuned}
    # --lr_probe: rates outside the grid for the same methods, budget and seed, reported next to it and
    #    never chosen (e.g. a rate whose runs are too long for the preset's time); their time is their
    #    own (each run's seconds), not in the preset's total
    probe = [("arm", m, p["lr_budget"], seeds[0], x) for m in tuned for x in probe_lrs]
    t_probe = time.time()
    probe_done = run_tasks(probe, pool, "lr probe (outside the grid)", {"seconds": 0.0, "tick": lambda: None})
    spent["excluded"] = spent.get("excluded", 0.0) + time.time() - t_probe
    lr_probe_table = {m: {f"{x:g}": {k: probe_done[("arm", m, p["lr_budget"], seeds[0], x)][k] for k in
                                     ("dev_loss", "test_loss", "best_step", "steps", "seconds")}
                          for x in probe_lrs} for m in tuned} if probe_lrs else {}
    # 2. every arm: the headline methods with every seed, the others with the first seed
    #    (the largest budgets first: the longest runs start early and the workers end together)
    arms = [("arm", m, x, k, lr[m]) for x in budgets[::-1] for m in p["methods"]
            for k in (seeds if m in HEADLINE or p.get("seeds_all") else seeds[:1])]
    done.update(run_tasks(arms, pool, "arms", spent))
    # 3. fine-tuning lr: the grid on the dev split with the seed-1 xpt and scratch encoders of the
    #    largest budget (their mean dev accuracy decides), then every arm and the random encoders
    top = max(p["ft_budgets"])
    ft_grid = [("ft", m, top, seeds[0], lr[m], f) for m in HEADLINE for f in p["ft_lr_grid"]]
    ft_done = run_tasks(ft_grid, pool, "fine-tuning lr grid", spent)
    ft_lr = max(p["ft_lr_grid"], key=lambda f: np.mean([ft_done[("ft", m, top, seeds[0], lr[m], f)]["dev_acc"]
                                                           for m in HEADLINE]))
    fts = [("ft", *t[1:], ft_lr) for t in arms if t[1] in p["ft_methods"] and t[2] in p["ft_budgets"]]
    fts += [("random", k, ft_lr) for k in seeds]
    ft_done.update(run_tasks(fts, pool, "fine-tuning", spent))
    # 4. floors
    info = train.tokenizer_info(e.tok, run_settings(p, lr=1e-3, seed=1, device="cpu"))
    test_ids = e.data["test"]["input_ids"].numpy().ravel()
    unigram = {str(x): train.unigram_loss(e.data[x]["input_ids"].numpy().ravel(), test_ids, len(e.tok),
                                          info["special_ids"]) for x in budgets}
    rows = e.ft["rows"]
    bow, l2 = bow_logreg(rows["labelled"], rows["ft_dev"], rows["ft_test"], p["bow_l2"])
    rand = [ft_done[("random", k, ft_lr)]["test_acc"] for k in seeds]
    floors = {"majority": majority_class([y for _, y in rows["labelled"]], [y for _, y in rows["ft_test"]]),
              "bow_logreg": bow, "bow_logreg_l2": l2, "random_encoder": _mean_std(rand)[0],
              "random_encoder_std": _mean_std(rand)[1], "random_encoder_runs": rand}
    runs = []
    for t in arms:
        r = {k: v for k, v in done[t].items() if k != "config"}
        f = ft_done.get(("ft", *t[1:], ft_lr), {})  # (not fine-tuned: null)
        runs.append({"source": str(e.source.name), **r, "test_acc": f.get("test_acc"), "ft_epoch": f.get("epoch"),
                     "ft_dev_acc": f.get("dev_acc")})
    return {"preset": e.preset, "eval_masking": "mask-only", "budgets": budgets, "seeds": seeds,
            "methods": list(p["methods"]), "paper_ratio": PAPER_RATIO,
            "source": source_summary(e),
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
            "tokens": {str(x): int((e.data[x]["attention_mask"].sum())) for x in budgets},
            "lr": lr, "lr_chosen_by": {m: "dev grid" if m in tuned else "xpt's" for m in p["methods"]},
            "lr_grid_dev_loss": lr_table, "lr_probe": lr_probe_table, "ft_lr": ft_lr,
            "ft_lr_grid_dev_acc": {f"{f:g}": {m: ft_done[("ft", m, top, seeds[0], lr[m], f)]["dev_acc"] for m in HEADLINE}
                                   for f in p["ft_lr_grid"]},
            "unigram_loss": unigram, "floors": floors, "ratios": ratios(runs, budgets, p["methods"]),
            "runs": runs, "trained": spent.get("trained", False), "worker_seconds": round(spent["seconds"], 1)}


def ratios(runs, budgets, methods):
    """Per method and budget: mean and std of the test loss, the paired difference to scratch, whether
    it beats scratch (mean difference > 2 x the paired differences' std) or is worse than it (the same
    the other way), and the data-efficiency ratio
    (of the means, and its range over the paired seeds)."""
    loss = {(r["method"], r["budget_bytes"], r["seed"]): r["test_loss"] for r in runs}
    seeds = sorted({r["seed"] for r in runs if r["method"] == "scratch"})
    scratch_mean = [float(np.mean([loss[("scratch", x, k)] for k in seeds])) for x in budgets]
    out = {}
    for m in methods:
        if m == "scratch":
            continue
        out[m] = {}
        for x in budgets:
            ks = [k for k in seeds if (m, x, k) in loss]
            if not ks:
                continue
            mean, std = _mean_std([loss[(m, x, k)] for k in ks])
            diffs = [loss[("scratch", x, k)] - loss[(m, x, k)] for k in ks]
            d_mean, d_std = _mean_std(diffs)
            kind, ratio = efficiency_ratio(budgets, scratch_mean, mean, x)
            per_seed = [efficiency_ratio(budgets, [loss[("scratch", y, k)] for y in budgets], loss[(m, x, k)], x)
                        for k in ks]
            out[m][str(x)] = {
                "mean": mean, "std": std, "diff_mean": d_mean, "diff_std": d_std, "seeds": ks,
                "beats_scratch": None if d_std is None else bool(d_mean > 2 * d_std),
                "worse_than_scratch": None if d_std is None else bool(-d_mean > 2 * d_std),
                "ratio": ratio_text(kind, ratio),
                "ratio_range": [ratio_text(*min(per_seed, key=_ratio_order)), ratio_text(*max(per_seed, key=_ratio_order))]}
    return out


def _ratio_order(kr):
    kind, value = kr
    return value * (0.999 if kind == "<" else 1.001 if kind == ">" else 1.0)


# ----------------------------------------------------------------------------------------------------
# Tables and the plot, from a results.json alone
# ----------------------------------------------------------------------------------------------------
def _size(x):
    return f"{x / 1000:g} KB" if x < 1_000_000 else f"{x / 1e6:g} MB"


def _ms(mean, std, fmt="{:.3f}"):
    if mean is None:
        return "-"
    return fmt.format(mean) + ("" if std is None else " ± " + fmt.format(std))


def _fine_tuned(res):
    """The methods whose encoders were fine-tuned (the others have test_acc null)."""
    return [m for m in res["methods"] if any(r["test_acc"] is not None for r in res["runs"] if r["method"] == m)]


def markdown(res):
    budgets, runs = res["budgets"], res["runs"]
    by = lambda m, x: [r for r in runs if r["method"] == m and r["budget_bytes"] == x]  # noqa: E731
    lines = [f"Masked-LM test loss at [MASK] positions (nats, lower is better; mean ± std over seeds "
             f"{res['seeds']} for xpt and scratch, one seed for the others), the unigram floor of each budget, "
             f"and the data-efficiency ratio of each method (how many times more Korean text scratch needs to "
             f"reach its mean loss; paper: {res['paper_ratio']}x).", ""]
    head = ["budget", "tokens", "unigram floor", "scratch"] + [m for m in res["methods"] if m != "scratch"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for x in budgets:
        cells = [_size(x), f"{int(res['tokens'][str(x)]):,}", f"{res['unigram_loss'][str(x)]:.3f}",
                 _ms(*_mean_std([r["test_loss"] for r in by("scratch", x)]))]
        for m in head[4:]:
            rt = res["ratios"].get(m, {}).get(str(x))
            if rt is None:
                cells.append("-")
                continue
            beat = "one seed" if rt["beats_scratch"] is None else "beats scratch" if rt["beats_scratch"] \
                else "worse than scratch" if rt.get("worse_than_scratch") else "no difference"
            rng = f", seeds {rt['ratio_range'][0]} .. {rt['ratio_range'][1]}" if len(rt["seeds"]) > 1 else ""
            cells.append(f"{_ms(rt['mean'], rt['std'])} ({beat}; ratio {rt['ratio']}{rng})")
        lines.append("| " + " | ".join(cells) + " |")
    stops = Counter(r["stopped"] for r in runs)
    by_grid = lambda m: res.get("lr_chosen_by", {}).get(m, "dev grid") == "dev grid"  # noqa: E731
    lines += ["", f"Runs stopped by the dev loss: {stops.get('early', 0)}; by the step cap "
              f"({res['settings']['max_steps']}): {stops.get('cap', 0)}. Peak learning rates (best on the dev "
              f"split at {_size(res['settings']['lr_budget'])}, seed {res['seeds'][0]}, from "
              f"{', '.join(f'{x:g}' for x in res['settings']['lr_grid'])}): "
              + ", ".join(f"{m} {v:g}" for m, v in res["lr"].items() if by_grid(m))
              + "".join(f"; {m} takes xpt's rate" for m in res["methods"] if not by_grid(m)) + "."]
    grid_runs = {(r["method"], r["lr"]): r for r in runs if r["budget_bytes"] == res["settings"]["lr_budget"]
                 and r["seed"] == res["seeds"][0]}
    probed = [f"{m} at {x}: dev {v['dev_loss']:.3f}, test {v['test_loss']:.3f} ({v['steps']} steps; at "
              f"{res['lr'][m]:g}: dev {grid_runs[(m, res['lr'][m])]['dev_loss']:.3f}, test "
              f"{grid_runs[(m, res['lr'][m])]['test_loss']:.3f}, {grid_runs[(m, res['lr'][m])]['steps']} steps)"
              for m, xs in res.get("lr_probe", {}).items() for x, v in xs.items()]
    if probed:
        lines += ["Outside the grid (--lr_probe: the same budget and seed, reported, never chosen, its time "
                  "not in the total): " + "; ".join(probed) + "."]
    lines += [""]
    fl = res["floors"]
    lines += [f"NSMC sentiment accuracy on {res['settings']['test'] or 'the'} test reviews after fine-tuning on "
              f"{res['settings']['labelled']} labelled ones (lr {res['ft_lr']:g} chosen on the dev split, the "
              f"epoch too). Floors: majority class {fl['majority']:.1%}, bag-of-words logistic regression "
              f"{fl['bow_logreg']:.1%}, random encoder fine-tuned the same way "
              f"{_ms(fl['random_encoder'], fl['random_encoder_std'], '{:.1%}')}.", ""]
    tuned = _fine_tuned(res)
    head = ["budget"] + tuned
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    acc = lambda m, x: [r["test_acc"] for r in by(m, x) if r["test_acc"] is not None]  # noqa: E731
    ft_budgets = [x for x in budgets if any(acc(m, x) for m in tuned)]
    for x in ft_budgets:
        lines.append("| " + " | ".join([_size(x)] + [_ms(*_mean_std(acc(m, x)), "{:.1%}") if acc(m, x) else "-"
                                                    for m in tuned]) + " |")
    if len(tuned) < len(res["methods"]) or len(ft_budgets) < len(budgets):
        lines += ["", "Not fine-tuned (time): " + ", ".join(
            [m for m in res["methods"] if m not in tuned] + [f"the {_size(x)} encoders" for x in budgets
                                                             if x not in ft_budgets]) + "."]
    lines += ["", f"Measured in {res['seconds'] / 60:.0f} min ({res['calls']} call(s) of the command)."]
    return "\n".join(lines)


def plot(res, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(install matplotlib for a plot)")
        return None
    budgets, runs = res["budgets"], res["runs"]
    xs = [x / 1000 for x in budgets]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax.plot(xs, [res["unigram_loss"][str(x)] for x in budgets], "k--", label="unigram floor")
    fl = res["floors"]
    for name, v in (("majority class", fl["majority"]), ("bag-of-words logreg", fl["bow_logreg"]),
                    ("random encoder", fl["random_encoder"])):
        bx.axhline(v, ls="--", lw=1, color={"majority class": "k", "bag-of-words logreg": "grey"}.get(name, "tab:brown"),
                   label=name)
    for i, m in enumerate(res["methods"]):
        for key, axis in (("test_loss", ax), ("test_acc", bx)):
            if key == "test_acc" and m not in _fine_tuned(res):
                continue
            stats = [(x / 1000, *_mean_std([r[key] for r in runs if r["method"] == m and r["budget_bytes"] == x]))
                     for x in budgets]
            stats = [st for st in stats if st[1] is not None]  # (budgets not fine-tuned: no point)
            axis.errorbar([st[0] for st in stats], [st[1] for st in stats], yerr=[st[2] or 0 for st in stats],
                          marker="o", lw=2 if m in HEADLINE else 1, capsize=3, label=m, color=f"C{i}")
    ax.set(xscale="log", xlabel="Korean training text (KB)", ylabel="test MLM loss at [MASK] (nats)")
    bx.set(xscale="log", xlabel="Korean training text (KB)", ylabel="NSMC test accuracy")
    for axis in (ax, bx):
        axis.set_xticks(xs, [f"{x:g}" for x in xs])
        axis.minorticks_off()
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7, loc="upper right" if axis is ax else "center left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return run(train.parse_args(argv, BenchSettings(), usage=[__doc__.strip()]))


def cli(argv=None):
    """main() for the command line: a bad setting or a missing input is one line "error: ..." on stderr
    and exit status 2, not a traceback."""
    try:
        main(argv)
    except (prepare.PrepareError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
