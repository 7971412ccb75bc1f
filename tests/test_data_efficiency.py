"""bench/data_efficiency.py: the tiny preset end to end on the toy data, resume, results keyed by their
settings, the corpora on a hand-made NSMC folder, errors at the command line, and the protocol's logic by
hand: the stopping rule on a plateau, the convergence flag, the bracketing ratio and its labels."""
import json
import math
import shutil
import time
from pathlib import Path

import pytest

import runs
import train
from conftest import load_script

ROOT = Path(__file__).resolve().parent.parent
de = load_script("bench/data_efficiency.py")


def test_tiny_preset_end_to_end(tmp_path, capsys):
    t0 = time.process_time()  # (CPU seconds: a busy machine does not fail it)
    summary = de.main(["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu"])
    elapsed = time.process_time() - t0
    assert elapsed < 90, f"the tiny preset took {elapsed:.0f} s"  # (~20 s wall, ~40 s CPU on 2 cores)
    results = json.loads((tmp_path / "tiny" / "results.json").read_text())
    assert results == json.loads(json.dumps(summary))
    p = de.PRESETS["tiny"]
    seeds = list(p["seeds"])
    assert results["eval_masking"].startswith("mask-only") and results["complete"] and results["stale_runs"] == 0
    assert set(results["unigram_loss"]) == {str(b) for b in p["budgets"]}
    # one JSON per finished run: the lr grid at the grid budgets (seed 1) and the chosen rate elsewhere
    files = list((tmp_path / "tiny" / "results").glob("*.json"))
    assert len(files) == de.full_plan_size(p)
    cells = {(r["method"], r["budget_bytes"], r["seed"]) for r in results["runs"]}
    assert cells == {(m, x, k) for m in ("xpt", "scratch") for x in p["arm_budgets"][m] for k in seeds}
    for m in ("xpt", "scratch"):
        for x in p["grid_budgets"][m]:
            grid = results["lr_grid"][m][str(x)]
            assert len(grid) == len(p["lr_grid"])
            best = min(grid, key=lambda lr: grid[lr]["dev_loss"])
            assert results["lr"][f"{m} {x}"] == float(best)
    for r in results["runs"]:
        for key in ("method", "budget_bytes", "seed", "lr", "steps", "best_step", "converged",
                    "dev_gain_last_quarter", "test_loss", "test_acc"):
            assert key in r, key
        # the reported weights are the dev-best ones of the last phase, and the flag follows the curve
        last = [c for c in r["curve"] if c["phase"] == r["curve"][-1]["phase"]]
        assert r["best_step"] == min(last, key=lambda c: c["dev_loss"])["step"]
        assert r["converged"] == (de.dev_gain_last_quarter(r["curve"]) < de.CONVERGED_GAIN)
        assert r["steps"] <= p["max_steps"]
        if r["method"] == "xpt":  # phase 1 is dev-selected: it may end before its cap, never after
            assert 0 < r["phase1_steps"] <= p["phase1_steps"]
    assert [q["xpt_budget_bytes"] for q in results["ratios"]] == list(p["arm_budgets"]["xpt"])
    out = capsys.readouterr().out
    assert "| budget | tokens | unigram floor | scratch | xpt | xpt vs scratch |" in out and "paper: up to 32x" in out
    assert "--preset=tiny" in out
    assert not list(tmp_path.rglob("*.tmp"))  # result.json and friends are written atomically

    # a rerun reads every result.json instead of training again; --collect trains nothing;
    # --report prints the same tables
    t0 = time.process_time()
    again = de.main(["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu"])
    assert again["runs"] == summary["runs"] and time.process_time() - t0 < elapsed / 2
    # a new checkout has the committed JSONs but no run folders: nothing trains again either
    shutil.rmtree(tmp_path / "tiny" / "runs")
    t0 = time.process_time()
    again = de.main(["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu"])
    assert again["runs"] == summary["runs"] and time.process_time() - t0 < elapsed / 2
    assert not (tmp_path / "tiny" / "runs").exists()
    # --part=finetune: the encoders' weights are gone with the run folders, so they train again and
    # repeat their committed results exactly; accuracy at each label count next to its floors
    committed = {f: f.read_bytes() for f in files}
    ft = de.main(["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu", "--part=finetune"])
    assert {f: f.read_bytes() for f in files} == committed and ft["runs"] == summary["runs"]
    assert len(ft["finetune_runs"]) == len(p["seeds"]) * (len(p["ft_arms"]) + 1)
    for n in p["ft_labels"]:
        c = ft["finetune"][str(n)]
        assert 0 < c["majority"] <= 1 and 0 < c["bow_logreg"] <= 1
        assert set(c["encoders"]) == {"random encoder"} | {f"{m} {de._size(x)}" for m, x in p["ft_arms"]}
        assert all(len(q["test_acc"]) == len(p["seeds"]) for q in c["encoders"].values())
    for r in ft["finetune_runs"]:
        assert set(r["labels"]) == {str(n) for n in p["ft_labels"]}
        assert all(c["lr"] in p["ft_lr_grid"] and c["grid"] for c in r["labels"].values())
    assert "| labels | majority class | bag-of-words | random encoder |" in capsys.readouterr().out
    files[0].unlink()  # a run's JSON gone: --collect does not train it again, the summary says so
    partial = de.main(["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu", "--collect=true"])
    assert not partial["complete"] and len(list((tmp_path / "tiny" / "results").glob("*.json"))) == len(files) - 1
    capsys.readouterr()
    de.main([f"--report={tmp_path / 'tiny' / 'results.json'}"])
    assert capsys.readouterr().out.strip() == de.markdown(partial).strip()
    assert de.cli(["--preset=tiny", f"--out_dir={tmp_path}", "--part=everything"]) == 2


