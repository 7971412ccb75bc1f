"""
Which `--task=mlm` settings learn context at the size a user starts with? One factor at a time.

    python bench/defaults.py --preset=tiny      # toy data from the repository, seconds (the test)
    python bench/defaults.py --preset=cpu       # 1 MB of English and of Korean, 2 cores, hours: resumable
    python bench/defaults.py --preset=cpu --collect=true   # summary, table and plot of the runs so far
    python bench/defaults.py --report=bench/results/defaults_cpu.json

BERT masks 15% of the tokens, with sequences of 512 and a peak lr of 1e-4 for a model 100x this size on
billions of tokens. At 1 MB a small masked LM can sit on the unigram plateau (the loss token frequencies
alone give, `train.unigram_loss`) for all of a laptop's patience; Wettig et al. 2022 (arXiv:2202.08005)
found that masking more (40%) serves small budgets better. This bench measures, around a centre point and
at train.py's old defaults, one factor at a time:

  masking       15% / 30% / 40%
  length        32 / 64 / 128 tokens per sequence
  peak lr       5e-4 / 1e-3 / 2e-3
  then, at the centre of those (stage 2):
  depth, steps  2 layers x 3,000 / 6,000 / 8,000 steps (the rest: 4 layers x 3,000)
  text          1 MB of English (../shared/data/en/web_bible.txt) and of Korean (NSMC unlabeled reviews),
                a 4,000-token byte-level BPE each, 5% of the documents held out; 2 seeds;
and records per run: the held-out loss every eval_every steps at [MASK] positions (15% at a time, the
same scoring for every recipe), the unigram floor of the held-out text, the first step that is 0.1 below
it ("leaves the plateau"), the loss after 1,000 steps and at the end, and the minutes.

Every run is one JSON under --results_dir (bench/results/defaults_<preset>/), written as it finishes: a
rerun trains only the missing ones. --workers runs that many at once, one thread each.
"""
import json
import multiprocessing
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "data"))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

import data_efficiency as de  # noqa: E402  (bench/data_efficiency.py: JSON helpers, report plumbing)
import prepare  # noqa: E402  (data/prepare.py)
import train  # noqa: E402

CENTRE = {"mlm_probability": 0.4, "max_len": 32, "lr": 1e-3}
OLD = {"mlm_probability": 0.15, "max_len": 64, "lr": 5e-4}  # train.py's defaults before this bench
FACTORS = {"mlm_probability": (0.15, 0.3, 0.4), "max_len": (32, 64, 128), "lr": (5e-4, 1e-3, 2e-3)}
# Stage 2, at stage 1's centre: depth and steps. Korean leaves the plateau only after ~6,000 steps of the
# 4-layer model, twice the time budget; a 2-layer step costs ~0.6 as much. The centre (4 layers x 3,000
# steps) takes ~80% of the minutes of 2 x 6,000; 2 x 3,000 is the same steps; 2 x 8,000 (the default) is
# what 15 minutes on the slower machine holds (docs/results.md).
DEPTH = {"2 layers x 3000": {"num_layers": 2}, "2 layers x 6000": {"num_layers": 2, "steps": 6000},
         "2 layers x 8000": {"num_layers": 2, "steps": 8000}}
CHOSEN = "2 layers x 8000"  # train.py's defaults: {**CENTRE, **DEPTH[CHOSEN]} (tests/test_defaults.py)
BASE = {"num_layers": 4}  # what a recipe does not set: stage 1's model (train.py's default when it ran)
PRESETS = {
    "tiny": dict(texts={"ko": ("lines", "data/ko_train.txt")}, max_bytes=60_000, steps=12,
                 eval_every=4, vocab=400, seeds=(1,), batch_size=8, workers=1, factors={"lr": (1e-3, 2e-3)},
                 depth={"2 layers x 16": {"num_layers": 2, "steps": 16}}),
    "cpu": dict(texts={"en": ("paragraphs", "../shared/data/en/web_bible.txt"),
                       "ko": ("lines", "../shared/data/nsmc/unlabeled.txt")},
                max_bytes=1_000_000, steps=3000, eval_every=250, vocab=4000, seeds=(1, 2), batch_size=32,
                workers=2, factors=FACTORS, depth=DEPTH),
}


@dataclass
class BenchSettings:
    preset: str = "tiny"          # tiny (toy data, the test) | cpu (1 MB each language, hours)
    out_dir: str = "out/defaults"  # corpora, tokenizers, runs
    results_dir: str = ""         # one JSON per run; "" = bench/results/defaults_<preset>/ (tiny: under out_dir)
    workers: int = 0              # runs at once, one thread each; 0 = the preset's
    report: str = ""              # print the table of a summary JSON and stop
    collect: bool = False         # summarise the runs finished so far (no training): JSON, table, plot


