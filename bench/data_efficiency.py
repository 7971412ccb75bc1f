"""
The paper's claim, measured in miniature: how much Korean text does XPT save?

    python bench/data_efficiency.py --preset=tiny        # toy data from the repository, seconds (the test)
    python bench/data_efficiency.py --preset=cpu         # real NSMC Korean, 2 cores, hours: resumable
    python bench/data_efficiency.py --preset=cpu --collect=true   # the summary from the runs finished so far
    python bench/data_efficiency.py --preset=cpu --part=ablations   # xpt's ablations, one seed each
    python bench/data_efficiency.py --preset=cpu --part=finetune    # NSMC accuracy at 250 and 1,000 labels
    python bench/data_efficiency.py --preset=gpu         # the same protocol at 16x the budgets (one GPU)
    python bench/data_efficiency.py --report=bench/results/data_efficiency_cpu.json   # the README's tables
    python bench/data_efficiency.py --help

Lee et al., "Exploring the Data Efficiency of Cross-Lingual Post-Training in Pretrained Language
Models", Applied Sciences 11(5):1974 (2021), report that XPT from an English model matches a Korean model
trained from scratch with up to 32x less Korean text. The protocol here (take 3):

  source    an English masked LM: the project's own data/source_en (python train.py --stage=source made
            it); --source=DIR takes any other HF-format masked-LM folder;
  text      Korean NSMC reviews (../shared/data/nsmc/unlabeled.txt, NSMC's test texts kept out), one
            seeded shuffle cut, in order, into: a dev split (>= 10K tokens: learning rates and the
            weights are chosen on it), a test split (what is reported), a tokenizer slice, and the
            training budgets, each budget a prefix of the rest (a bigger budget holds the smaller ones);
  tokenizer one Korean BPE learned from the tokenizer slice only, outside every budget: adding a budget
            changes no number, and losses of every budget and arm are under the same vocabulary;
  budgets   per method (`arm_budgets`): scratch on a grid that brackets XPT's losses (2x apart), XPT on
            smaller ones;
  training  every run has a step cap with warm-up and linear decay over it, evaluates on dev every
            `eval_every` steps and keeps its dev-best weights. It stops early only after `min_steps`
            steps (scratch: 2,000, past the plateau small masked LMs sit on for ~1,500 steps, see
            ../shared/CALIBRATION.md items 6-8) and `patience` evaluations (1,000 steps) without a better
            dev loss. XPT's phase 1 is sized to the budget the same way (dev-selected, capped, shorter
            patience: on a few KB a fixed phase 1 memorises);
  converged a run records dev_gain_last_quarter, how much its best dev loss improved over its last 25%
            of steps; converged = that gain < 0.02 nat;
  lr        per method, the best peak rate of `lr_grid` on the dev split, chosen at each of the method's
            `grid_budgets` (seed 1; every cell reported); a budget between or beyond them takes the
            rate of the nearest grid budget (in log-bytes);
  seeds     3 paired seeds for xpt and scratch (seed k: the same data order and masks for both);
  loss      masked-LM loss on the test split at [MASK] positions only, 15% of tokens (train.evaluate:
            evaluation masks fixed by the data alone, the same task for every arm), dev-best weights;
  floor     the unigram loss of each budget (add-0.5 token frequencies of the budget, scored on the
            test split): a loss above it means nothing was learned from context; for accuracy, the
            majority class, a bag-of-words logistic regression and a random encoder fine-tuned alike;
  ratio     for each XPT budget B: the scratch budget at which scratch's mean converged loss equals
            XPT's mean (linear in log-budget between the two bracketing scratch budgets) divided by B;
            per-seed ratios from the paired seeds. kind: measured (bracketed, every run in it converged,
            every seed) | preliminary (bracketed and converged, fewer seeds) | lower_bound (XPT below
            every scratch point, or only XPT unconverged) | upper_bound (XPT above the smallest scratch
            point, or only scratch unconverged) | unresolved (both unconverged).

Every run lives in its own folder under --out_dir, named by a hash of everything that defines it, and
writes result.json there (atomically) and a copy into --results_dir (one small JSON per run, committed as
it lands): a rerun skips finished runs and resumes unfinished ones from their checkpoints; a killed call
loses only the steps since the runs' last checkpoints. --workers runs that many arms at once, one thread
each (for these small models, faster than one job using every core). A bad setting or a missing input
stops the command with "error: ..." and exit status 2.

Differs from the paper: budgets of kilobytes, not gigabytes; a 4-layer, 128-wide source; one ITL layer
at each end; 40% masking and 32-token sequences for training (the demo's recipe). NSMC accuracy
(--part=finetune) at few labels only, where pretraining can show: with 5,000 labels a random encoder
fine-tuned the same way already matches a pretrained one.
"""
import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import math
import multiprocessing
import os
import sys
import textwrap
import threading
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
ABLATIONS = tuple(m for m in xpt.METHODS if m not in HEADLINE)  # --part=ablations: one seed each

# Sizes of each preset. Budgets are UTF-8 bytes of Korean training text. A step is batch_size x max_len
# tokens, mlm_probability of them masked; a run's step cap is max_steps (XPT: phase 1 at most
# phase1_steps, then phase 2 at most max_steps - phase1_steps), its dev loss is evaluated every
# eval_every global steps, and it stops early after min_steps[method] steps (of its last phase) once
# `patience` evaluations in a row have not beaten its best (phase 1: phase1_patience).
# --part=finetune: NSMC sentiment with ft_labels labelled rows (a prefix of the labelled split), about
# ft_steps optimizer steps of ft_batch rows each, the best (rate of ft_lr_grid, epoch) on ft_dev rows, for the
# encoders of ft_arms (the dev-best weights of the headline runs, every seed) and a random encoder.
PRESETS = {
    "tiny": dict(
        arm_budgets={"scratch": (4_000, 16_000), "xpt": (4_000,)},
        grid_budgets={"scratch": (4_000, 16_000), "xpt": (4_000,)}, lr_grid=(3e-3, 1e-2), seeds=(1, 2),
        dev_lines=10, test_lines=20, tokenizer_bytes=20_000, ko_vocab=400, max_len=32, batch_size=8,
        mlm_probability=0.4, phase1_steps=4, phase1_patience=1, max_steps=8, eval_every=2, patience=2,
        min_steps={"scratch": 4, "xpt": 2}, labelled=100, ft_dev=50, test=0, ft_lr_grid=(1e-3,), ft_epochs=1,
        ft_batch=16, ft_labels=(16, 48), ft_steps=6, ft_arms=(("xpt", 4_000),), workers=1),
    "cpu": dict(
        arm_budgets={"scratch": (50_000, 100_000, 150_000, 200_000, 250_000, 400_000),
                     "xpt": (12_500, 25_000, 50_000, 100_000)},
        grid_budgets={"scratch": (100_000, 200_000), "xpt": (25_000, 50_000)}, lr_grid=(3e-4, 1e-3, 2e-3),
        seeds=(1, 2, 3), dev_lines=400, test_lines=1000, tokenizer_bytes=200_000, ko_vocab=2000, max_len=32,
        batch_size=64, mlm_probability=0.4, phase1_steps=1000, phase1_patience=4, max_steps=6000, eval_every=50,
        patience=20, min_steps={"scratch": 2000, "xpt": 1000}, labelled=5000, ft_dev=1000, test=2000,
        ft_lr_grid=(3e-4, 1e-3), ft_epochs=2, ft_batch=32, ft_labels=(250, 1000), ft_steps=250,
        ft_arms=(("xpt", 100_000), ("scratch", 150_000)), workers=2),
    "gpu": dict(  # the cpu protocol at 16x the budgets (the MB scale), longer caps; never run yet
        arm_budgets={"scratch": (800_000, 1_600_000, 2_400_000, 3_200_000, 6_400_000),
                     "xpt": (200_000, 400_000, 800_000, 1_600_000)},
        grid_budgets={"scratch": (1_600_000, 3_200_000), "xpt": (400_000, 800_000)}, lr_grid=(3e-4, 1e-3, 2e-3),
        seeds=(1, 2, 3), dev_lines=1000, test_lines=3000, tokenizer_bytes=1_600_000, ko_vocab=4000, max_len=32,
        batch_size=64, mlm_probability=0.4, phase1_steps=2000, phase1_patience=5, max_steps=30000, eval_every=200,
        patience=20, min_steps={"scratch": 6000, "xpt": 2000}, labelled=10000, ft_dev=2000, test=5000,
        ft_lr_grid=(5e-5, 1e-4, 3e-4, 1e-3), ft_epochs=3, ft_batch=32, ft_labels=(250, 1000, 5000), ft_steps=500,
        ft_arms=(("xpt", 1_600_000), ("scratch", 3_200_000)), workers=1),
}
for _p in PRESETS.values():  # every budget any arm trains on (the corpus files, in increasing order)
    _p["budgets"] = tuple(sorted({x for xs in _p["arm_budgets"].values() for x in xs}))

