"""
Which pretraining objective makes the better encoder? The lecture's objectives side by side (ARMS: the
masked LM, whole-word, SpanBERT, ELECTRA, XLNet's permutation LM, T5's spans of mean 1, 3 and 10) at the
same steps, their time beside; or ELECTRA against a masked LM at the same compute (--equal=compute).

    python bench/objectives.py --preset=tiny      # toy data from the repository, seconds (the test)
    python bench/objectives.py --preset=cpu       # all eight arms on Korean NSMC, 2 cores, resumable (hours)
    python bench/objectives.py --preset=cpu --collect=true   # the summary of the runs finished so far
    python bench/objectives.py --preset=cpu --more_steps=16000   # each arm's seeds 16,000 steps further
    python bench/objectives.py --preset=cpu --arms=mlm,electra --equal=compute   # ELECTRA's own question
    python bench/objectives.py --report=bench/results/objectives_cpu.json   # the results doc's tables

Clark et al., "ELECTRA: Pre-training Text Encoders as Discriminators Rather Than Generators", ICLR 2020
(arXiv:2003.10555): a small generator fills masked positions with plausible tokens and the encoder, a
discriminator, learns to tell every token whether it was replaced. Every token teaches it something, not
only the masked 15%, and the paper finds more downstream quality per unit of compute (ELECTRA-Small 79.9
GLUE against BERT-Small's 75.1 at the same compute). Here, at toy scale:

  data      Korean NSMC reviews with the data-efficiency bench's cut (bench/data_efficiency.korean_files:
            the same shuffle, dev and test splits, tokenizer slice and 2,000-token BPE), one training
            budget: 1 MB (cpu), on which a masked LM with train.py's defaults leaves the unigram plateau
            (bench/defaults.py). cpu-200kb, the first protocol, trained on 200 KB (4 layers, batch 64,
            3,000 steps), where the masked LM leaves the plateau after ~1,500 steps but whole-word and
            span masking memorised the 1,850 training rows (~100 epochs) and never did;
  arms      from scratch, one shape (cpu: train.py's 2 layers x 128), 40% of the tokens masked (BERT's
            80/10/10) at the masked LM's input and at ELECTRA's generator's, and T5's noise density 40%
            (the papers use 15%: at 15% this size stays on the plateau), ELECTRA's generator 1/4 as wide,
            its loss weight 50; dropout 0.1 for every arm, T5 too (T5 1.1 pretrains without dropout,
            t5.DEFAULTS, but on C4, which it never repeats; here every arm sees its rows ~28 times, and
            T5 at mean span 10 without dropout memorised them: docs/results.md);
  lr        each arm's peak lr from lr_grid, chosen at the first seed by fine-tuned dev accuracy (the
            quantity compared), then the other seeds at it;
  compute   the seconds per step of each arm are measured once, in this process before any run starts,
            the arms alternating on one thread (cpu: a T5 step, encoder and decoder, costs up to 2.4x a
            masked LM's; ELECTRA's, with its generator and a head on every token, 1.5x). --equal=steps (the cpu
            preset): every arm `steps`, its minutes beside. --equal=compute (tiny): each arm gets as many
            steps as fit in the time the costliest arm takes for `steps`, every seed; the first seed's grid
            runs, all at `steps`, are the equal-steps row;
  scored    the masked LM's and the generator's loss on the test split at [MASK] positions (15%, each position once,
            one by one: whole-word's too, and so its dev curve: train.evaluate), next to the unigram floor;
            XLNet and T5 on their own targets (T5: its span tokens, not its sentinels and end token:
            t5.make_batch), next to theirs; the discriminator's recall of replaced tokens, its accuracy on
            original ones, its precision and its AUC; NSMC sentiment with ft_labels labelled reviews, one head for every
            encoder (the mean of the final hidden states -> linear, finetune.MeanPoolClassifier), its lr and epoch
            chosen on labelled dev rows, tested on NSMC's test reviews. Floors: the majority class, a bag-of-words
            logistic regression, and a random encoder of the same shape fine-tuned alike (BERT's; XLNet's and T5's
            too where those arms run: RANDOM). A run has converged when its best dev loss gained < 0.02 nat
            over its last quarter and is at least 0.1 nat under its dev floor (as flat but not that far under:
            "plateau", where a stopping rule must not fire); one that ended above its best is "rising".

Every run and every fine-tuning writes one JSON under --results_dir as it finishes (a rerun does only
what is missing, from another checkout too); the summary JSON, tables and a plot at the end.

Status (2026-12-05): probes of the cpu preset's recipe found that ELECTRA's discriminator does not learn
within it (held-out AUC 0.52-0.58 after up to 6,000 steps, whatever the generator's width or the masking;
a generator 1/4 or 1/2 as wide stays on the plateau at 200 KB): docs/results.md. Its arm runs last and is
reported as what it is. Continued to 24,000 steps (--more_steps=16000) it does learn (AUC 0.88 +- 0.03,
three seeds), its generator still near its floor. The cpu preset's runs (all eight arms, three seeds: 4-5 h
on the faster 2-core machine, up to twice that on the slower) and their continuation to 24,000 steps (~4 h
more there, two runs at a time; runs named ...+16000, summary objectives_cpu+16000.json) are in
bench/results/objectives_cpu/: at 24,000 steps every arm but T5 at mean span 1 is past its plateau, and one
run of 24 has converged.
--preset=tiny runs every step of the protocol in the tests.
"""
import contextlib
import functools
import io
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "data"))