def recipes(p):
    """The recipes of the grid: the centre, each factor's other values around it, the old defaults, and
    stage 2's depths and step counts at the centre. Returns {name: settings dict}."""
    out = {"centre": dict(CENTRE), "old defaults": dict(OLD)}
    for factor, values in p["factors"].items():
        for v in values:
            if v != CENTRE[factor]:
                out[f"{factor}={v:g}"] = {**CENTRE, factor: v}
    return {**out, **{name: {**CENTRE, **d} for name, d in p["depth"].items()}}


def corpus(p, lang, out):
    """A UTF-8 text file of p["max_bytes"] of the language's documents (one per line), made once."""
    path = Path(out) / "corpus" / f"{lang}.txt"
    if not path.exists():
        layout, source = p["texts"][lang]  # paragraphs (blank-line separated) or one document per line
        source = ROOT / source
        if not source.exists():
            raise FileNotFoundError(f"{source} not found (the {lang} text of the {p!r} preset)"[:200])
        docs = prepare.english_documents([source]) if layout == "paragraphs" else prepare.read_lines(source)
        docs, _ = prepare.select(docs, max_bytes=p["max_bytes"], seed=0)
        de._write_atomic(path, "".join(d + "\n" for d in docs))
    return path


def result_file(task):
    """(the JSON file of a task's result, the config that a finished result there must carry)."""
    lang, name, recipe, seed, preset, _, results_dir = task
    p = PRESETS[preset]
    return (Path(results_dir) / f"{lang}-{name.replace('=', '')}-seed{seed}.json",
            {"lang": lang, "recipe": recipe, "seed": seed, "steps": recipe.get("steps", p["steps"]),
             "batch_size": p["batch_size"]})


def run_one(task):
    """(lang, recipe name, settings, seed, preset, out, results_dir) -> the run's result (cached)."""
    lang, name, recipe, seed, preset, out, results_dir = task
    p = PRESETS[preset]
    path, config = result_file(task)
    r = de.finished_file(path, config)
    if r is not None:
        return r
    torch.set_num_threads(1)
    s = train.Settings(task="mlm", eval_every=p["eval_every"], batch_size=p["batch_size"], vocab_size=p["vocab"],
                       seed=seed, ckpt_every=250, device="cpu", **{**BASE, "steps": p["steps"], **recipe})
    text = corpus(p, lang, out)
    run_dir = Path(out) / "runs" / path.stem
    t0 = time.time()
    tok = train.get_tokenizer(s, train.split_documents(s, text)[0], Path(out) / f"tokenizer-{lang}")
    _, _, evals = train.run_mlm(s, run_dir, text, "", tok, desc=path.stem)
    train_data, valid_data = train.build_datasets(s, tok, text, None, run_dir / "cache")
    floor, _ = train.floors(tok, train_data, valid_data)
    curve = [{"step": e["step"], "loss": round(e["loss"], 4)} for e in evals]
    left = next((c["step"] for c in curve if c["loss"] < floor - 0.1), None)
    at = lambda k: next((c["loss"] for c in curve if c["step"] >= k), None)  # noqa: E731
    r = {"lang": lang, "recipe_name": name, **config, "floor": floor, "curve": curve, "leaves_plateau_at": left,
         "loss_1000": at(1000), "loss_end": curve[-1]["loss"], "below_floor_end": floor - curve[-1]["loss"],
         "minutes": round((time.time() - t0) / 60, 2), "config": config}
    de._write_atomic(path, json.dumps(r, indent=1))
    return r


def summary(rs):
    """Every run, and per text and recipe the seed means (and spread) of what the table shows."""
    rs = sorted(rs, key=lambda r: (r["lang"], r["recipe_name"], r["seed"]))
    cells = []
    for lang in sorted({r["lang"] for r in rs}):
        for name in sorted({r["recipe_name"] for r in rs if r["lang"] == lang}, key=_order):
            group = [r for r in rs if r["lang"] == lang and r["recipe_name"] == name]
            def mean(k, group=group):  # (None when a run lacks it, e.g. stopped before step 1,000)
                return None if any(r[k] is None for r in group) else sum(r[k] for r in group) / len(group)
            ends = [r["below_floor_end"] for r in group]
            cells.append({"lang": lang, "recipe_name": name, "recipe": group[0]["recipe"],
                          "seeds": [r["seed"] for r in group], "floor": group[0]["floor"],
                          "leaves_plateau_at": [r["leaves_plateau_at"] for r in group],
                          "loss_1000": mean("loss_1000"), "loss_end": mean("loss_end"),
                          "below_floor_end": mean("below_floor_end"), "spread": max(ends) - min(ends),
                          "minutes": mean("minutes")})
    return {"cells": cells, "runs": rs}