CONVERGED_GAIN = 0.02  # nats: a run whose best dev loss improved less over its last quarter has converged

PRESET_FT_MAX_LEN = 32  # fine-tuning rows are cut to the source's 32 positions (NSMC reviews: ~25 tokens)


@dataclass
class BenchSettings:
    preset: str = "tiny"          # tiny (toy data, the test) | cpu (real NSMC, 2 cores) | gpu (16x the budgets)
    part: str = "lm"              # lm (xpt and scratch: the ratios) | ablations (xpt's ablations, one seed)
                                  # | finetune (NSMC accuracy at few labels, with its floors)
    out_dir: str = "out/data_efficiency"  # runs, corpora, caches; a rerun resumes from here
    results_dir: str = ""         # one JSON per finished run; "" = bench/results/data_efficiency_<preset>/
                                  # (tiny: under out_dir)
    collect: bool = False         # train nothing: write the summary from the runs finished so far
    source: str = str(ROOT / "data" / "source_en")  # the English masked LM (HF-format folder)
    nsmc: str = str(ROOT.parent / "shared" / "data" / "nsmc")  # NSMC folder (train.tsv, test.tsv, unlabeled.txt)
    workers: int = 0              # arms trained at once, one thread each; 0 = the preset's
    device: str = "auto"          # auto (cuda if present) | cpu | cuda
    report: str = ""              # print the tables of a summary JSON (no training) and stop
    json_out: str = ""            # the summary JSON; "" = bench/results/data_efficiency_<preset>.json (tiny: out_dir)


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
# Convergence and the ratio
# ----------------------------------------------------------------------------------------------------
def dev_gain_last_quarter(curve):
    """How much a run's best dev loss improved over its last 25% of steps: best over the whole curve
    vs best up to 75% of the last step. curve = [{"step", "dev_loss"}] in order. A run still learning
    at its end shows a large gain; one that has converged (or overfits and was selected early) ~0."""
    end = curve[-1]["step"]
    before = [c["dev_loss"] for c in curve if c["step"] <= 0.75 * end]
    if not before:
        return math.inf  # (too few evaluations to tell)
    return float(min(before) - min(c["dev_loss"] for c in curve))


def budget_reaching(budgets, scratch_losses, loss):
    """The budget at which scratch's curve reaches `loss`, the curve linear in log-budget between the
    grid's points: ("=", B, i) inside the grid, between budgets[i] and budgets[i + 1] (or at budgets[0],
    i = 0); ("<", smallest budget, None) when scratch is already there at the smallest budget; (">",
    largest budget, None) when it never gets there on the grid. The first crossing counts."""
    if loss >= scratch_losses[0]:
        return ("=", budgets[0], 0) if loss == scratch_losses[0] else ("<", budgets[0], None)
    for i, ((b0, l0), (b1, l1)) in enumerate(zip(zip(budgets, scratch_losses), zip(budgets[1:], scratch_losses[1:]))):
        if l1 <= loss < l0:
            t = (l0 - loss) / (l0 - l1)
            return "=", float(math.exp(math.log(b0) + t * (math.log(b1) - math.log(b0)))), i
    return ">", budgets[-1], None


def ratio_text(kind, value):
    return f"{kind} {value:.3g}x" if kind in "<>" else f"{value:.3g}x"


def efficiency_ratio(budgets, scratch_losses, loss, budget):
    """(kind, ratio) with ratio = B / budget for B = budget_reaching(...): how many times more Korean
    text scratch needs to reach the loss that a method reached with `budget` bytes."""
    kind, b, _ = budget_reaching(budgets, scratch_losses, loss)
    return kind, b / budget


