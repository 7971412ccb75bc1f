"""
ELECTRA or a masked LM: which pretrained encoder fine-tunes better, for the same pretraining tokens?

    python bench/electra_vs_mlm.py --preset=tiny      # toy data from the repository, seconds (the test)
    python bench/electra_vs_mlm.py --preset=cpu       # Korean NSMC on 2 cores (README: its time), resumable
    python bench/electra_vs_mlm.py --report=bench/results/electra_vs_mlm_cpu.json   # the README's table

Clark et al., "ELECTRA: Pre-training Text Encoders as Discriminators Rather Than Generators", ICLR 2020
(arXiv:2003.10555), report better downstream results than a masked LM for the same compute: every token
teaches the discriminator something, not only the 15% that are masked. This script makes the comparison
at toy scale, with the data-efficiency experiment's data and fine-tuning protocol:

  data      Korean NSMC reviews (bench/data_efficiency.korean_files: unlabeled text, NSMC's test texts
            kept out), one budget of it, one Korean BPE learned from it;
  models    for each seed, from scratch and of the same size: a masked LM (RoBERTa-style, train.py's
            --objective=mlm) and an ELECTRA discriminator (--objective=electra: a generator 1/4 as wide,
            discriminator loss weight 50), both with 15% of the tokens masked, the same steps, batch and
            sequence length (so the same pretraining tokens), timed;
  accuracy  NSMC sentiment: each encoder fine-tuned on labelled reviews (BERT's pooler and a linear
            layer on [CLS]/<s>, for both), the lr chosen on labelled dev rows at the first seed, the
            epoch on the dev rows for every run, tested on NSMC's test reviews; next to the majority
            class and a bag-of-words logistic regression on the same rows.

Differs from the paper: toy sizes; the fine-tuning head on ELECTRA is BERT's (pooler + linear), not
HF's ElectraClassificationHead; 80/10/10 replacement at the generator's input (the paper masks all).
Every run is cached under --out_dir (a rerun resumes); results.json and markdown tables on stdout.
"""
import contextlib
import io
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "data"))

import torch  # noqa: E402

import data_efficiency as de  # noqa: E402  (bench/data_efficiency.py: corpora, floors, helpers)
import finetune  # noqa: E402
import train  # noqa: E402

OBJECTIVES = ("mlm", "electra")
PRESETS = {
    "tiny": dict(budget=20_000, dev_lines=10, test_lines=20, ko_vocab=400, hidden_size=32, num_layers=2,
                 num_heads=2, intermediate_size=64, max_len=32, batch_size=8, steps=10, lr=1e-3,
                 eval_every=5, seeds=(1, 2), labelled=100, ft_dev=50, test=0, ft_lr_grid=(1e-3,),
                 ft_epochs=1, ft_batch=16, bow_l2=(1e-3, 1e-1)),
    "cpu": dict(budget=400_000, dev_lines=200, test_lines=200, ko_vocab=2000, hidden_size=128, num_layers=4,
                num_heads=4, intermediate_size=512, max_len=32, batch_size=64, steps=1200, lr=1e-3,
                eval_every=200, seeds=(1, 2, 3), labelled=5000, ft_dev=1000, test=2000,
                ft_lr_grid=(3e-4, 1e-3), ft_epochs=2, ft_batch=32, bow_l2=(1e-4, 1e-3, 1e-2)),
}


@dataclass
class BenchSettings:
    preset: str = "tiny"          # tiny (toy data, the test) | cpu (Korean NSMC, 2 cores)
    out_dir: str = "out/electra_vs_mlm"  # corpora, runs, results; a rerun resumes from here
    nsmc: str = str(ROOT.parent / "shared" / "data" / "nsmc")  # NSMC folder (train.tsv, test.tsv, unlabeled.txt)
    report: str = ""              # print the tables of a results.json (no training) and stop
    json_out: str = ""            # also write results.json here (e.g. bench/results/electra_vs_mlm_cpu.json)


def pretrain_settings(p, objective, seed):
    return train.Settings(task="mlm", objective=objective, hidden_size=p["hidden_size"], num_layers=p["num_layers"],
                          num_heads=p["num_heads"], intermediate_size=p["intermediate_size"], max_len=p["max_len"],
                          batch_size=p["batch_size"], steps=p["steps"], lr=p["lr"], mlm_probability=0.15,
                          eval_every=p["eval_every"], ckpt_every=100, log_every=10, seed=seed, dropout=0.1)