def _fake_nsmc(folder):
    """A hand-made NSMC folder (prepared layout): 40 train rows, 10 test rows, 2 texts in both."""
    folder.mkdir()
    train_rows = [f"{i}\t훈련 리뷰 {i}번\t{i % 2}" for i in range(40)] + ["40\t겹치는 리뷰 하나\t1",
                                                                          "41\t겹치는 리뷰 둘\t0"]
    test_rows = [f"{i}\t시험 리뷰 {i}번\t{i % 2}" for i in range(10)] + ["50\t겹치는 리뷰 하나\t1",
                                                                        "51\t겹치는 리뷰 둘\t0"]
    (folder / "train.tsv").write_text("id\tdocument\tlabel\n" + "\n".join(train_rows) + "\n", encoding="utf-8")
    (folder / "test.tsv").write_text("id\tdocument\tlabel\n" + "\n".join(test_rows) + "\n", encoding="utf-8")
    (folder / "unlabeled.txt").write_text("".join(f"레이블 없는 리뷰 {i}번입니다\n" for i in range(300)),
                                          encoding="utf-8")
    return folder


def _rows(path):
    return path.read_text(encoding="utf-8").splitlines()[1:]


def test_korean_files_are_disjoint_nested_and_keep_test_texts_out(tmp_path):
    nsmc = _fake_nsmc(tmp_path / "nsmc")
    b = de.BenchSettings(preset="cpu", nsmc=str(nsmc))
    p = dict(de.PRESETS["cpu"], budgets=(1000, 4000), dev_lines=5, test_lines=7, tokenizer_bytes=1500, labelled=30,
             ft_dev=5, test=100)
    paths = de.korean_files(p, b, tmp_path / "out")
    lines = lambda k: paths[k].read_text(encoding="utf-8").splitlines()  # noqa: E731
    small, big, dev, test, tok = lines(1000), lines(4000), lines("dev"), lines("test"), lines("tokenizer")
    assert (len(dev), len(test)) == (5, 7) and big[:len(small)] == small and len(big) > len(small)
    assert not (set(dev) | set(test)) & set(big) and not set(dev) & set(test)
    # the tokenizer's slice: its own bytes, outside every budget and both held-out splits
    assert 1400 < len("".join(d + "\n" for d in tok).encode()) <= 1500
    assert not set(tok) & (set(big) | set(dev) | set(test))
    test_texts = {r.split("\t")[0] for r in _rows(paths["ft_test"])}
    assert len(test_texts) == 12 and "겹치는 리뷰 하나" in test_texts
    labelled = {r.split("\t")[0] for r in _rows(paths["labelled"]) + _rows(paths["ft_dev"])}
    assert len(_rows(paths["labelled"])) == 30 and len(_rows(paths["ft_dev"])) == 5 and not test_texts & labelled

    # other sizes: the files follow, they are not reused
    paths = de.korean_files(dict(p, labelled=7, dev_lines=3), b, tmp_path / "out")
    assert len(_rows(paths["labelled"])) == 7 and len(paths["dev"].read_text().splitlines()) == 3
    with pytest.raises(ValueError, match="exceeds"):
        de.korean_files(dict(p, budgets=(10**9,)), b, tmp_path / "out2")