def equal_loss_ratios(runs, n_seeds, floors=None):
    """The data-efficiency ratios of xpt against scratch, one per xpt budget, from finished runs
    [{method, budget_bytes, seed, test_loss, converged}] (the seeds of each cell averaged; scratch's
    budgets with at least one run form its curve). Returns a list of {xpt_budget_bytes, xpt_loss_mean,
    xpt_loss_std, scratch_equal_budget_bytes, bracket, ratio, ratio_seeds, ratio_seeds_std, seeds, kind}:
      measured     XPT's mean falls between two scratch budgets, every run of the three cells converged,
                   each cell with n_seeds seeds;
      preliminary  the same with fewer seeds in some cell;
      lower_bound  XPT is below scratch at every budget (ratio > largest / B; scratch's largest cell
                   converged), or only XPT's runs have not converged (more training would lower XPT's
                   loss: the true ratio is larger);
      upper_bound  XPT is above scratch at the smallest budget (ratio < smallest / B; XPT converged), or
                   only the bracketing scratch runs have not converged (the true ratio is smaller);
      unresolved   both unconverged, or a bound whose own side did not converge.
    ratio_seeds: per paired seed k, XPT seed k against scratch seed k's curve. floors ({budget: unigram
    loss}): bracket_on_plateau says whether a bracketing scratch cell never got 0.1 below its floor
    (converged by the rule, but if more steps let it leave the plateau, the true ratio is smaller)."""
    cell = {}
    for r in runs:
        cell.setdefault((r["method"], r["budget_bytes"]), []).append(r)
    sb = sorted(x for m, x in cell if m == "scratch")
    if not sb:
        return []
    s_mean = [float(np.mean([r["test_loss"] for r in cell[("scratch", x)]])) for x in sb]
    out = []
    for x in sorted(x for m, x in cell if m == "xpt"):
        xr = sorted(cell[("xpt", x)], key=lambda r: r["seed"])
        mean, std = _mean_std([r["test_loss"] for r in xr])
        kind, equal, i = budget_reaching(sb, s_mean, mean)
        bracket = [] if i is None else sorted({sb[i], sb[min(i + 1, len(sb) - 1)]})
        x_ok = all(r["converged"] for r in xr)
        if kind == "<":
            label = "upper_bound" if x_ok else "unresolved"
        elif kind == ">":
            label = "lower_bound" if all(r["converged"] for r in cell[("scratch", sb[-1])]) else "unresolved"
        else:
            s_ok = all(r["converged"] for y in bracket for r in cell[("scratch", y)])
            label = {(True, True): "measured", (False, True): "lower_bound", (True, False): "upper_bound",
                     (False, False): "unresolved"}[(x_ok, s_ok)]
            cells = [("xpt", x)] + [("scratch", y) for y in bracket]
            if label == "measured" and any(len(cell[c]) < n_seeds for c in cells):
                label = "preliminary"
        plateau = [y for y in bracket if floors and s_mean[sb.index(y)] >= floors[str(y)] - 0.1]
        per_seed = []
        for r in xr:  # paired: scratch's curve of the same seed, where it has every budget
            curve = {y: next((q["test_loss"] for q in cell[("scratch", y)] if q["seed"] == r["seed"]), None)
                     for y in sb}
            if None not in curve.values():
                k, value = efficiency_ratio(sb, [curve[y] for y in sb], r["test_loss"], x)
                per_seed.append({"seed": r["seed"], "ratio": value, "kind": k})
        exact = [q["ratio"] for q in per_seed if q["kind"] == "="]
        out.append({"xpt_budget_bytes": x, "xpt_loss_mean": mean, "xpt_loss_std": std,
                    "scratch_equal_budget_bytes": equal, "bracket": bracket, "ratio": equal / x,
                    "ratio_text": ratio_text(kind, equal / x), "ratio_seeds": per_seed,
                    "ratio_seeds_std": _mean_std(exact)[1], "seeds": [r["seed"] for r in xr], "kind": label,
                    "bracket_on_plateau": plateau})
    return out


def paired_differences(runs, method="xpt"):
    """At every budget where `method` and scratch both ran with the same seeds: the mean and std of
    scratch's loss minus the method's over the paired seeds, and the verdict: beats scratch when the
    mean difference is more than twice the std, worse when it is less than minus twice the std, else
    no difference (one seed: no verdict)."""
    loss = {(r["method"], r["budget_bytes"], r["seed"]): r["test_loss"] for r in runs}
    out = {}
    for x in sorted({r["budget_bytes"] for r in runs if r["method"] == method}):
        ks = sorted(k for m, y, k in loss if m == method and y == x and ("scratch", x, k) in loss)
        if not ks:
            continue
        d_mean, d_std = _mean_std([loss[("scratch", x, k)] - loss[(method, x, k)] for k in ks])
        verdict = None if d_std is None else "beats scratch" if d_mean > 2 * d_std else \
            "worse than scratch" if -d_mean > 2 * d_std else "no difference"
        out[str(x)] = {"seeds": ks, "diff_mean": d_mean, "diff_std": d_std, "verdict": verdict}
    return out


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
    test.txt, tokenizer.txt (the tokenizer's slice, outside every budget), and labelled.tsv /
    ft_dev.tsv / ft_test.tsv. Returns their paths."""
    d = out / "corpus"
    names = {**{x: f"train_{x}.txt" for x in p["budgets"]}, "dev": "dev.txt", "test": "test.txt",
             "tokenizer": "tokenizer.txt", "labelled": "labelled.tsv", "ft_dev": "ft_dev.tsv", "ft_test": "ft_test.tsv"}
    paths = {k: d / v for k, v in names.items()}
    meta = {"format": 4, "preset": b.preset, "nsmc": b.nsmc if b.preset != "tiny" else "data/ko_*.txt",
            **{k: p.get(k, 0) for k in ("budgets", "dev_lines", "test_lines", "tokenizer_bytes", "labelled",
                                        "ft_dev", "test")}}
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
    # the tokenizer's slice: the first tokenizer_bytes of the rest; the budgets are prefixes of what follows
    n_tok, used = 0, 0
    while n_tok < len(docs) and used + prepare.nbytes(docs[n_tok]) <= p.get("tokenizer_bytes", 0):
        used += prepare.nbytes(docs[n_tok])
        n_tok += 1
    tok_docs, docs = docs[:n_tok], docs[n_tok:]
    if p.get("tokenizer_bytes") and not tok_docs:
        raise ValueError(f"no Korean text left for the tokenizer's slice of {p['tokenizer_bytes']} bytes")
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
    for k, lines in (("dev", dev), ("test", test), ("tokenizer", tok_docs)):
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
    s = run_settings(p, "scratch", lr=p["lr_grid"][0], seed=1, device=b.device)
    with contextlib.redirect_stdout(io.StringIO()):  # the tokenizer's progress is noise in the workers
        tok = train.get_tokenizer(s, train.read_documents(paths["tokenizer"]), out, "tokenizer_ko",
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


def run_settings(p, method, *, lr, seed, device):
    """train.Settings of one run of `method`: the step cap with its schedule, dev evaluations, early
    stopping only after the method's min_steps (xpt's for its ablations), phase 1 dev-selected."""
    # (steps=1000, num_layers=4: train.py's defaults when the runs were made, unused by the arms (their
    # shape is the source's) but part of their identity)
    return train.Settings(max_len=p["max_len"], batch_size=p["batch_size"], lr=lr, seed=seed, steps=1000,
                          num_layers=4,
                          mlm_probability=p["mlm_probability"], phase1_steps=p["phase1_steps"],
                          phase2_steps=p["max_steps"] - p["phase1_steps"], eval_every=p["eval_every"],
                          patience=p["patience"], min_steps=p["min_steps"].get(method, p["min_steps"]["xpt"]),
                          phase1_patience=p["phase1_patience"], ckpt_every=100, log_every=10, itl_layers=1,
                          device=device)


# ----------------------------------------------------------------------------------------------------
# One arm: post-train with early stopping, score the dev-best weights on the test split
# ----------------------------------------------------------------------------------------------------
# train.Settings fields added after runs were cached, with their default: left out of an arm's identity
# while at that default, so that the cached runs stay valid
SETTINGS_ADDED = {"span_masking": False, "objective": "mlm", "generator_size": 0.25, "disc_weight": 50.0,
                  "min_steps": 0, "phase1_patience": 0, "more_steps": 0, "embedding_size": 0, "share_layers": False,
                  "plm_k": 6, "mean_span": 3.0}


# train.Settings fields that moved to demo.DemoSettings, with the values every arm had: kept in an arm's
# identity, so that the runs made before the move stay valid
SETTINGS_MOVED = {"preset": "default", "stage": "all", "source_steps": 1500, "source_lr": 0.0, "scratch_lr": 0.0}


def arm_settings(p, method, seed, lr):
    """The settings part of an arm's identity (every train.Settings field but the device)."""
    s = run_settings(p, method, lr=lr, seed=seed, device="cpu")
    return {k: v for k, v in {**SETTINGS_MOVED, **dataclasses.asdict(s)}.items()
            if k != "device" and not (k in SETTINGS_ADDED and v == SETTINGS_ADDED[k])}