def pretrain(p, objective, seed, tok, corpus, dev, out):
    """train.run_mlm of one objective and seed (cached: a finished run is read back); (model dir, info)."""
    d = out / "runs" / f"{objective}-seed{seed}"
    done = de._read_json(d / "result.json")
    if done is not None:
        return d / "model", done
    t0 = time.time()
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "output.txt", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        _, _, evals = train.run_mlm(pretrain_settings(p, objective, seed), out_dir=d, corpus=corpus,
                                    valid_corpus=dev, tok=tok, desc=objective)
    info = {"objective": objective, "seed": seed, "seconds": round(time.time() - t0, 1),
            "tokens": p["steps"] * p["batch_size"] * p["max_len"], "final": evals[-1]}
    de._write_atomic(d / "result.json", json.dumps(info, indent=1))
    return d / "model", info


def fine_tune(p, model_dir, rows, tok, lr, seed):
    """Fine-tune on the labelled rows; dev and test accuracy after each epoch; the dev-best epoch's."""
    labels = finetune.label_map(rows["labelled"])
    data = {k: finetune.encode_rows(rows[k], tok, p["max_len"], labels) for k in ("labelled", "ft_dev", "ft_test")}
    torch.manual_seed(seed)
    clf = finetune.load_classifier(model_dir, len(labels))
    fs = finetune.FinetuneSettings(epochs=p["ft_epochs"], batch_size=p["ft_batch"], lr=lr, max_len=p["max_len"],
                                   seed=seed, device="cpu")
    with contextlib.redirect_stderr(io.StringIO()):
        best = finetune.finetune_best_epoch(clf, data["labelled"], data["ft_dev"], data["ft_test"], fs, tok.pad_id)
    return {k: best[k] for k in ("epoch", "dev_acc", "test_acc")}


def run(b):
    if de.reported(b, PRESETS, markdown):
        return None
    p = PRESETS[b.preset]
    out = Path(b.out_dir) / b.preset
    t0 = time.time()
    # the data-efficiency experiment's corpora, with this preset's one budget
    dp = {**p, "budgets": (p["budget"],)}
    paths = de.korean_files(dp, de.BenchSettings(preset=b.preset, nsmc=b.nsmc), out)
    s = pretrain_settings(p, "mlm", 1)
    with contextlib.redirect_stdout(io.StringIO()):
        tok = train.get_tokenizer(s, train.read_documents(paths[p["budget"]]), out, "tokenizer_ko", kind="bpe",
                                  vocab_size=p["ko_vocab"])
    rows = {k: finetune.read_tsv(paths[k]) for k in ("labelled", "ft_dev", "ft_test")}
    timing = de._read_json(out / "timing.json") or {"seconds": 0.0, "calls": 0}
    trained = []  # (a call that trained anything adds its wall time to timing.json)
    runs, seeds = [], list(p["seeds"])
    for seed in seeds:
        for objective in OBJECTIVES:
            t1 = time.time()
            model_dir, info = pretrain(p, objective, seed, tok, paths[p["budget"]], paths["dev"], out)
            trained += [1] if time.time() - t1 > 5 else []
            print(f"{objective} seed {seed}: pretrained in {info['seconds']:.0f} s")
            runs.append({**info, "model_dir": str(model_dir)})
    ft_cache = out / "finetune.json"
    cache = de._read_json(ft_cache) or {}

    def ft(run_, lr):
        key = f"{run_['objective']}-seed{run_['seed']}-lr{lr:g}-{de._key(p)}"
        if key not in cache:
            cache[key] = fine_tune(p, run_["model_dir"], rows, tok, lr, run_["seed"])
            trained.append(1)
            de._write_atomic(ft_cache, json.dumps(cache, indent=1))
        return cache[key]
    first = [r for r in runs if r["seed"] == seeds[0]]
    ft_lr = {r["objective"]: max(p["ft_lr_grid"], key=lambda lr: ft(r, lr)["dev_acc"]) for r in first}
    for r in runs:
        res = ft(r, ft_lr[r["objective"]])
        r.update(ft_lr=ft_lr[r["objective"]], ft_epoch=res["epoch"], ft_dev_acc=res["dev_acc"], test_acc=res["test_acc"])
        del r["model_dir"]
    key = train.fingerprint(tok)  # the MLM losses' floor: unigram loss of the dev text (the held-out)
    ids = [train.tokenize_documents(train.read_documents(paths[k]), tok, out / "cache", key)[0]
           for k in (p["budget"], "dev")]
    unigram = train.unigram_loss(ids[0], ids[1], len(tok), tok.special_ids)
    bow, l2 = de.bow_logreg(rows["labelled"], rows["ft_dev"], rows["ft_test"], p["bow_l2"])
    floors = {"majority": de.majority_class([y for _, y in rows["labelled"]], [y for _, y in rows["ft_test"]]),
              "bow_logreg": bow, "bow_logreg_l2": l2}
    if trained:
        timing = {"seconds": round(timing["seconds"] + time.time() - t0, 1), "calls": timing["calls"] + 1}
        de._write_atomic(out / "timing.json", json.dumps(timing))
    summary = {"preset": b.preset, "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()},
               "seeds": seeds, "ft_lr": ft_lr, "floors": floors, "unigram_loss": unigram, "runs": runs,
               "labelled": len(rows["labelled"]), "test_rows": len(rows["ft_test"]),
               "seconds": timing["seconds"], "calls": timing["calls"]}
    body = json.dumps(summary, indent=1)
    de._write_atomic(out / "results.json", body)
    if b.json_out:
        de._write_atomic(b.json_out, body)
    print(f"\nCommand: python bench/electra_vs_mlm.py --preset={b.preset}\n")
    print(markdown(summary))
    return summary