def test_missing_inputs_are_one_line_errors(tmp_path, capsys):
    assert de.cli(["--preset=cpu", f"--nsmc={tmp_path / 'nowhere'}", f"--out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--nsmc" in err and "Traceback" not in err
    assert de.cli(["--preset=tiny", f"--source={tmp_path}", f"--out_dir={tmp_path}"]) == 2
    assert "--source" in capsys.readouterr().err
    assert de.cli(["--preset=huge", f"--out_dir={tmp_path}"]) == 2
    assert "preset must be one of" in capsys.readouterr().err


def test_floors_by_hand():
    assert de.majority_class(["a", "a", "b"], ["a", "b", "b", "b"]) == 0.25
    # the label is the word "good" or "bad"; the other words are noise shared by both classes
    rows = [(f"{w} movie {n}", "1" if w == "good" else "0") for n in ("one", "two", "three", "four")
            for w in ("good", "bad")]
    acc, l2 = de.bow_logreg(rows, rows[:4], [("a good film", "1"), ("so bad", "0"), ("bad bad", "0")],
                            l2_grid=(1e-3,))
    assert acc == 1.0 and l2 == 1e-3
    # words that say nothing about the label: the regression can do no better than a constant guess
    flat = [("same words here", "1")] * 6 + [("same words here", "0")] * 4
    acc, _ = de.bow_logreg(flat, flat, [("same words here", "1"), ("same words here", "0")])
    assert acc == 0.5


def test_the_stopping_rule_does_not_stop_inside_a_plateau_bump():
    """The shape of CALIBRATION.md item 6 (scratch at 200 KB, one evaluation every 50 steps): 6.90 at
    step 250, up to 7.10 at 750, back at 6.90 by 1,400, then down to 5.9 at 3,000. A patience of 2 evaluations
    (the old cpu preset) stops at step 350; min_steps 2,000 with 20 evaluations of patience never stops
    inside the bump, and still stops once the curve has flattened for 1,000 steps."""
    steps = list(range(50, 6001, 50))

    def loss(step):
        if step <= 250:
            return 7.3 - 0.4 * step / 250
        if step <= 750:
            return 6.9 + 0.2 * (step - 250) / 500
        if step <= 1400:
            return 7.1 - 0.2 * (step - 750) / 650
        if step <= 3000:
            return 6.9 - 1.0 * (step - 1400) / 1600
        return 5.9 + 0.0001 * (step - 3000)  # flat, then slowly overfitting

    def first_stop(patience, min_steps):
        losses = []
        for step in steps:
            losses.append(loss(step))
            if runs.stalled(losses, step, patience, min_steps):
                return step
        return None

    assert first_stop(2, 0) == 350  # stopped on the plateau: what the old protocol did
    assert first_stop(20, 2000) == 4000  # the best (step 3,000) + 1,000 steps of patience
    assert first_stop(20, 0) == 1250  # patience alone is not enough: the bump outlasts it
    assert not runs.stalled([7.0, 6.9, 7.1], 100, 0, 0) and not runs.stalled([7.0], 5000, 20, 0)


def test_the_convergence_flag_reads_the_last_quarter():
    still_learning = [{"step": s, "dev_loss": 7.0 - 0.001 * s} for s in range(100, 2001, 100)]
    assert de.dev_gain_last_quarter(still_learning) == pytest.approx(0.5)  # 5.5 at 1,500, 5.0 at the end
    overfit = [{"step": s, "dev_loss": abs(s - 300) / 1000 + 6.0} for s in range(100, 3001, 100)]
    assert de.dev_gain_last_quarter(overfit) == 0.0  # the best came early: nothing left to gain
    flat = [{"step": s, "dev_loss": 6.0 - (0.01 if s == 2000 else 0)} for s in range(100, 2001, 100)]
    assert de.dev_gain_last_quarter(flat) == pytest.approx(0.01) and 0.01 < de.CONVERGED_GAIN
    assert de.dev_gain_last_quarter([{"step": 50, "dev_loss": 6.0}]) == math.inf  # too few evaluations


def _run(method, budget, seed, loss, converged=True):
    return {"method": method, "budget_bytes": budget, "seed": seed, "test_loss": loss, "converged": converged}


def test_ratio_on_a_synthetic_curve():
    budgets, scratch = [1, 4, 16, 64], [5.0, 4.0, 3.0, 2.0]  # linear in log-budget: loss 3.5 at budget 8
    approx = lambda kind_value: (kind_value[0], pytest.approx(kind_value[1]))  # noqa: E731
    assert approx(de.efficiency_ratio(budgets, scratch, 3.5, 1)) == ("=", 8.0)
    assert approx(de.efficiency_ratio(budgets, scratch, 3.5, 4)) == ("=", 2.0)
    assert approx(de.efficiency_ratio(budgets, scratch, 2.0, 4)) == ("=", 16.0)
    assert de.efficiency_ratio(budgets, scratch, 1.5, 1) == (">", 64.0)  # beyond the grid: a bound
    assert de.efficiency_ratio(budgets, scratch, 5.5, 4) == ("<", 0.25)
    assert de.ratio_text(">", 64.0) == "> 64x" and de.ratio_text("=", 8.0) == "8x"
    # the first crossing counts on a curve that is not monotone (a small budget memorises)
    assert de.budget_reaching([1, 2, 4], [6.9, 7.1, 5.9], 6.5)[2] == 1


def test_equal_loss_ratios_bracket_by_hand_and_label_their_bounds():
    # scratch: 100 KB at 7.0, 200 KB at 6.0 (seeds 1-3 at 6.9/7.0/7.1 and 5.9/6.0/6.1); xpt at 25 KB: 6.5
    # (seeds 6.4/6.5/6.6): halfway in log-budget -> 141.4 KB, ratio 5.66; per seed k: xpt_k against
    # scratch_k's curve: seed 1 (6.4 vs 6.9 -> 5.9): t = 0.5 again, the same ratio
    S, X = 100_000, 25_000
    runs = [_run("scratch", S, k, 6.9 + 0.1 * (k - 1)) for k in (1, 2, 3)]
    runs += [_run("scratch", 2 * S, k, 5.9 + 0.1 * (k - 1)) for k in (1, 2, 3)]
    runs += [_run("xpt", X, k, 6.4 + 0.1 * (k - 1)) for k in (1, 2, 3)]
    [q] = de.equal_loss_ratios(runs, 3)
    assert q["kind"] == "measured" and q["bracket"] == [S, 2 * S]
    assert q["scratch_equal_budget_bytes"] == pytest.approx(S * 2 ** 0.5)
    assert q["ratio"] == pytest.approx(4 * 2 ** 0.5) and q["xpt_loss_mean"] == pytest.approx(6.5)
    assert [s["ratio"] for s in q["ratio_seeds"]] == pytest.approx([4 * 2 ** 0.5] * 3)
    assert q["ratio_seeds_std"] == pytest.approx(0.0, abs=1e-9)
    # the labels
    label = lambda rs, n=3: de.equal_loss_ratios(rs, n)[0]["kind"]  # noqa: E731
    unconv = lambda rs, m: [dict(r, converged=False) if r["method"] == m else r for r in rs]  # noqa: E731
    assert label(unconv(runs, "xpt")) == "lower_bound"  # more training would lower xpt: the ratio grows
    assert label(unconv(runs, "scratch")) == "upper_bound"
    assert label(unconv(unconv(runs, "scratch"), "xpt")) == "unresolved"
    assert label([r for r in runs if r["seed"] < 3]) == "preliminary"  # bracketed, 2 seeds of 3
    below = [dict(r, test_loss=5.0) if r["method"] == "xpt" else r for r in runs]
    assert label(below) == "lower_bound" and de.equal_loss_ratios(below, 3)[0]["ratio_text"] == "> 8x"
    above = [dict(r, test_loss=7.5) if r["method"] == "xpt" else r for r in runs]
    assert label(above) == "upper_bound" and de.equal_loss_ratios(above, 3)[0]["ratio_text"] == "< 4x"
    # an unconverged scratch budget outside the bracket does not matter, except for a bound beyond it
    more = runs + [_run("scratch", 4 * S, k, 5.0, converged=False) for k in (1, 2, 3)]
    assert label(more) == "measured"
    assert label([dict(r, test_loss=4.0) if r["method"] == "xpt" else r for r in more]) == "unresolved"
    assert label(unconv(above, "xpt")) == "unresolved"  # above scratch, but it could still go lower
    # a bracketing scratch cell that never left its plateau is flagged (converged by the rule, though)
    floors = {str(S): 6.95, str(2 * S): 6.9}
    [q] = de.equal_loss_ratios(runs, 3, floors)
    assert q["kind"] == "measured" and q["bracket_on_plateau"] == [S]


def test_paired_differences_use_the_two_sigma_rule():
    runs = [_run("scratch", 1, k, 7.0) for k in (1, 2, 3)]
    runs += [_run("xpt", 1, k, 6.5 + 0.01 * k) for k in (1, 2, 3)]  # 0.5 below, little spread: beats
    assert de.paired_differences(runs)["1"]["verdict"] == "beats scratch"
    noisy = [dict(r, test_loss=7.0 + 0.3 * (-1) ** r["seed"]) if r["method"] == "xpt" else r for r in runs]
    assert de.paired_differences(noisy)["1"]["verdict"] == "no difference"
    worse = [dict(r, test_loss=7.5 + 0.01 * r["seed"]) if r["method"] == "xpt" else r for r in runs]
    assert de.paired_differences(worse)["1"]["verdict"] == "worse than scratch"


def test_the_plan_waits_for_each_grid():
    p = de.PRESETS["cpu"]
    first = de.plan(p, {})
    assert len(first) == sum(len(p["grid_budgets"][m]) for m in ("xpt", "scratch")) * len(p["lr_grid"])
    assert all(t[3] == 1 for t in first) and first[0][1:3] == ("scratch", 200_000)  # the longest first
    # scratch's 100 KB grid done, 1e-3 best on dev: its seeds 2 and 3 are ready, and scratch's 50 KB
    # (nearest grid budget: 100 KB) with every seed at 1e-3
    done = {("arm", "scratch", 100_000, 1, lr): {"dev_loss": 7.0 - (lr == 1e-3), "lr": lr} for lr in p["lr_grid"]}
    ready = de.plan(p, done)
    assert ("arm", "scratch", 100_000, 2, 1e-3) in ready and ("arm", "scratch", 50_000, 3, 1e-3) in ready
    assert not [t for t in ready if t[1] == "scratch" and t[2] == 400_000 and t[3] > 1]  # 200 KB's grid first
    # a diverged rate (no dev loss) is never chosen
    done[("arm", "scratch", 100_000, 1, 1e-3)] = {"dev_loss": None, "lr": 1e-3}
    assert de.chosen_lrs(p, done)[("scratch", 100_000)] != 1e-3
    assert de.full_plan_size(p) == 2 * (3 + 2) + 4 * 3 + 2 * (3 + 2) + 2 * 3  # (grid cells, then the seeds)
    # the ablations take xpt's rate at the nearest grid budget: the plan holds xpt's grid first
    abl = de.plan(p, {}, "ablations")
    assert abl == [("arm", "xpt", x, 1, lr) for x in p["grid_budgets"]["xpt"] for lr in p["lr_grid"]]
    xdone = {("arm", "xpt", x, 1, lr): {"dev_loss": 6.0 - (lr == 1e-3), "lr": lr}
             for x in p["grid_budgets"]["xpt"] for lr in p["lr_grid"]}
    abl = de.plan(p, xdone, "ablations")
    assert len(abl) == len(xdone) + len(de.ABLATIONS) * len(p["arm_budgets"]["xpt"])
    assert all(t[4] == 1e-3 for t in abl if t[1] in de.ABLATIONS)
    # fine-tuning: the grids that choose its encoders' rates, the random encoders (no rate needed), then
    # every seed of each encoder at its chosen rate
    ft = de.plan(p, {}, "finetune")
    assert ft[:6] == [("arm", "xpt", 50_000, 1, lr) for lr in p["lr_grid"]] + [
        ("arm", "scratch", 200_000, 1, lr) for lr in p["lr_grid"]]
    assert ft[6:] == [("ft", "random", 0, k, 0.0) for k in p["seeds"]]
    sdone = {("arm", "scratch", 200_000, 1, lr): {"dev_loss": 6.0 - (lr == 2e-3), "lr": lr} for lr in p["lr_grid"]}
    ft = de.plan(p, {**xdone, **sdone}, "finetune")
    assert ft[9:] == [("ft", "xpt", 100_000, k, 1e-3) for k in p["seeds"]] + [
        ("ft", "scratch", 150_000, k, 2e-3) for k in p["seeds"]]
    assert de.full_plan_size(p, "finetune") == len(ft)


def test_the_cpu_preset_follows_the_protocol():
    """What issue 22 asks of the measured preset: stopping never inside the plateau (min_steps >= 2,000
    for scratch, patience >= 1,000 steps), 3+ rates at two budgets per method, 3 paired seeds, scratch
    budgets that can bracket xpt's, a dev split of >= 10K tokens (400 reviews of ~28 tokens), two workers."""
    p = de.PRESETS["cpu"]
    assert p["min_steps"]["scratch"] >= 2000 and p["patience"] * p["eval_every"] >= 1000
    assert p["max_steps"] >= 2 * p["min_steps"]["scratch"] and len(p["lr_grid"]) >= 3
    assert all(len(p["grid_budgets"][m]) == 2 and set(p["grid_budgets"][m]) <= set(p["arm_budgets"][m])
               for m in ("xpt", "scratch"))
    assert len(p["seeds"]) >= 3 and p["dev_lines"] >= 350 and p["workers"] == 2
    assert len(p["arm_budgets"]["scratch"]) >= 4 and min(p["arm_budgets"]["scratch"]) <= max(p["arm_budgets"]["xpt"])
    g = de.PRESETS["gpu"]
    assert min(g["arm_budgets"]["xpt"]) >= 16 * min(p["arm_budgets"]["xpt"])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_worker_leaves_when_its_command_is_gone(tmp_path):
    """A pool worker (started by _init_worker) whose command died is reparented; it notices and exits
    instead of training on alone."""
    import subprocess
    import sys
    mark = tmp_path / "started"
    code = ("import dataclasses, sys, time; sys.path.insert(0, {root!r}); from conftest import load_script; "
            "de = load_script('bench/data_efficiency.py'); "
            "de._init_worker(dataclasses.asdict(de.BenchSettings()), 1); open({mark!r}, 'w').close(); time.sleep(120)"
            ).format(root=str(ROOT / "tests"), mark=str(mark))
    # the command: starts the worker, waits until it has started, then dies
    shell = subprocess.run(["sh", "-c", 'python -c "$0" >/dev/null 2>&1 & echo $!; while [ ! -e "$1" ]; do sleep 0.05; done', code,
                            str(mark)], env={"PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin"},
                           capture_output=True, text=True, timeout=120)
    pid = int(shell.stdout.split()[0])

    def alive():  # (an exited child of a container's init may stay a zombie: that counts as gone)
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] not in ("Z", "X")
        except OSError:
            return False
    deadline = time.time() + 30
    while alive() and time.time() < deadline:
        time.sleep(0.1)
    assert not alive()


def test_a_new_setting_leaves_the_committed_runs_valid():
    """An arm's identity holds every train.Settings field: a field added to train.py must be listed in
    SETTINGS_ADDED (with its default) or every committed run of the cpu preset turns stale at once."""
    import dataclasses
    committed = sorted((ROOT / "bench" / "results" / "data_efficiency_cpu").glob("*.json"))
    assert committed
    settings = json.loads(committed[0].read_text())["config"]["settings"]
    fields = {f.name for f in dataclasses.fields(train.Settings)} - {"device"}
    assert fields - set(settings) - set(de.SETTINGS_ADDED) == set()
    assert set(settings) - fields - set(de.SETTINGS_MOVED) == set()
    # and a changed train.py default must be pinned in run_settings: every committed arm's settings are
    # what the code builds for it today (else they would all be stale)
    for path in committed:
        c = json.loads(path.read_text())["config"]
        assert de.arm_settings(de.PRESETS["cpu"], c["method"], c["seed"], c["lr"]) == c["settings"], path.name