def arm_config(e, method, budget, seed, lr):
    return {"source": e.source_sha or str(e.source), "method": method, "budget": budget, "seed": seed,
            "lr": lr, "settings": arm_settings(e.p, method, seed, lr), "data": e.data_sha[budget],
            "test": train.data_sha(e.data["test"])}


def arm_dir(e, method, budget, seed, lr):
    return e.out / "runs" / method / str(budget) / f"seed{seed}-lr{lr:g}-{_key(arm_config(e, method, budget, seed, lr))}"


def finished(path, config):
    """The result.json in the run folder `path` if it was made by exactly this config, else None."""
    return finished_file(Path(path) / "result.json", config)


def run_arm(e, method, budget, seed, lr, results_dir=None, need_model=False):
    """Post-train one arm (train.run_xpt: the step cap, dev-best weights, early stopping after
    min_steps) and score its dev-best weights on the test split. Every line it prints goes to
    output.txt in its folder; the result goes to result.json there and, when given, to results_dir.
    need_model: train it again when only its result is here (its folder's model/ is what fine-tunes)."""
    config = arm_config(e, method, budget, seed, lr)
    d = arm_dir(e, method, budget, seed, lr)
    path = Path(results_dir) / f"{method}-{budget}-seed{seed}-lr{lr:g}.json" if results_dir is not None else None
    # a finished run: in its folder, or committed under results_dir (a new checkout has no run folders)
    before = finished_file(path, config) if path is not None else None  # (the committed result)
    r = finished(d, config) or before
    if r is not None and need_model and not r.get("failed") and not (d / "model" / "model.safetensors").exists():
        r = None
    if r is None:
        r = _train_arm(e, method, budget, seed, lr, config, d)
    if before is not None and r is not before:  # trained again for its weights: the same numbers, or say so
        same = all(r.get(k) == before.get(k) for k in ("steps", "best_step", "dev_loss", "test_loss"))
        if same:  # (the committed file stays as it is: only its time would change)
            r = before
        else:
            print(f"note: {method} {_size(budget)} seed {seed} lr {lr:g} trained again differs from its result: "
                  f"test {before['test_loss']} then, {r['test_loss']} now (the new one is kept)")
    if path is not None and _read_json(path) != r:
        _write_atomic(path, json.dumps(r, indent=1))
    return r


def finished_file(path, config):
    """The result in the JSON file `path` if it was made by exactly this config, else None."""
    r = _read_json(path)
    return r if r is not None and r.get("config") == json.loads(json.dumps(config)) else None