def _order(name):
    """Table order: the centre, then each factor's values, the old defaults, and stage 2 by steps."""
    stage2 = " layers x " in name
    return (stage2, name == "old defaults", name != "centre", int(name.split(" x ")[1]) if stage2 else 0, name)


def markdown(res):
    lines = ["| text | recipe | seeds | floor | leaves the plateau at | loss at 1,000 | at the end | end - floor "
             "(spread) | min |", "|---|---|---|---|---|---|---|---|---|"]
    f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for c in res["cells"]:
        left = ", ".join(f"{x:,}" if x else "never" for x in c["leaves_plateau_at"])
        spread = f" ({c['spread']:.3f})" if len(c["seeds"]) > 1 else ""  # (one seed: no spread to show)
        gap = round(-c["below_floor_end"], 3) + 0.0  # (+ 0.0: no "-0.000")
        lines.append(f"| {c['lang']} | {c['recipe_name']} | {len(c['seeds'])} | {c['floor']:.3f} | {left} | "
                     f"{f(c['loss_1000'])} | {f(c['loss_end'])} | {gap:+.3f}{spread} | {c['minutes']:.1f} |")
    return "\n".join(lines)


def plot(res, path):
    """Held-out loss minus the floor against steps, one panel per text, one line per recipe (seed mean)."""
    plt = de.pyplot()
    if plt is None:
        return None
    langs = sorted({c["lang"] for c in res["cells"]})
    fig, axes = plt.subplots(1, len(langs), figsize=(6 * len(langs), 4.2), squeeze=False)
    for ax, lang in zip(axes[0], langs):
        for c in (c for c in res["cells"] if c["lang"] == lang):
            runs = [r for r in res["runs"] if r["lang"] == lang and r["recipe_name"] == c["recipe_name"]]
            steps = [p["step"] for p in runs[0]["curve"]]
            gap = [sum(r["curve"][i]["loss"] for r in runs) / len(runs) - c["floor"] for i in range(len(steps))]
            name = c["recipe_name"]
            style = dict(lw=3, color="k") if name == CHOSEN else dict(lw=2, color="tab:blue") if name == "centre" \
                else dict(lw=2, color="grey", ls="--") if name == "old defaults" else dict(lw=1)
            ax.plot(steps, gap, label=f"{name} (the defaults)" if name == CHOSEN else name, **style)
        ax.axhline(0, color="k", lw=0.8)
        ax.axhline(-0.1, color="k", lw=0.5, ls=":")
        ax.set(title=f"{lang}: 1 MB", xlabel="step", ylabel="held-out loss - unigram floor (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return de.save_figure(plt, fig, path)


def run(b):
    if de.reported(b, PRESETS, markdown):
        return None
    p = PRESETS[b.preset]
    out = Path(b.out_dir) / b.preset
    results_dir = Path(b.results_dir or (out / "results" if b.preset == "tiny" else
                                         ROOT / "bench" / "results" / f"defaults_{b.preset}"))
    for lang in p["texts"]:  # the corpora, before the workers start
        corpus(p, lang, out)
    # the order a session that stops half-way wants: the whole grid of the first seed, then the comparisons
    # that chose the defaults (the centre, the old defaults, stage 2) for the other seeds, then the rest
    tasks = [(lang, name, recipe, seed, b.preset, str(out), str(results_dir)) for seed in p["seeds"]
             for lang in p["texts"] for name, recipe in recipes(p).items()]
    chose = ("centre", "old defaults", *p["depth"])
    tasks.sort(key=lambda t: (t[3] != p["seeds"][0] and t[1] not in chose, t[3]))
    workers = b.workers or p["workers"]
    if b.collect:  # what has finished so far, no training
        rs = [r for r in (de.finished_file(*result_file(t)) for t in tasks) if r is not None]
    elif workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers, initializer=de.watch_parent) as pool:
            rs = pool.map(run_one, tasks, chunksize=1)
    else:
        rs = [run_one(t) for t in tasks]
    res = summary(rs)
    path = out / "summary.json" if b.preset == "tiny" else ROOT / "bench" / "results" / f"defaults_{b.preset}.json"
    de.publish(res, path, markdown, plot)
    return res


def main(argv=None):
    return run(train.parse_args(sys.argv[1:] if argv is None else argv, BenchSettings(), usage=[__doc__.strip()]))


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