import torch  # noqa: E402

import data_efficiency as de  # noqa: E402  (bench/data_efficiency.py: corpora, floors, JSON helpers)
import finetune  # noqa: E402
import train  # noqa: E402

ARMS = {  # arm -> the train.Settings fields that make it (the same shape, data and masking share for all)
    "mlm": dict(objective="mlm"),                          # BERT/RoBERTa: tokens chosen one by one
    "whole-word": dict(objective="mlm", whole_word=True),  # all pieces of a word together
    "spanbert": dict(objective="mlm", span_masking=True),  # SpanBERT's spans of whole words
    "electra": dict(objective="electra"),                  # replaced-token detection (generator 1/4 wide)
    "plm": dict(objective="plm"),                          # XLNet's permutation LM (xlnet.py)
    # T5's span corruption (t5.py), mean span 1, 3, 10, with the others' dropout 0.1 (not t5.DEFAULTS'
    # none: that is for text never repeated; without it, mean span 10 memorised its rows, docs/results.md)
    "t5-span1": dict(objective="t5", mean_span=1.0, dropout=0.1),
    "t5-span3": dict(objective="t5", mean_span=3.0, dropout=0.1),
    "t5-span10": dict(objective="t5", mean_span=10.0, dropout=0.1),
}
PRESETS = {
    "tiny": dict(arms=("mlm", "electra"), budget=20_000, dev_lines=10, test_lines=20, tokenizer_bytes=0,
                 ko_vocab=400, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_len=32,
                 batch_size=8, steps=12, eval_every=4, mlm_probability=0.4, lr_grid=(1e-3, 2e-3), seeds=(1, 2),
                 labelled=100, ft_dev=50, test=0, ft_labels=(40, 100), ft_lr_grid=(1e-3,), ft_steps=6,
                 ft_batch=16, timing_steps=2, workers=1, equal="compute"),
    # the lecture's comparison: 1 MB of reviews and train.py's defaults (2 layers, batch 32, 8,000 steps),
    # with which a masked LM leaves the plateau on 1 MB of Korean (bench/defaults.py); at 200 KB and 3,000
    # steps (cpu-200kb, the first protocol) whole-word and span masking memorised their training rows
    "cpu": dict(arms=("whole-word", "spanbert", "mlm", "plm", "t5-span3", "t5-span1", "t5-span10", "electra"),
                budget=1_000_000, dev_lines=400, test_lines=1000, tokenizer_bytes=200_000, ko_vocab=2000,
                hidden_size=128, num_layers=2, num_heads=4, intermediate_size=512, max_len=32, batch_size=32,
                steps=8000, eval_every=500, mlm_probability=0.4, lr_grid=(1e-3, 2e-3), seeds=(1, 2, 3),
                labelled=1000, ft_dev=1000, test=2000, ft_labels=(250, 1000), ft_lr_grid=(3e-4, 1e-3),
                ft_steps=250, ft_batch=32, timing_steps=20, workers=2, equal="steps"),
    "cpu-200kb": dict(arms=("mlm", "whole-word", "spanbert", "plm", "t5-span1", "t5-span3", "t5-span10", "electra"),
                      budget=200_000, dev_lines=400, test_lines=1000, tokenizer_bytes=200_000, ko_vocab=2000,
                      hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, max_len=32,
                      batch_size=64, steps=3000, eval_every=250, mlm_probability=0.4, lr_grid=(1e-3, 2e-3),
                      seeds=(1, 2, 3), labelled=1000, ft_dev=1000, test=2000, ft_labels=(250, 1000),
                      ft_lr_grid=(3e-4, 1e-3), ft_steps=250, ft_batch=32, timing_steps=20, workers=2,
                      equal="steps"),
}
# the random encoders fine-tuned as floors, one per architecture the arms have (the arm whose shape it takes):
# BERT's for the masked LMs and ELECTRA, XLNet's and T5's for theirs (pre-norm T5 may fine-tune unlike BERT)
RANDOM = {"random": "mlm", "random-xlnet": "plm", "random-t5": "t5-span3"}
FT_MAX_LEN = 32  # fine-tuning rows are cut to the pretraining length (NSMC reviews: ~25 tokens)
PLATEAU = 0.1  # nats: a converged run must be this far under its dev floor (train.learned_context's margin)
_WORKER = {}  # per process: the shared data, built once


@dataclass
class BenchSettings:
    preset: str = "tiny"          # tiny (toy data, the test) | cpu (Korean NSMC, 2 cores)
    out_dir: str = "out/objectives"  # corpora, tokenizer, run folders (models); a rerun resumes from here
    results_dir: str = ""         # one JSON per run; "" = bench/results/objectives_<preset>/ (tiny: under out_dir)
    nsmc: str = str(ROOT.parent / "shared" / "data" / "nsmc")  # NSMC folder (train.tsv, test.tsv, unlabeled.txt)
    arms: str = ""                # comma-separated arms of ARMS to compare; "" = the preset's
    equal: str = ""               # steps (every arm `steps`) | compute (the costliest arm's time); "" = the preset's
    workers: int = 0              # runs at once, one thread each; 0 = the preset's
    more_steps: int = 0           # continue each arm's seeds at its chosen lr N more steps from their finished
    #                               weights (train.py's --more_steps: a fresh warm-up and decay), no new grid
    collect: bool = False         # summarise what has finished (no training)
    report: str = ""              # print the tables of a summary JSON and stop