def _train_arm(e, method, budget, seed, lr, config, d):
    t0 = time.time()
    d.mkdir(parents=True, exist_ok=True)
    s = run_settings(e.p, method, lr=lr, seed=seed, device=e.device)
    with open(d / "output.txt", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        try:
            model, evals = train.run_xpt(s, e.source, e.tok, e.data[budget], e.data["dev"], d, method=method)
        except train.NonFiniteLossError as err:  # (a rate too high for this arm: a grid cell that lost)
            r = {"method": method, "budget_bytes": budget, "seed": seed, "lr": lr, "failed": str(err),
                 "dev_loss": None, "test_loss": None, "converged": False, "seconds": round(time.time() - t0, 1),
                 "config": config}
            _write_atomic(d / "result.json", json.dumps(r, indent=1))
            return r
        info = train.tokenizer_info(e.tok, s)
        test = train.evaluate(model, e.data["test"], mask_id=info["mask_id"], vocab_size=info["vocab_size"],
                              special_ids=info["special_ids"], batch_size=max(s.batch_size, 64),
                              device=train.pick_device(e.device))
    last = evals[-1]["phase"]
    final = [ev for ev in evals if ev["phase"] == last]
    best = min(final, key=lambda ev: ev["loss"])  # (the weights train_loop kept)
    earlier = [ev["step"] for ev in evals if ev["phase"] != last]
    start = max(earlier, default=0)  # where the last phase began
    cap = e.p["max_steps"] - (e.p["phase1_steps"] if earlier else 0)
    curve = [{"step": ev["step"], "phase": ev["phase"], "dev_loss": round(ev["loss"], 4)} for ev in evals]
    gain = dev_gain_last_quarter(curve)
    r = {"method": method, "budget_bytes": budget, "seed": seed, "lr": lr, "steps": evals[-1]["step"],
         "phase1_steps": start if earlier else 0, "best_step": best["step"],
         "stopped": "early" if evals[-1]["step"] - start < cap else "cap",
         "converged": bool(gain < CONVERGED_GAIN), "dev_gain_last_quarter": round(gain, 4),
         "dev_loss": best["loss"], "test_loss": test["loss"], "test_acc": test["acc"], "curve": curve,
         "seconds": round(time.time() - t0, 1), "config": config}
    _write_atomic(d / "result.json", json.dumps(r, indent=1))
    return r


# ----------------------------------------------------------------------------------------------------
# Fine-tuning: NSMC accuracy, the epoch chosen on the labelled dev split
# ----------------------------------------------------------------------------------------------------
def ft_settings(e, lr, seed):
    return finetune.FinetuneSettings(epochs=e.p["ft_epochs"], batch_size=e.p["ft_batch"], lr=lr,
                                     max_len=PRESET_FT_MAX_LEN, seed=seed, device=e.device)


def run_finetune(e, model_dir, lr, seed, tag, n_labels=0):
    """Fine-tune the encoder in model_dir on the first n_labels labelled rows (0: all of them, for
    e.p["ft_epochs"] epochs; else about e.p["ft_steps"] steps); dev and test accuracy after every
    epoch; the reported test accuracy is the one of the dev-best epoch. Cached in model_dir/../."""
    rows = e.ft["train"][:n_labels] if n_labels else e.ft["train"]
    fs = ft_settings(e, lr, seed)
    if n_labels:  # few rows: as many epochs as make ft_steps steps (the dev-best epoch is kept)
        fs.epochs = max(1, round(e.p["ft_steps"] / math.ceil(len(rows) / fs.batch_size)))
    config = {"model": hashlib.sha256((Path(model_dir) / "model.safetensors").read_bytes()).hexdigest()[:16],
              "settings": {k: v for k, v in dataclasses.asdict(fs).items() if k != "device"}, "rows": e.ft["sha"],
              **({"labels": n_labels} if n_labels else {})}
    path = Path(model_dir).parent / f"finetune-{tag}-{_key(config)}.json"
    r = _read_json(path)
    if r is not None and r.get("config") == json.loads(json.dumps(config)):
        return r
    t0 = time.time()
    torch.manual_seed(seed)
    clf = finetune.load_classifier(model_dir, len(e.ft["labels"]))
    with contextlib.redirect_stderr(io.StringIO()):
        best = finetune.finetune_best_epoch(clf, rows, e.ft["dev"], e.ft["test"], fs, e.tok.pad_id,
                                            desc=f"fine-tune {tag}")
    r = {"lr": lr, **best, "seconds": round(time.time() - t0, 1), "config": config}
    _write_atomic(path, json.dumps(r, indent=1))
    return r


def ft_config(e, method, budget, seed, lm_lr):
    """What defines one --part=finetune result: the encoder (a headline run's config, or the random
    encoder's seed and shape) and the fine-tuning protocol."""
    encoder = ({"random": seed, "source": e.source_sha or str(e.source), "vocab": len(e.tok)} if method == "random"
               else arm_config(e, method, budget, seed, lm_lr))
    fs = {k: v for k, v in dataclasses.asdict(ft_settings(e, 0.0, seed)).items() if k not in ("device", "lr", "epochs")}
    return {"encoder": encoder, "settings": fs, "rows": e.ft["sha"],
            **{k: e.p[k] for k in ("ft_labels", "ft_lr_grid", "ft_steps")}}


def run_ft(e, method, budget, seed, lm_lr, results_dir=None):
    """NSMC accuracy of one encoder at each of ft_labels: the dev-best (rate, epoch) of the fine-tuning
    grid, its test accuracy. The encoder is a headline run's dev-best weights (trained again when this
    checkout has only its JSON: seeded runs repeat exactly) or the random encoder (method "random").
    The result goes to results_dir/finetune/ (one small JSON per encoder, committed as it lands)."""
    config = ft_config(e, method, budget, seed, lm_lr)
    name = f"{method}-{budget}-seed{seed}.json" if method != "random" else f"random-seed{seed}.json"
    path = Path(results_dir or e.out / "results") / "finetune" / name
    r = finished_file(path, config)
    if r is not None:
        return r
    t0 = time.time()
    if method == "random":
        model_dir, lm = random_encoder(e, seed), None
    else:
        lm = run_arm(e, method, budget, seed, lm_lr, results_dir, need_model=True)
        if lm.get("failed"):
            raise ValueError(f"{method} {_size(budget)} seed {seed} diverged: no encoder to fine-tune")
        model_dir = arm_dir(e, method, budget, seed, lm_lr) / "model"
    labels = {}
    for n in e.p["ft_labels"]:
        cells = [run_finetune(e, model_dir, lr, seed, f"{n}-labels", n) for lr in e.p["ft_lr_grid"]]
        best = max(cells, key=lambda c: c["dev_acc"])  # (the first of equals: the lower rate)
        labels[str(n)] = {"lr": best["lr"], "epoch": best["epoch"], "dev_acc": best["dev_acc"],
                          "test_acc": best["test_acc"], "grid": {f"{c['lr']:g}": c["dev_acc"] for c in cells}}
    r = {"method": method, "budget_bytes": budget, "seed": seed, "lm_lr": lm_lr,
         "lm_test_loss": lm and lm["test_loss"], "labels": labels, "seconds": round(time.time() - t0, 1),
         "config": config}
    _write_atomic(path, json.dumps(r, indent=1))
    return r


def ft_floors(e):
    """The floors that need no pretraining, at each of ft_labels (label_floors)."""
    return label_floors(e.ft["rows"], e.p["ft_labels"])


def label_floors(rows, ft_labels):
    """{n: floors} for the first n labelled rows, n in ft_labels: always the majority class, and a
    bag-of-words logistic regression (its L2 chosen on the ft_dev rows); both tested on the ft_test rows.
    (Shared with bench/objectives.py.) One thread, as the runs: at two, beside busy workers, the tiny
    full-batch steps spent up to a minute waiting on each other (0.6 s at one)."""
    out, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for n in ft_labels:
            train_rows = rows["labelled"][:n]
            bow, l2 = bow_logreg(train_rows, rows["ft_dev"], rows["ft_test"])
            out[str(n)] = {"majority": majority_class([y for _, y in train_rows], [y for _, y in rows["ft_test"]]),
                           "bow_logreg": bow, "bow_l2": l2}
    finally:
        torch.set_num_threads(threads)
    return out


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
    s = run_settings(e.p, "scratch", lr=1e-3, seed=1, device=e.device)
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
# The plan: which runs, in which order, each learning rate chosen on dev as soon as its grid is done
# ----------------------------------------------------------------------------------------------------
def _nearest(x, xs):
    """The element of xs nearest to x in log-bytes (the smaller one on a tie)."""
    return min(sorted(xs), key=lambda y: abs(math.log(y) - math.log(x)))


def chosen_lrs(p, done, methods=HEADLINE):
    """{(method, grid budget): peak lr} for the grid cells whose seed-1 runs have all finished: the
    lowest dev loss of lr_grid. done = {task: result} with task ("arm", method, budget, seed, lr)."""
    lrs, s1 = {}, p["seeds"][0]
    for m in methods:
        for x in p["grid_budgets"][m]:
            cells = [done.get(("arm", m, x, s1, lr)) for lr in p["lr_grid"]]
            if None not in cells:
                ok = [r for r in cells if r["dev_loss"] is not None]  # (a diverged rate is never chosen)
                lrs[(m, x)] = min(ok, key=lambda r: r["dev_loss"])["lr"] if ok else None
    return lrs


def plan(p, done, part="lm"):
    """The runs whose learning rate is known now, in the order they should run (the longest and the
    ones others wait for first): 1. the lr grid at the grid budgets, seed 1; 2. the other seeds at the
    grid budgets; 3. the other budgets, every seed (the nearest grid budget's rate). part=ablations:
    each ablation once (seed 1) at xpt's budgets, at xpt's rate for the budget. Returns [task]."""
    s1, seeds = p["seeds"][0], list(p["seeds"])
    lrs = chosen_lrs(p, done)
    lr_of = lambda m, x: lrs.get((m, _nearest(x, p["grid_budgets"][m])))  # noqa: E731  (None: not yet, or all diverged)
    if part == "finetune":  # (the grids that choose the encoders' rates first: finished ones come back cached)
        grid = [("arm", m, g, s1, lr) for m, x in p["ft_arms"] for g in [_nearest(x, p["grid_budgets"][m])]
                for lr in p["lr_grid"]]
        return grid + [("ft", "random", 0, k, 0.0) for k in seeds] + [
            ("ft", m, x, k, lr_of(m, x)) for m, x in p["ft_arms"] for k in seeds if lr_of(m, x) is not None]
    if part == "ablations":  # (xpt's grid first: the ablations take its rates; finished runs come back cached)
        grid = [("arm", "xpt", x, s1, lr) for x in p["grid_budgets"]["xpt"] for lr in p["lr_grid"]]
        return grid + [("arm", m, x, s1, lr_of("xpt", x)) for x in sorted(p["arm_budgets"]["xpt"], reverse=True)
                       for m in ABLATIONS if lr_of("xpt", x) is not None]
    order = lambda m, x: (m != "scratch", -x)  # noqa: E731  (scratch's long runs first, big budgets first)
    cells = sorted(((m, x) for m in HEADLINE for x in p["arm_budgets"][m]), key=lambda c: order(*c))
    grid = [c for c in cells if c[1] in p["grid_budgets"][c[0]]]
    tasks = [("arm", m, x, s1, lr) for m, x in grid for lr in p["lr_grid"]]
    tasks += [("arm", m, x, k, lr_of(m, x)) for m, x in grid for k in seeds[1:] if lr_of(m, x) is not None]
    tasks += [("arm", m, x, k, lr_of(m, x)) for m, x in cells if (m, x) not in grid for k in seeds
              if lr_of(m, x) is not None]
    return tasks


def full_plan_size(p, part="lm"):
    """How many runs the whole plan holds (every rate known)."""
    n = len(p["lr_grid"]) + len(p["seeds"]) - 1
    if part == "finetune":
        grids = {(m, _nearest(x, p["grid_budgets"][m])) for m, x in p["ft_arms"]}
        return len(grids) * len(p["lr_grid"]) + (len(p["ft_arms"]) + 1) * len(p["seeds"])
    if part == "ablations":
        return len(ABLATIONS) * len(p["arm_budgets"]["xpt"]) + len(p["grid_budgets"]["xpt"]) * len(p["lr_grid"])
    return sum(n if x in p["grid_budgets"][m] else len(p["seeds"]) for m in HEADLINE for x in p["arm_budgets"][m])


# ----------------------------------------------------------------------------------------------------
# Workers: each task is a small tuple; a worker builds the Experiment once from the caches
# ----------------------------------------------------------------------------------------------------
_WORKER = {}


def _init_worker(b_dict, threads):
    torch.set_num_threads(threads)
    _WORKER["b"] = BenchSettings(**b_dict)
    watch_parent()


def watch_parent():
    """In a worker process: leave when the command that started it dies (_exit_with_parent)."""
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent, every=2.0):
    """A worker whose command died (killed, or its terminal closed) would go on training its arm, or
    sit idle, with nobody to collect the result, and a rerun would train the same arm beside it. So
    each worker watches its parent and leaves when it is gone: a run loses only the steps since its
    last checkpoint, as a killed command does."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def _task(task, results_dir):
    """("arm" | "ft", method, budget, seed, lr) -> (task, result, seconds spent)."""
    if "e" not in _WORKER:
        _WORKER["e"] = experiment(_WORKER["b"])
    e, t0 = _WORKER["e"], time.time()
    if task[0] not in ("arm", "ft"):
        raise ValueError(f"unknown task {task!r}")
    return task, (run_arm if task[0] == "arm" else run_ft)(e, *task[1:], results_dir=results_dir), time.time() - t0


def _task_text(task, r):
    """One line on a finished task, for the progress bar."""
    kind, m, x, k, lr = task
    if kind == "ft":
        accs = ", ".join(f"{n} labels {c['test_acc']:.1%}" for n, c in r["labels"].items())
        return f"fine-tune {m}{'' if m == 'random' else ' ' + _size(x)} seed {k}: {accs}"
    return f"{m} {_size(x)} seed {k} lr {lr:g}: " + ("diverged" if r.get("failed") else f"test {r['test_loss']:.3f}")


def run_plan(p, part, workers, b_dict, results_dir, bar_desc):
    """Run the plan to its end, each run started as soon as its rate is known (run_tasks)."""
    return run_tasks(lambda done: plan(p, done, part), functools.partial(_task, results_dir=results_dir), workers,
                     full_plan_size(p, part), bar_desc, _task_text, initializer=_init_worker, initargs=(b_dict, 1))


def run_tasks(next_tasks, call, workers, total, desc, describe, initializer=None, initargs=()):
    """Run every task that next_tasks(done) lists, in its order, up to `workers` at once in spawned
    processes, asking again after each finished one (a finished task can make others ready, e.g. a
    finished grid its seeds). call(task) -> (task, result, seconds) must pickle (a module-level function
    or a partial of one); describe(task, result) is the progress bar's line. Returns {task: result}.
    (Shared by the benches that run a plan: this one and bench/objectives.py.)"""
    done, running = {}, {}
    bar = tqdm(total=total, desc=desc, dynamic_ncols=True)
    pool, threads = None, torch.get_num_threads()
    # one thread per run in this process too, as in the pool's workers: a CPU run repeats its numbers
    # exactly only at the same thread count (and two commands side by side then share the cores fairly)
    torch.set_num_threads(1)
    if workers > 1:
        # spawn: fresh interpreters (forking a process that already ran torch can hang its thread pool)
        pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                                      initializer=initializer, initargs=initargs)
    try:
        while True:
            ready = [t for t in next_tasks(done) if t not in done and t not in running.values()]
            if pool is None:
                if not ready:
                    break
                task, r, _ = call(ready[0])
                done[task] = r
                bar.update(1)
                continue
            for task in ready[:workers - len(running)]:
                running[pool.submit(call, task)] = task
            if not running:
                break
            finished_now, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for f in finished_now:
                task = running.pop(f)
                task, r, _ = f.result()  # (a failed run raises here, naming itself in its output.txt)
                done[task] = r
                bar.update(1)
                bar.set_postfix_str(describe(task, r))
    finally:
        bar.close()
        torch.set_num_threads(threads)
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return done


def publish(res, path, tables, plot_fn):
    """A bench's summary: the JSON at `path`, its tables on stdout, its plot beside the JSON."""
    _write_atomic(path, json.dumps(res, indent=1))
    print(f"wrote {path}\n")
    print(tables(res))
    plot_fn(res, path.with_suffix(".png"))