def markdown(res):
    by = {o: [r for r in res["runs"] if r["objective"] == o] for o in OBJECTIVES}
    fl = res["floors"]
    lines = [f"Pretrained from scratch on the same Korean tokens ({by['mlm'][0]['tokens']:,} token slots each), "
             f"then fine-tuned on {res['labelled']:,} labelled {'toy' if res['preset'] == 'tiny' else 'NSMC'} "
             f"reviews and tested on {res['test_rows']:,} "
             f"(seeds {res['seeds']}; mean ± std). Floors: majority class {fl['majority']:.1%}, bag-of-words "
             f"logistic regression {fl['bow_logreg']:.1%}; held-out MLM losses next to the unigram floor, "
             f"{res['unigram_loss']:.3f}.", "",
             "| objective | pretrain (s) | MLM loss (ELECTRA: generator) | disc. right: replaced / original "
             "| accuracy | per seed |",
             "|---|---|---|---|---|---|"]
    for o, rs in by.items():
        secs = de._mean_std([r["seconds"] for r in rs])
        loss = de._mean_std([r["final"]["loss"] for r in rs])
        acc = de._mean_std([r["test_acc"] for r in rs])
        disc = "-" if o == "mlm" else (f"{de._mean_std([r['final']['disc_acc_replaced'] for r in rs])[0]:.1%} / "
                                       f"{de._mean_std([r['final']['disc_acc_original'] for r in rs])[0]:.1%}")
        lines.append(f"| {o} | {de._ms(*secs, '{:.0f}')} | {de._ms(*loss)} | {disc} | {de._ms(*acc, '{:.1%}')} | "
                     + ", ".join(f"{r['test_acc']:.1%}" for r in rs) + " |")
    diffs = [e["test_acc"] - m["test_acc"] for e, m in zip(by["electra"], by["mlm"])]
    d_mean, d_std = de._mean_std(diffs)
    verdict = "no difference (inside twice the spread of the paired differences)" \
        if d_std is None or abs(d_mean) <= 2 * d_std else ("ELECTRA ahead" if d_mean > 0 else "MLM ahead")
    lines += ["", f"Paired difference ELECTRA - MLM in test accuracy: {de._ms(d_mean, d_std, '{:+.1%}')}: {verdict}."
              f" Measured in {res['seconds'] / 60:.0f} min ({res.get('calls', 1)} call(s) that trained)."]
    return de.wrapped(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return run(train.parse_args(argv, BenchSettings(), usage=[__doc__.strip()]))


def cli(argv=None):
    try:
        main(argv)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
