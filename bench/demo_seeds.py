"""The demo's Korean comparison over several seeds: is XPT's margin over scratch more than the noise?

    python bench/demo_seeds.py                  # seeds 1, 2, 3 of the default demo (README: the time)
    python bench/demo_seeds.py --seeds=1,2,3,4,5
    python bench/demo_seeds.py --parallel=3     # three at a time, one thread each

Each seed runs `python train.py --seed=K --out_dir=out/demo-seeds/seedK` (the shipped English source;
seed K gives both arms the same data order and masks, its own initialisation of the new parts) and reads
its results.json. Prints, and writes to bench/results/demo_seeds.json: per seed the final held-out
Korean loss of both arms (at [MASK] positions), the unigram floor, and the mean and sample standard
deviation of each, of the paired difference scratch - XPT, and of each arm's distance below the floor.
Also splits the final losses by kind of held-out token: whole tokens, and byte-level pieces of a Hangul
syllable (a rare syllable that the 2,000-token BPE cuts into bytes; guessing its missing byte from the
visible ones is a trivial kind of context, so the README reports the margin on whole tokens too).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import bert  # noqa: E402
import tokenizer  # noqa: E402
import train  # noqa: E402


def run_seed(seed, out, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else dict(os.environ)
    t = time.time()
    with open(out / f"seed{seed}.log", "w") as log:
        p = subprocess.Popen([sys.executable, "train.py", f"--seed={seed}", f"--out_dir={out / f'seed{seed}'}"],
                             cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    return p, t


@torch.no_grad()
def split_losses(demo_dir, arm):
    """Held-out loss of an arm's final model at [MASK] positions, split into whole tokens and byte pieces
    (tokens that do not decode to whole characters), with the unigram floor of each part."""
    tok = tokenizer.load_tokenizer(demo_dir / "tokenizer_ko")
    model = bert.BertForMaskedLM.from_pretrained(demo_dir / arm / "model").eval()
    s = train.Settings(max_len=model.config.max_len)
    _, valid = train.build_datasets(s, tok, demo_dir / "corpus" / "ko_train.txt", demo_dir / "corpus" / "ko_valid.txt")
    piece = np.array(["\ufffd" in tok.decode([i]) for i in range(len(tok))])
    groups, k = train.eval_mask_groups(valid["input_ids"], vocab_size=len(tok), special_ids=tok.special_ids)
    ids = valid["input_ids"]
    losses, targets = [], []
    for g in range(k):
        chosen = groups == g
        for start in range(0, len(ids), 64):
            sl = slice(start, start + 64)
            inp = torch.where(chosen[sl], torch.full_like(ids[sl], tok.mask_id), ids[sl])
            logits = model(inp, attention_mask=valid["attention_mask"][sl]).logits
            c = chosen[sl]
            losses.append(torch.nn.functional.cross_entropy(logits[c], ids[sl][c], reduction="none"))
            targets.append(ids[sl][c])
    losses, targets = torch.cat(losses).numpy(), torch.cat(targets).numpy()
    tr, _ = train.tokenize_documents(train.read_documents(demo_dir / "corpus" / "ko_train.txt"), tok)
    out = {}
    for name, sel in (("whole", ~piece[targets]), ("byte_piece", piece[targets])):
        floor = train.unigram_loss(tr, targets[sel], len(tok), tok.special_ids)
        out[name] = {"share": float(sel.mean()), "loss": float(losses[sel].mean()), "floor": floor}
    return out


def summary(values):
    return {"mean": statistics.mean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="1,2,3")
    ap.add_argument("--parallel", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "out" / "demo-seeds"))
    args = ap.parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = 1 if args.parallel > 1 else 0
    pending, running, seconds = list(seeds), [], {}
    while pending or running:
        while pending and len(running) < args.parallel:
            k = pending.pop(0)
            running.append((k, *run_seed(k, out, threads)))
        time.sleep(2)
        for item in list(running):
            k, p, t = item
            if p.poll() is not None:
                running.remove(item)
                if p.returncode != 0:
                    raise SystemExit(f"seed {k} failed: see {out / f'seed{k}.log'}")
                seconds[k] = round(time.time() - t, 1)
                print(f"seed {k}: done in {seconds[k]:.0f} s")
    rows = []
    for k in seeds:
        d = out / f"seed{k}" / "demo"
        r = json.loads((d / "results.json").read_text())
        row = {"seed": k, "floor": r["unigram_loss"]["ko"], "seconds": seconds[k],
               "source_loss": r["source"]["final_loss"], "source_floor": r["unigram_loss"]["en"]}
        for arm in ("xpt", "scratch"):
            row[arm] = r["arms"][arm]["final"]["eval_loss"]
            row[f"{arm}_split"] = split_losses(d, arm)
        rows.append(row)
    res = {"command": "python bench/demo_seeds.py --seeds=" + args.seeds, "eval_masking": "mask-only",
           "runs": rows,
           "xpt": summary([r["xpt"] for r in rows]), "scratch": summary([r["scratch"] for r in rows]),
           "scratch_minus_xpt": summary([r["scratch"] - r["xpt"] for r in rows]),
           "xpt_below_floor": summary([r["floor"] - r["xpt"] for r in rows]),
           "scratch_below_floor": summary([r["floor"] - r["scratch"] for r in rows])}
    for part in ("whole", "byte_piece"):
        res[f"{part}_tokens"] = {
            "share": statistics.mean(r["xpt_split"][part]["share"] for r in rows),
            "floor": statistics.mean(r["xpt_split"][part]["floor"] for r in rows),
            "xpt": summary([r["xpt_split"][part]["loss"] for r in rows]),
            "scratch": summary([r["scratch_split"][part]["loss"] for r in rows])}
    print(f"{'seed':>4}  {'floor':>6}  {'xpt':>6}  {'scratch':>7}  {'scratch-xpt':>11}")
    for r in rows:
        print(f"{r['seed']:>4}  {r['floor']:6.3f}  {r['xpt']:6.3f}  {r['scratch']:7.3f}  {r['scratch'] - r['xpt']:11.3f}")
    f = lambda x: f"{x['mean']:.3f} +- {x['sd']:.3f}"  # noqa: E731
    print(f"mean +- sd: xpt {f(res['xpt'])}, scratch {f(res['scratch'])}, scratch - xpt {f(res['scratch_minus_xpt'])}")
    print(f"below the floor: xpt {f(res['xpt_below_floor'])}, scratch {f(res['scratch_below_floor'])}")
    for part in ("whole", "byte_piece"):
        p = res[f"{part}_tokens"]
        print(f"{part} tokens ({p['share']:.0%} of held-out): floor {p['floor']:.3f}, xpt {f(p['xpt'])}, "
              f"scratch {f(p['scratch'])}")
    dest = ROOT / "bench" / "results" / "demo_seeds.json"
    dest.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