# ----------------------------------------------------------------------------------------------------
# The summary: every finished run of the current protocol, the floors, the lr grid, the ratios
# ----------------------------------------------------------------------------------------------------
def collect(e, p, results_dir):
    """The finished runs of this protocol in results_dir (a file whose config differs from what this
    code would run is left out and counted as stale). Returns (runs, n_stale)."""
    runs, stale = [], 0
    for path in sorted(Path(results_dir).glob("*.json")):
        r = _read_json(path)
        if r is None or "config" not in r:
            continue
        m, x, k, lr = r["method"], r["budget_bytes"], r["seed"], r["lr"]
        if x in p["budgets"] and r["config"] == json.loads(json.dumps(arm_config(e, m, x, k, lr))):
            runs.append(r)
        else:
            stale += 1
    return runs, stale


def collect_ft(e, p, results_dir):
    """The finished --part=finetune results of this protocol in results_dir/finetune (the chosen LM
    rate of each encoder is read from the file and checked through its config)."""
    out = []
    for path in sorted((Path(results_dir) / "finetune").glob("*.json")):
        r = _read_json(path)
        if r is not None and "config" in r and r["config"] == json.loads(json.dumps(
                ft_config(e, r["method"], r["budget_bytes"], r["seed"], r["lm_lr"]))):
            out.append(r)
    return out