# ----------------------------------------------------------------------------------------------------
# What the runs share: corpora, tokenizer, packed data, labelled rows
# ----------------------------------------------------------------------------------------------------
def preset(b):
    """The preset's settings, its arms replaced by --arms and its rule of equality by --equal when given."""
    p = dict(PRESETS[b.preset])
    if b.equal:
        if b.equal not in ("steps", "compute"):
            raise ValueError(f"--equal={b.equal}: steps or compute")
        p["equal"] = b.equal
    if b.arms:
        p["arms"] = tuple(a.strip() for a in b.arms.split(",") if a.strip())
        unknown = [a for a in p["arms"] if a not in ARMS]
        if unknown or not p["arms"]:
            raise ValueError(f"--arms: unknown {unknown or 'none given'}; the arms are {', '.join(ARMS)}")
    if b.more_steps:
        if b.more_steps < 0 or p["equal"] != "steps":
            raise ValueError(f"--more_steps={b.more_steps}: a count > 0 of steps, with --equal=steps "
                             "(every arm continued alike)")
        p["more_steps"] = b.more_steps
    return p


def shared(b):
    """{p, out, results, tok, train, dev, test, ft}: built once per process (the corpora once per out_dir)."""
    if _WORKER.get("key") == (b.preset, b.out_dir, b.results_dir, b.arms, b.equal, b.more_steps):
        return _WORKER["shared"]
    p = preset(b)
    out = Path(b.out_dir) / b.preset
    results = Path(b.results_dir or (out / "results" if b.preset == "tiny" else
                                     ROOT / "bench" / "results" / f"objectives_{b.preset}"))
    paths = de.korean_files({**p, "budgets": (p["budget"],)}, de.BenchSettings(preset=b.preset, nsmc=b.nsmc), out)
    s = settings(p, "mlm", 1, p["lr_grid"][0], p["steps"])
    with contextlib.redirect_stdout(io.StringIO()):  # (the tokenizer's progress: noise in the workers)
        tok = train.get_tokenizer(s, train.read_documents(paths["tokenizer"] if p["tokenizer_bytes"]
                                                          else paths[p["budget"]]),
                                  out, "tokenizer_ko", kind="bpe", vocab_size=p["ko_vocab"])
        train_data, dev = train.build_datasets(s, tok, paths[p["budget"]], paths["dev"], out / "cache")
        test = train.build_datasets(s, tok, paths["test"], paths["test"], out / "cache")[1]
    rows = {k: finetune.read_tsv(paths[k]) for k in ("labelled", "ft_dev", "ft_test")}
    labels = finetune.label_map(rows["labelled"])
    splits = (("train", "labelled"), ("dev", "ft_dev"), ("test", "ft_test"))
    ft = {"labels": labels, "rows": rows,
          **{k: finetune.encode_rows(rows[r], tok, FT_MAX_LEN, labels) for k, r in splits}}
    sh = dict(p=p, out=out, results=results, tok=tok, paths=paths, train=train_data, dev=dev, test=test, ft=ft,
              data=train.data_sha(train_data, dev), test_sha=train.data_sha(test))
    _WORKER.update(key=(b.preset, b.out_dir, b.results_dir, b.arms, b.equal, b.more_steps), shared=sh)
    return sh


def extra(p, steps):
    """The steps of a run beyond the preset's that are a continuation (--more_steps), else 0."""
    return steps - p["steps"] if p.get("more_steps") and steps > p["steps"] else 0


def settings(p, arm, seed, lr, steps):
    """train.Settings of one pretraining run (no early stopping: every arm trains all its steps; a run
    longer than the preset's steps by --more_steps is the preset's run and a continuation of it)."""
    more = extra(p, steps)
    return train.Settings(task="mlm", hidden_size=p["hidden_size"], num_layers=p["num_layers"],
                          num_heads=p["num_heads"], intermediate_size=p["intermediate_size"], max_len=p["max_len"],
                          batch_size=p["batch_size"], steps=steps - more, more_steps=more, lr=lr,
                          mlm_probability=p["mlm_probability"], eval_every=p["eval_every"], ckpt_every=250,
                          log_every=10, seed=seed, device="cpu", **ARMS[arm])


# ----------------------------------------------------------------------------------------------------
# Equal compute: seconds per step of each arm
# ----------------------------------------------------------------------------------------------------
def step_seconds(sh, arms):
    """Seconds per optimizer step of each arm on one thread (forward, backward, AdamW, the masking), the
    arms alternating in rounds so that a slower patch of the machine hits all of them; the median round.
    Measured once per set of arms and kept in results/timing-<arms>.json (a rerun reuses it, so its
    step counts stay put)."""
    p = sh["p"]
    config = {"arms": {a: ARMS[a] for a in arms}, "shape": [p[k] for k in ("hidden_size", "num_layers", "batch_size",
                                                                             "max_len", "mlm_probability")]}
    path = sh["results"] / f"timing-{'-'.join(arms)}.json"
    done = de.finished_file(path, config)
    if done is not None:
        return done["seconds_per_step"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    info = train.tokenizer_info(sh["tok"], settings(p, arms[0], 1, 1e-3, 1))
    batch = {k: v[:p["batch_size"]] for k, v in sh["train"].items()}
    models = {}
    for a in arms:
        s = settings(p, a, 1, 1e-3, p["steps"])
        torch.manual_seed(0)
        model = train.new_model(s, sh["tok"])[0]
        models[a] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4), train.make_inputs(s, info))
    rounds = {a: [] for a in arms}
    g = torch.Generator().manual_seed(0)
    for r in range(4):  # round 0 warms up (allocator, first-call costs) and is dropped
        for a in arms:
            model, opt, make = models[a]
            t0 = time.perf_counter()
            for _ in range(p["timing_steps"]):
                loss = model(**make({k: v.clone() for k, v in batch.items()}, g)).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if r:
                rounds[a].append((time.perf_counter() - t0) / p["timing_steps"])
    torch.set_num_threads(threads)
    per_step = {a: sorted(v)[len(v) // 2] for a, v in rounds.items()}
    de._write_atomic(path, json.dumps({"seconds_per_step": per_step, "rounds": rounds, "config": config}, indent=1))
    return per_step


def equal_compute_steps(p, per_step):
    """{arm: steps}: the costliest arm gets p["steps"], each other arm as many as fit in that time
    (with p["equal"] == "steps": every arm p["steps"], its time reported beside)."""
    if p.get("equal") == "steps":
        return {a: p["steps"] for a in per_step}
    budget = p["steps"] * max(per_step.values())
    return {a: round(budget / t) for a, t in per_step.items()}


# ----------------------------------------------------------------------------------------------------
# Tasks: one pretraining run, one encoder's fine-tuning
# ----------------------------------------------------------------------------------------------------
def run_config(sh, arm, seed, lr, steps):
    s = settings(sh["p"], arm, seed, lr, steps)
    return {"arm": arm, "seed": seed, "lr": lr, "steps": steps,
            "settings": {k: v for k, v in vars(s).items() if k != "device"}, "data": sh["data"], "test": sh["test_sha"],
            # (T5 is scored on its span tokens since 2026-12-04, whole-word's dev curve token by token: runs
            # from before are stale)
            **({"scored": "span tokens"} if s.objective == "t5" else {}),
            **({"evaluated": "token by token"} if s.whole_word else {})}


def run_name(p, arm, seed, lr, steps):
    more = extra(p, steps)  # (a continuation: "-steps8000+16000")
    return f"{arm}-seed{seed}-lr{lr:g}-steps{steps - more}" + (f"+{more}" if more else "")


def pretrain(sh, arm, seed, lr, steps, need_model=False):
    """One arm trained from scratch for all its steps, then scored on the test split; its result JSON
    (cached; with need_model, trained again when only the JSON is here: seeded runs repeat exactly).
    A continuation (--more_steps) starts from a copy of the preset's run, finished first if it is not."""
    more = extra(sh["p"], steps)
    config, name = run_config(sh, arm, seed, lr, steps), run_name(sh["p"], arm, seed, lr, steps)
    path, d = sh["results"] / "runs" / f"{name}.json", sh["out"] / "runs" / name
    r = de.finished_file(path, config)
    if r is not None and not (need_model and not (d / "model" / "model.safetensors").exists()):
        return r
    d.mkdir(parents=True, exist_ok=True)
    if more and not (d / "run").exists():  # (a copy of its first part: checked, resumed or trained first)
        pretrain(sh, arm, seed, lr, steps - more)
        base = sh["out"] / "runs" / run_name(sh["p"], arm, seed, lr, steps - more) / "run"
        if (base / "final.pt").exists():  # (not when only the base's JSON is here: trained again below)
            shutil.rmtree(d / "run.partial", ignore_errors=True)
            shutil.copytree(base, d / "run.partial")
            (d / "run.partial").rename(d / "run")  # (whole or not at all)
    t0 = time.time()
    s = settings(sh["p"], arm, seed, lr, steps)
    with open(d / "output.txt", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        model, _, evals = train.run_mlm(s, out_dir=d, corpus=sh["paths"][sh["p"]["budget"]],
                                        valid_corpus=sh["paths"]["dev"], tok=sh["tok"], desc=name)
        info = train.tokenizer_info(sh["tok"], s)
        # XLNet and T5 are scored on their own targets (drawn from a fixed seed; T5's span tokens),
        # against the unigram loss of those targets; the masked LMs at [MASK] positions, token by token
        # for all of them
        make = train.make_inputs(s, info) if s.objective in train.OBJECTIVES else None
        test = train.evaluate(model, sh["test"], mask_id=info["mask_id"], vocab_size=info["vocab_size"],
                              special_ids=info["special_ids"], batch_size=64, device="cpu", make=make)
    if make is None:
        dev_floor, test_floor = (train.floors(sh["tok"], sh["train"], sh[k])[0] for k in ("dev", "test"))
    else:
        dev_floor, test_floor = (train.task_floor(make, sh["train"], sh[k], info["vocab_size"],
                                                  info["special_ids"]) for k in ("dev", "test"))
    disc = ("disc_acc_replaced", "disc_acc_original", "disc_auc")  # (ELECTRA)
    curve = [{"step": e["step"], "dev_loss": round(e["loss"], 4),
              **{k: round(e[k], 4) for k in disc if e.get(k) is not None}} for e in evals]
    gain = de.dev_gain_last_quarter(curve)
    r = {"arm": arm, "seed": seed, "lr": lr, "steps": steps, "dev_floor": dev_floor, "test_floor": test_floor,
         "test": {k: v for k, v in test.items() if k != "scored"}, "curve": curve,
         "learned_context": train.learned_context(test["loss"], test_floor) == "yes",  # (0.1 nat below)
         "converged": convergence({"curve": curve, "dev_gain_last_quarter": gain,
                                   "dev_floor": dev_floor}) == "converged",  # (not rising, not on the plateau)
         "dev_gain_last_quarter": round(gain, 4), "seconds": round(time.time() - t0, 1), "config": config}
    if previous := de.finished_file(path, config):  # (trained again for its weights: same numbers?)
        if previous["test"] != r["test"]:
            print(f"note: {name} trained again differs from its result (the new one is kept)")
        else:
            r = previous
    de._write_atomic(path, json.dumps(r, indent=1))
    return r


def random_arms(p):
    """The random encoders the preset's arms need: BERT's always, XLNet's and T5's when they are there."""
    objectives = {ARMS[a]["objective"] for a in p["arms"]}
    return [r for r, a in RANDOM.items() if r == "random" or ARMS[a]["objective"] in objectives]


def random_encoder(sh, seed, arm="random"):
    """A randomly initialised model of the arms' shape in arm's architecture (RANDOM), saved once."""
    d = sh["out"] / "random_encoder" / (f"seed{seed}" if arm == "random" else f"{arm}-seed{seed}")
    if not (d / "model.safetensors").exists():
        torch.manual_seed(seed)
        model = train.new_model(settings(sh["p"], RANDOM[arm], seed, 1e-3, 1), sh["tok"])[0]
        train.save_model(model, sh["tok"], d)
    return d


def fine_tune_one(sh, model_dir, n, lr, seed):
    """MeanPoolClassifier on the encoder in model_dir, fine-tuned on the first n labelled rows for about
    ft_steps steps; the dev-best epoch's {"epoch", "dev_acc", "test_acc"}."""
    p = sh["p"]
    rows = sh["ft"]["train"][:n]
    fs = finetune.FinetuneSettings(batch_size=p["ft_batch"], lr=lr, max_len=FT_MAX_LEN, seed=seed, device="cpu")
    fs.epochs = max(1, round(p["ft_steps"] / -(-len(rows) // fs.batch_size)))
    torch.manual_seed(seed)
    clf = finetune.MeanPoolClassifier(finetune.load_pretrained(model_dir), len(sh["ft"]["labels"]))
    with contextlib.redirect_stderr(io.StringIO()):
        best = finetune.finetune_best_epoch(clf, rows, sh["ft"]["dev"], sh["ft"]["test"], fs, sh["tok"].pad_id)
    return {k: best[k] for k in ("epoch", "dev_acc", "test_acc")}


def ft_file(sh, arm, seed, lr, steps):
    """(the result JSON of one encoder's fine-tuning, the config a finished one there must carry)."""
    p = sh["p"]
    encoder = run_config(sh, arm, seed, lr, steps) if arm not in RANDOM else \
        {"random": seed, "vocab": len(sh["tok"]), **({"shape": RANDOM[arm]} if arm != "random" else {})}
    config = {"encoder": encoder, **{k: p[k] for k in ("ft_labels", "ft_lr_grid", "ft_steps", "ft_batch")},
              "max_len": FT_MAX_LEN, "rows": [len(v) for v in sh["ft"]["rows"].values()]}
    name = run_name(p, arm, seed, lr, steps) if arm not in RANDOM else f"{arm}-seed{seed}"
    return sh["results"] / "finetune" / f"{name}.json", config


def fine_tune(sh, arm, seed, lr, steps):
    """NSMC accuracy of one encoder (a run's final weights, or a random one: RANDOM) at each of ft_labels: the
    dev-best (rate of ft_lr_grid, epoch); its result JSON (cached)."""
    p = sh["p"]
    path, config = ft_file(sh, arm, seed, lr, steps)
    r = de.finished_file(path, config)
    if r is not None:
        return r
    t0 = time.time()
    if arm in RANDOM:
        model_dir = random_encoder(sh, seed, arm)
    else:
        pretrain(sh, arm, seed, lr, steps, need_model=True)
        model_dir = sh["out"] / "runs" / run_name(p, arm, seed, lr, steps) / "model"
    labels = {}
    for n in p["ft_labels"]:
        cells = [{"lr": ft_lr, **fine_tune_one(sh, model_dir, n, ft_lr, seed)} for ft_lr in p["ft_lr_grid"]]
        labels[str(n)] = max(cells, key=lambda c: c["dev_acc"])  # (the first of equals: the lower rate)
    r = {"arm": arm, "seed": seed, "lr": lr, "steps": steps, "labels": labels,
         "seconds": round(time.time() - t0, 1), "config": config}
    de._write_atomic(path, json.dumps(r, indent=1))
    return r


# ----------------------------------------------------------------------------------------------------
# The plan: the grid at the first seed, each arm's lr chosen as soon as its grid is fine-tuned, the rest
# ----------------------------------------------------------------------------------------------------
def chosen_lr(p, done, arm):
    """The grid rate with the best fine-tuned dev accuracy at the most labels (first seed, `steps`),
    or None while its grid is unfinished."""
    cells = [done.get(("ft", arm, p["seeds"][0], lr, p["steps"])) for lr in p["lr_grid"]]
    if any(c is None for c in cells):
        return None
    most = str(max(p["ft_labels"]))
    return max(cells, key=lambda c: c["labels"][most]["dev_acc"])["lr"]


def plan(p, done, steps_for):
    """The tasks ("lm" | "ft", arm, seed, lr, steps) in order, as far as the finished ones `done`
    make them known: a run's fine-tuning once the run is done (first, so that no model waits long on
    disk), the grid at the first seed, the random encoders, each arm's other seeds once its lr is chosen
    (with --more_steps: every seed, the first too, continued)."""
    first = p["seeds"][0]
    queue = [("lm", a, first, lr, p["steps"]) for a in p["arms"] for lr in p["lr_grid"]]
    queue += [("ft", r, k, 0.0, 0) for r in random_arms(p) for k in p["seeds"]]
    for a in p["arms"]:
        lr = chosen_lr(p, done, a)
        if lr is not None:
            queue += [("lm", a, k, lr, steps_for[a] + p.get("more_steps", 0)) for k in p["seeds"]]
    ft = [("ft", *t[1:]) for t in queue if t[0] == "lm" and t in done]  # (never beside its own run)
    return list(dict.fromkeys(ft + queue))  # (the first seed's run at the chosen lr may be a grid run)


def full_plan_size(p, steps_for):
    grid = 2 * len(p["arms"]) * len(p["lr_grid"]) + len(random_arms(p)) * len(p["seeds"])
    more = sum(len(p["seeds"]) - (steps_for[a] == p["steps"] and not p.get("more_steps")) for a in p["arms"])
    return grid + 2 * more


def _task(b_dict, task):
    torch.set_num_threads(1)  # (a CPU run repeats its numbers exactly only at the same thread count)
    sh = shared(BenchSettings(**b_dict))
    t0 = time.time()
    kind, arm, seed, lr, steps = task
    r = (pretrain if kind == "lm" else fine_tune)(sh, arm, seed, lr, steps)
    return task, r, time.time() - t0


def run_plan(b, p, steps_for, workers):
    """Every task of the plan, up to `workers` at once (one thread each), each started as soon as its
    learning rate is known (de.run_tasks). Returns {task: result}."""
    def describe(task, r):
        return f"{task[0]} {task[1]} seed {task[2]} lr {task[3]:g}: {r['seconds'] / 60:.1f} min"
    return de.run_tasks(lambda done: plan(p, done, steps_for), functools.partial(_task, vars(b)), workers,
                        full_plan_size(p, steps_for), "objectives", describe, initializer=de.watch_parent)


def collect(sh, p, steps_for):
    """The finished tasks of this protocol (their JSONs), without training anything."""
    done = {}
    while True:
        new = {}
        for t in plan(p, done, steps_for):
            if t in done:
                continue
            kind, arm, seed, lr, steps = t
            if kind == "lm":
                r = de.finished_file(sh["results"] / "runs" / f"{run_name(p, arm, seed, lr, steps)}.json",
                                     run_config(sh, arm, seed, lr, steps))
            else:
                r = de.finished_file(*ft_file(sh, arm, seed, lr, steps))
            if r is not None:
                new[t] = r
        if not new:
            return done
        done.update(new)


# ----------------------------------------------------------------------------------------------------
# Summary, tables, plot
# ----------------------------------------------------------------------------------------------------
def summarize(sh, p, done, per_step, steps_for):
    rows = sh["ft"]["rows"]
    floors = de.label_floors(rows, p["ft_labels"])
    lrs = {a: chosen_lr(p, done, a) for a in p["arms"]}
    rule = f"equal {p['equal']}"
    total = {a: steps_for[a] + p.get("more_steps", 0) for a in p["arms"]}
    groups = {f"{a}, {rule}": [(a, k, lrs[a], total[a]) for k in p["seeds"]] for a in p["arms"]}
    groups.update({f"{a}, equal steps": [(a, p["seeds"][0], lrs[a], p["steps"])] for a in p["arms"]
                   if steps_for[a] != p["steps"]})
    groups.update({{"random": "random encoder", "random-xlnet": "random XLNet encoder",
                    "random-t5": "random T5 encoder"}[r]: [(r, k, 0.0, 0) for k in p["seeds"]] for r in random_arms(p)})
    table = {}
    for name, members in groups.items():
        lm = [done.get(("lm", *m)) for m in members if m[0] not in RANDOM]
        ft = [done.get(("ft", *m)) for m in members]
        table[name] = {"runs": [r for r in lm if r], "finetune": [r for r in ft if r], "planned": len(members)}
    grid = {a: {f"{lr:g}": (done.get(("ft", a, p["seeds"][0], lr, p["steps"])) or {}).get("labels")
                for lr in p["lr_grid"]} for a in p["arms"]}
    grid_runs = {a: {f"{lr:g}": _brief(done.get(("lm", a, p["seeds"][0], lr, p["steps"])))
                     for lr in p["lr_grid"]} for a in p["arms"]}
    return {"preset": sh["out"].name, "rule": rule,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()},
            "seconds_per_step": per_step, "steps": total, "lr": lrs, "lr_grid_dev": grid,
            "lr_grid_runs": grid_runs,
            "ft_floors": floors, "groups": table,
            "tokens_per_step": p["batch_size"] * p["max_len"], "labelled_test_rows": len(rows["ft_test"])}


def convergence(run):
    """Where a run's dev curve ended: "rising" (its last dev loss more than CONVERGED_GAIN above its best:
    the final model, the one scored, is past its best, memorising its rows or wobbling on a plateau),
    "converged" (its best improved less than that over its last quarter, and it is past the plateau: its best
    dev loss at least PLATEAU nat under its dev floor), "plateau" (as flat, but not that far under its floor:
    a stopping rule must not fire there) or "learning" (still falling)."""
    losses = [c["dev_loss"] for c in run["curve"]]
    if losses[-1] > min(losses) + de.CONVERGED_GAIN:
        return "rising"
    if run["dev_gain_last_quarter"] >= de.CONVERGED_GAIN:
        return "learning"
    return "converged" if min(losses) < run["dev_floor"] - PLATEAU else "plateau"


def _brief(run):
    """A grid run in a few numbers (None while it has not finished)."""
    if run is None:
        return None
    return {"below_floor": round(run["test_floor"] - run["test"]["loss"], 6), "convergence": convergence(run),
            "learned_context": run["learned_context"]}


def _count(runs):
    """'converged/runs', and how many of the others ended rising or flat on the plateau."""
    ends = [convergence(r) for r in runs]
    others = [f"{ends.count(e)} {name}" for e, name in (("plateau", "on the plateau"), ("rising", "rising"))
              if e in ends]
    return f"{ends.count('converged')}/{len(runs)}" + (f" ({', '.join(others)})" if others else "")


def _acc(group, n):
    return [r["labels"][n]["test_acc"] for r in group["finetune"]]


def markdown(res):
    p, g = res["settings"], res["groups"]
    ratio = {a: res["seconds_per_step"][a] / min(res["seconds_per_step"].values()) for a in p["arms"]}
    lines = [f"Pretrained from scratch on {p['budget'] // 1000:,} KB of Korean reviews "
             f"({res['tokens_per_step']:,} token slots a step), "
             f"{p['hidden_size']}-wide x {p['num_layers']} layers, seeds {p['seeds']}, mean ± std; "
             "seconds per step measured in the same run: " + ", ".join(
                 f"{a} {res['seconds_per_step'][a]:.3f} s ({ratio[a]:.2f}x)" for a in p["arms"]) + ". "
             "Losses on the test split at [MASK] positions (15%; XLNet and T5: their own targets) beside the "
             "unigram floor of what is predicted; "
             + (f"each run {p['steps']:,} steps, then {p['more_steps']:,} more from a fresh warm-up and decay; "
                if p.get("more_steps") else "") + "lr chosen on dev: "
             + ", ".join(f"{a} {lr:g}" if lr else f"{a} -" for a, lr in res["lr"].items()) + ".", "",
             "| encoder | steps | minutes (one thread) | runs | loss (ELECTRA: generator) | floor | below floor "
             "| converged |", "|---" * 8 + "|"]
    m = de._mean_std
    disc = []  # (ELECTRA's discriminator: its own table, so that each stays narrow)
    for name, c in g.items():
        rs = c["runs"]
        if not rs:
            continue
        loss, floor = m([r["test"]["loss"] for r in rs]), rs[0]["test_floor"]
        below = m([r["test_floor"] - r["test"]["loss"] for r in rs])
        minutes = rs[0]["steps"] * res["seconds_per_step"][rs[0]["arm"]] / 60  # (measured alone, not in a run)
        lines.append(f"| {name} | {rs[0]['steps']:,} | {minutes:.1f} | {len(rs)}/{c['planned']} | {de._ms(*loss)} | "
                     f"{floor:.3f} | {de._ms(*below)} | {_count(rs)} |")
        if "disc_auc" in rs[0]["test"]:
            disc.append(f"| {name} | " + " | ".join(
                de._ms(*m([r["test"][k] for r in rs]), "{:.1%}" if k != "disc_auc" else "{:.3f}")
                for k in ("disc_acc_replaced", "disc_acc_original", "disc_precision", "disc_auc")) + " |")
    if disc:
        lines += ["", "ELECTRA's discriminator on the test split (a coin's AUC: 0.5):", "",
                  "| encoder | replaced found | originals right | precision | AUC |", "|---" * 5 + "|", *disc]
    most = str(max(p["ft_labels"]))
    lines += ["", f"The lr grid at seed {p['seeds'][0]} ({p['steps']:,} steps): the test loss below its floor "
              "(negative: above it), whether the run converged (its best dev loss gained less than "
              f"{de.CONVERGED_GAIN} nat in its last quarter, {PLATEAU} nat or more under its dev floor; plateau: as "
              f"flat, but not that far under; rising: it ended more than {de.CONVERGED_GAIN} nat above its best), "
              f"and the fine-tuned dev accuracy at {int(most):,} "
              "labels that chooses the rate:", "",
              f"| arm | lr | below floor | converged | dev accuracy, {int(most):,} labels |", "|---" * 5 + "|"]
    for a in p["arms"]:
        for lr, r in res["lr_grid_runs"][a].items():
            ft = res["lr_grid_dev"][a][lr]
            chosen = " (chosen)" if res["lr"][a] is not None and f"{res['lr'][a]:g}" == lr else ""
            yes = {"converged": "yes", "learning": "no"}.get(r["convergence"], r["convergence"]) if r else ""
            run = f"{r['below_floor']:+.3f} | {yes}" if r else "- | -"
            dev = f"{ft[most]['dev_acc']:.1%}" if ft else "-"
            lines.append(f"| {a} | {lr}{chosen} | {run} | {dev} |")
    labels = [str(n) for n in p["ft_labels"]]
    lines += ["", f"NSMC sentiment, test accuracy on {res['labelled_test_rows']:,} reviews after fine-tuning "
              f"on {' or '.join(f'{int(n):,}' for n in labels)} labelled ones (mean ± std over seeds; per seed):", "",
              "| encoder | " + " | ".join(f"{int(n):,} labels" for n in labels) + " |", "|---|" + "---|" * len(labels)]
    fl = res["ft_floors"]
    lines.append("| majority class | " + " | ".join(f"{fl[n]['majority']:.1%}" for n in labels) + " |")
    lines.append("| bag-of-words logistic regression | "
                 + " | ".join(f"{fl[n]['bow_logreg']:.1%}" for n in labels) + " |")
    for name, c in g.items():
        if c["finetune"]:
            lines.append(f"| {name} | " + " | ".join(
                f"{de._ms(*m(_acc(c, n)), '{:.1%}')} ({', '.join(f'{x:.1%}' for x in _acc(c, n))})"
                for n in labels) + " |")
    base = g.get(f"mlm, {res['rule']}")
    for arm in (a for a in p["arms"] if a != "mlm"):
        c = g.get(f"{arm}, {res['rule']}")
        if not (base and c and c["finetune"] and len(c["finetune"]) == len(base["finetune"])):
            continue
        lines.append("")
        for n in labels:
            mean, std = m([x - y for x, y in zip(_acc(c, n), _acc(base, n))])
            verdict = ("one seed so far: no spread to judge it by" if std is None else
                       "no difference (inside twice the spread of the paired differences)" if abs(mean) <= 2 * std
                       else f"{arm} ahead" if mean > 0 else "mlm ahead")
            lines.append(f"- {n} labels, {arm} - mlm at {res['rule']}, paired by seed: "
                         f"{de._ms(mean, std, '{:+.1%}')}: {verdict}.")
    return de.wrapped(lines)


def plot(res, path):
    """Held-out (dev) loss minus its floor against steps per arm (seed means), and the discriminator's
    recall of replaced tokens and its AUC."""
    plt = de.pyplot()
    if plt is None:
        return None
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
    for name, c in res["groups"].items():
        rs = c["runs"]
        if not rs or res["rule"] not in name:
            continue
        n = min(len(r["curve"]) for r in rs)
        steps = [r["step"] for r in rs[0]["curve"][:n]]
        mean = lambda k: [sum(r["curve"][i][k] for r in rs) / len(rs) for i in range(n)]  # noqa: E731
        ax.plot(steps, [x - rs[0]["dev_floor"] for x in mean("dev_loss")], label=name, lw=2)
        if "disc_auc" in rs[0]["curve"][0]:
            bx.plot(steps, mean("disc_acc_replaced"), label="replaced found (recall)", lw=2)
            bx.plot(steps, mean("disc_auc"), label="AUC", lw=2)
            bx.plot(steps, mean("disc_acc_original"), label="originals right", lw=1)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="step", ylabel="dev loss - unigram floor (nats)",
           title="each objective on its own dev targets (ELECTRA: its generator)")
    bx.set(xlabel="step", ylim=(0, 1.02), title="ELECTRA's discriminator on dev")
    for x in (ax, bx):
        x.grid(alpha=0.3)
        if x.get_legend_handles_labels()[0]:  # (no discriminator among the arms: an empty panel)
            x.legend(fontsize=8)
    return de.save_figure(plt, fig, path)


def run(b):
    if de.reported(b, PRESETS, markdown):
        return None
    sh = shared(b)
    p = sh["p"]
    per_step = step_seconds(sh, p["arms"])
    steps_for = equal_compute_steps(p, per_step)
    if b.collect:
        done = collect(sh, p, steps_for)
    else:
        print(f"seconds per step: {per_step}; {p['equal']} equal: {steps_for} steps", flush=True)
        done = run_plan(b, p, steps_for, b.workers or p["workers"])
    res = json.loads(json.dumps(summarize(sh, p, done, per_step, steps_for)))  # (as a reader gets it)
    name = "summary" if b.preset == "tiny" else f"objectives_{b.preset}"
    name += f"+{b.more_steps}" if b.more_steps else ""  # (the preset's own summary stays)
    path = (sh["out"] if b.preset == "tiny" else ROOT / "bench" / "results") / f"{name}.json"
    print(f"Command: python bench/objectives.py --preset={b.preset}" + (f" --arms={b.arms}" if b.arms else "")
          + (f" --equal={b.equal}" if b.equal else "") + (f" --more_steps={b.more_steps}" if b.more_steps else ""))
    de.publish(res, path, markdown, plot)
    return res


def main(argv=None):
    return run(train.parse_args(sys.argv[1:] if argv is None else argv, BenchSettings(), usage=[__doc__.strip()]))


def cli(argv=None):
    try:
        main(argv)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