def ft_summary(e, p, results):
    """Per label count: the floors, and each encoder's test accuracy over its seeds."""
    if not results:
        return {}
    floors = ft_floors(e)
    out = {}
    for n in p["ft_labels"]:
        enc = {}
        for r in results:
            name = "random encoder" if r["method"] == "random" else f"{r['method']} {_size(r['budget_bytes'])}"
            enc.setdefault(name, []).append(r["labels"][str(n)]["test_acc"])
        out[str(n)] = {**floors[str(n)], "encoders": {
            k: {"test_acc": v, "mean": _mean_std(v)[0], "std": _mean_std(v)[1]} for k, v in enc.items()}}
    return out


def summarize(e, p, runs, n_stale=0, ft_results=()):
    budgets = list(p["budgets"])
    info = train.tokenizer_info(e.tok, run_settings(p, "scratch", lr=1e-3, seed=1, device="cpu"))
    test_ids = e.data["test"]["input_ids"].numpy().ravel()
    unigram = {str(x): train.unigram_loss(e.data[x]["input_ids"].numpy().ravel(), test_ids, len(e.tok),
                                          info["special_ids"]) for x in budgets}
    done = {("arm", r["method"], r["budget_bytes"], r["seed"], r["lr"]): r for r in runs}
    failed = [r for r in runs if r.get("failed")]
    runs = [r for r in runs if not r.get("failed")]
    lrs = chosen_lrs(p, done)
    lr_of = lambda m, x: lrs.get((m, _nearest(x, p["grid_budgets"][m])))  # noqa: E731
    # the runs of the protocol: every grid cell at seed 1; elsewhere only the chosen rate
    headline = [r for r in runs if r["method"] in HEADLINE and r["lr"] == lr_of(r["method"], r["budget_bytes"])]
    grid = {m: {str(x): {f"{lr:g}": {k: done[("arm", m, x, p["seeds"][0], lr)].get(k)
                                     for k in ("dev_loss", "test_loss", "steps", "best_step", "converged")}
                         for lr in p["lr_grid"] if ("arm", m, x, p["seeds"][0], lr) in done}
                for x in p["grid_budgets"][m]} for m in HEADLINE}
    keep = ("method", "budget_bytes", "seed", "lr", "steps", "phase1_steps", "best_step", "stopped", "converged",
            "dev_gain_last_quarter", "dev_loss", "test_loss", "test_acc", "seconds", "curve")
    ablations = [r for r in runs if r["method"] in ABLATIONS and r["lr"] == lr_of("xpt", r["budget_bytes"])]
    return {"preset": e.preset, "eval_masking": "mask-only, 15% of tokens", "paper_ratio": PAPER_RATIO,
            "budgets": budgets, "arm_budgets": {m: list(v) for m, v in p["arm_budgets"].items()},
            "seeds": list(p["seeds"]), "source": source_summary(e),
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items() if k != "budgets"},
            "tokens": {str(x): int(e.data[x]["attention_mask"].sum()) for x in budgets},
            "dev_tokens": int(e.data["dev"]["attention_mask"].sum()),
            "test_tokens": int(e.data["test"]["attention_mask"].sum()),
            "unigram_loss": unigram, "lr": {f"{m} {x}": lr for (m, x), lr in sorted(lrs.items())},
            "lr_grid": grid, "runs": [{k: r[k] for k in keep} for r in sorted(
                headline, key=lambda r: (r["method"], r["budget_bytes"], r["seed"]))],
            "ablations": [{k: r[k] for k in keep} for r in ablations],
            "ratios": equal_loss_ratios(headline, len(p["seeds"]), unigram), "paired": paired_differences(headline),
            "finished_runs": len(runs) + len(failed), "plan_size": full_plan_size(p),
            "failed_runs": [{k: r[k] for k in ("method", "budget_bytes", "seed", "lr", "failed")} for r in failed],
            "complete": len(runs) + len(failed) - len(ablations) >= full_plan_size(p) and not any(
                t not in done for t in plan(p, done)), "stale_runs": n_stale,
            "worker_seconds": round(sum(r["seconds"] for r in runs), 1),
            "finetune": ft_summary(e, p, list(ft_results)),
            "finetune_runs": [{k: r[k] for k in ("method", "budget_bytes", "seed", "lm_lr", "lm_test_loss", "labels")}
                              for r in ft_results]}


# ----------------------------------------------------------------------------------------------------
# Tables and the plot, from a summary JSON alone
# ----------------------------------------------------------------------------------------------------
def _size(x):
    return f"{x / 1000:g} KB" if x < 1_000_000 else f"{x / 1e6:g} MB"


def wrapped(lines, width=110):
    """Markdown lines with every prose line wrapped at `width` (table rows and blank lines as they are)."""
    out = []
    for line in lines:
        out += [line] if line.startswith("|") or len(line) <= width else textwrap.wrap(
            line, width, subsequent_indent="  " if line.startswith("- ") else "", break_on_hyphens=False)
    return "\n".join(out)


def _ms(mean, std, fmt="{:.3f}"):
    if mean is None:
        return "-"
    return fmt.format(mean) + ("" if std is None else " ± " + fmt.format(std))


def markdown(res):
    runs = res["runs"]
    cell = lambda m, x: [r for r in runs if r["method"] == m and r["budget_bytes"] == x]  # noqa: E731
    lines = [f"Masked-LM test loss at [MASK] positions (15% of the {res['test_tokens']:,} test tokens; nats, lower "
             f"is better): mean ± std over the paired seeds, the unigram floor of each budget, and (converged/seeds) how "
             f"many runs converged (best dev loss improved < {CONVERGED_GAIN} nat over the run's last quarter).", ""]
    lines += ["| budget | tokens | unigram floor | scratch | xpt | xpt vs scratch |", "|---|---|---|---|---|---|"]
    for x in res["budgets"]:
        cells = [_size(x), f"{res['tokens'][str(x)]:,}", f"{res['unigram_loss'][str(x)]:.3f}"]
        for m in HEADLINE[::-1]:
            rs = cell(m, x)
            conv = sum(r["converged"] for r in rs)
            cells.append(f"{_ms(*_mean_std([r['test_loss'] for r in rs]))} ({conv}/{len(rs)} converged)"
                         if rs else "-")
        d = res["paired"].get(str(x))
        cells.append("-" if d is None else f"{d['verdict'] or 'one seed'} ({d['diff_mean']:+.3f})")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Data-efficiency ratios (paper: up to {res['paper_ratio']}x): the scratch budget that reaches "
              "xpt's mean loss (linear in log-budget between the two bracketing scratch budgets) over xpt's "
              "budget.", "", "| xpt budget | xpt loss | scratch budget with that loss | ratio | per seed | kind |",
              "|---|---|---|---|---|---|"]
    for q in res["ratios"]:
        per = ", ".join(ratio_text(s["kind"], s["ratio"]) for s in q["ratio_seeds"]) or "-"
        lines.append(f"| {_size(q['xpt_budget_bytes'])} | {_ms(q['xpt_loss_mean'], q['xpt_loss_std'])} | "
                     f"{_size(round(q['scratch_equal_budget_bytes'], -3)) if q['bracket'] else '-'}"
                     f"{' (' + '-'.join(map(_size, q['bracket'])) + ')' if len(q['bracket']) == 2 else ''} | "
                     f"{q['ratio_text']} | {per} | {q['kind']}"
                     + "".join(f"; scratch {_size(y)} on plateau" for y in q.get("bracket_on_plateau", [])) + " |")
    lines += ["", "Peak learning rates, chosen on the dev split (seed 1; dev loss per rate):"]
    for m, xs in res["lr_grid"].items():
        for x, cells in xs.items():
            if cells:
                lines.append(f"- {m} at {_size(int(x))}: " + ", ".join(
                    f"{lr}: " + ("diverged" if c["dev_loss"] is None else
                                 f"{c['dev_loss']:.3f}{'' if c['converged'] else ' (not converged)'}")
                    for lr, c in cells.items())
                    + (" (grid unfinished)" if f"{m} {x}" not in res["lr"] else " -> every rate diverged"
                       if res["lr"][f"{m} {x}"] is None else f" -> {res['lr'][f'{m} {x}']:g}"))
    if res.get("ablations"):
        lines += ["", "Ablations (one seed, xpt's rate): " + "; ".join(
            f"{r['method']} {_size(r['budget_bytes'])}: {r['test_loss']:.3f}" for r in res["ablations"]) + "."]
    if res.get("finetune"):
        ft = res["finetune"]
        names = sorted({k for c in ft.values() for k in c["encoders"]}, key=lambda k: (k != "random encoder", k))
        lines += ["", "NSMC sentiment accuracy on the test rows with few labelled reviews (fine-tuned, the rate "
                  "and epoch chosen on dev rows; mean ± std over the seeds), next to the floors that need no "
                  "pretraining:", "",
                  "| labels | majority class | bag-of-words | " + " | ".join(names) + " |",
                  "|---" * (3 + len(names)) + "|"]
        for n, c in ft.items():
            cells = [n, f"{c['majority']:.1%}", f"{c['bow_logreg']:.1%}"]
            for k in names:
                q = c["encoders"].get(k)
                cells.append("-" if q is None else f"{_ms(q['mean'] * 100, q['std'] and q['std'] * 100, '{:.1f}')}% "
                             f"({len(q['test_acc'])} seed{'s' * (len(q['test_acc']) > 1)})")
            lines.append("| " + " | ".join(cells) + " |")
    st = res["settings"]
    lines += ["", f"Runs: {res['finished_runs']} of the protocol's {res['plan_size']} finished "
              f"({'complete' if res['complete'] else 'in progress'}), "
              f"{res['worker_seconds'] / 3600:.1f} worker-hours; step cap {st['max_steps']:,}, early stopping only "
              f"after {st['min_steps']['scratch']:,} steps for scratch ({st['min_steps']['xpt']:,} for xpt's phase 2) "
              f"and {st['patience'] * st['eval_every']:,} steps without a better dev loss."]
    return wrapped(lines)


def pyplot():
    """matplotlib.pyplot drawing to files (no window), or None with a note when it is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(install matplotlib for a plot)")
        return None
    return plt


def save_figure(plt, fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def plot(res, path):
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = res["budgets"]
    ax.plot([x / 1000 for x in xs], [res["unigram_loss"][str(x)] for x in xs], "k--", label="unigram floor")
    for m, colour in (("scratch", "C0"), ("xpt", "C3")):
        pts = [(x / 1000, *_mean_std([r["test_loss"] for r in res["runs"] if r["method"] == m and r["budget_bytes"] == x]))
               for x in xs]
        pts = [q for q in pts if q[1] is not None]
        ax.errorbar([q[0] for q in pts], [q[1] for q in pts], yerr=[q[2] or 0 for q in pts], marker="o", lw=2,
                    capsize=3, label=m, color=colour)
    for q in res["ratios"]:
        if q["bracket"]:
            ax.annotate("", xy=(q["scratch_equal_budget_bytes"] / 1000, q["xpt_loss_mean"]),
                        xytext=(q["xpt_budget_bytes"] / 1000, q["xpt_loss_mean"]),
                        arrowprops=dict(arrowstyle="->", color="grey"))
            ax.text(q["xpt_budget_bytes"] / 1000, q["xpt_loss_mean"] - 0.12, q["ratio_text"], fontsize=8)
    ax.set(xscale="log", xlabel="Korean training text (KB)", ylabel="test MLM loss at [MASK] (nats)")
    ax.set_xticks([x / 1000 for x in xs], [f"{x / 1000:g}" for x in xs])
    ax.minorticks_off()
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(plt, fig, path)


# ----------------------------------------------------------------------------------------------------
# The command
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
    if b.part not in ("lm", "ablations", "finetune"):
        raise ValueError(f"part must be lm, ablations or finetune, got {b.part!r}")
    p = PRESETS[b.preset]
    e = experiment(b)
    _WORKER.update(b=b, e=e)
    tiny = b.preset == "tiny"
    results_dir = Path(b.results_dir or (e.out / "results" if tiny else ROOT / "bench" / "results" /
                                         f"data_efficiency_{b.preset}"))
    json_out = Path(b.json_out or (e.out / "results.json" if tiny else ROOT / "bench" / "results" /
                                   f"data_efficiency_{b.preset}.json"))
    if not b.collect:
        run_plan(p, b.part, b.workers or p["workers"], dataclasses.asdict(b), results_dir,
                 f"{b.preset} {b.part} runs")
    runs, stale = collect(e, p, results_dir)
    summary = summarize(e, p, runs, stale, collect_ft(e, p, results_dir))
    _write_atomic(json_out, json.dumps(summary, indent=1))
    print(f"wrote {json_out}")
    plot(summary, json_out.with_suffix(".png"))
    print(f"\nCommand: python bench/data_efficiency.py --preset={b.preset}\n")
    print(markdown(summary))
    return summary


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return run(train.parse_args(argv, BenchSettings(), usage=[__doc__.strip()]))


def cli(argv=None):
    """main() for the command line: a bad setting or a missing input is one line "error: ..." on stderr
    and exit status 2, not a traceback."""
    try:
        main(argv)
    except train.runs.Interrupted as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    except (prepare.PrepareError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
