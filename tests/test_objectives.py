"""bench/objectives.py: the tiny preset end to end (every arm, the lr grid at the first seed, the
equal-compute steps, fine-tuning with floors), cached on a rerun."""
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import objectives as ob  # noqa: E402


def test_tiny_preset_end_to_end(tmp_path, capsys):
    res = ob.main(["--preset=tiny", f"--out_dir={tmp_path}"])
    assert res == json.loads((tmp_path / "tiny" / "summary.json").read_text())
    p = ob.PRESETS["tiny"]
    per_step, steps = res["seconds_per_step"], res["steps"]
    costly = max(per_step, key=per_step.get)
    assert steps[costly] == p["steps"] and all(steps[a] >= p["steps"] for a in p["arms"])
    for a in p["arms"]:  # equal compute: the same seconds, within half a step
        assert abs(steps[a] * per_step[a] - p["steps"] * per_step[costly]) <= per_step[a] / 2 + 1e-9
        most = str(max(p["ft_labels"]))  # the lr is the grid's best on dev (fine-tuned, most labels)
        dev = {lr: cell[most]["dev_acc"] for lr, cell in res["lr_grid_dev"][a].items()}
        assert res["lr"][a] in p["lr_grid"] and dev[f"{res['lr'][a]:g}"] == max(dev.values())
        group = res["groups"][f"{a}, equal compute"]
        assert [r["seed"] for r in group["runs"]] == list(p["seeds"])
        assert {r["steps"] for r in group["runs"]} == {steps[a]} and {r["lr"] for r in group["runs"]} == {res["lr"][a]}
        for r in group["runs"]:
            assert r["test"]["loss"] > 0 and r["test_floor"] > 0 and r["curve"][-1]["step"] == steps[a]
            assert ("disc_auc" in r["test"]) == (a == "electra")
            assert r["learned_context"] == (r["test"]["loss"] < r["test_floor"] - 0.1)
    for g in res["groups"].values():
        for r in g["finetune"]:
            assert set(r["labels"]) == {str(n) for n in p["ft_labels"]}
            assert all(0 <= c["test_acc"] <= 1 and c["lr"] in p["ft_lr_grid"] for c in r["labels"].values())
    assert len(res["groups"]["random encoder"]["finetune"]) == len(p["seeds"])
    assert {"majority", "bow_logreg"} <= set(res["ft_floors"][str(p["ft_labels"][0])])
    out = capsys.readouterr().out
    assert "| electra, equal compute |" in out and "| mlm, equal compute |" in out
    assert "electra - mlm at equal compute" in out
    t0 = time.process_time()  # (CPU seconds: a cached rerun does next to no work, however busy the machine)
    again = ob.main(["--preset=tiny", f"--out_dir={tmp_path}"])  # everything cached
    assert again == res and time.process_time() - t0 < 20
    assert ob.main(["--preset=tiny", f"--out_dir={tmp_path}", "--collect=true"]) == res
    assert ob.cli(["--preset=nope", f"--out_dir={tmp_path}"]) == 2
    assert ob.cli(["--preset=tiny", f"--out_dir={tmp_path}", "--arms=mlm,bert"]) == 2


def test_lecture_arms_score_against_their_own_floors(tmp_path):
    """XLNet and T5 through the same bench: scored on their own targets against the unigram loss of those
    targets, fine-tuned with the same head; whole-word masking scored like the masked LM."""
    b = ob.BenchSettings(preset="tiny", out_dir=str(tmp_path), arms="whole-word,plm,t5-span3")
    sh = ob.shared(b)
    for arm in ("whole-word", "plm", "t5-span3"):
        r = ob.pretrain(sh, arm, 1, 1e-3, 4)
        assert r["test"]["loss"] > 0 and r["test_floor"] > 0 and r["curve"][-1]["step"] == 4
        assert r["arm"] == arm
        ft = ob.fine_tune(sh, arm, 1, 1e-3, 4)
        assert set(ft["labels"]) == {str(n) for n in ob.PRESETS["tiny"]["ft_labels"]}
    floors = {a: ob.pretrain(sh, a, 1, 1e-3, 4)["test_floor"] for a in ("whole-word", "plm", "t5-span3")}
    assert floors["plm"] != floors["whole-word"] != floors["t5-span3"]  # (each objective's own targets)
    # a result scored before T5 was scored on its span tokens (whole-word's dev curve token by token) is
    # stale: its config lacks the marker, so the run is scored again, not read back
    for arm, marker in (("t5-span3", "scored"), ("whole-word", "evaluated")):
        path = sh["results"] / "runs" / f"{ob.run_name(sh['p'], arm, 1, 1e-3, 4)}.json"
        old = json.loads(path.read_text())
        assert marker in old["config"] and marker not in ob.run_config(sh, "plm", 1, 1e-3, 4)
        del old["config"][marker]
        path.write_text(json.dumps({**old, "test": {"loss": -1.0}}))
        assert ob.pretrain(sh, arm, 1, 1e-3, 4)["test"]["loss"] > 0


def test_equal_compute_steps():
    p = {"steps": 3000}
    assert ob.equal_compute_steps(p, {"mlm": 0.2, "electra": 0.26}) == {"mlm": 3900, "electra": 3000}
    assert ob.equal_compute_steps(p, {"mlm": 0.21, "electra": 0.26}) == {"mlm": 3714, "electra": 3000}
    assert ob.equal_compute_steps(p, {"mlm": 0.3}) == {"mlm": 3000}


def test_the_lr_is_chosen_on_dev_at_the_most_labels():
    """chosen_lr: the grid's rate whose fine-tuned dev accuracy is best at the largest label count (not
    at the smaller one, not the test accuracy), None while a grid cell is missing."""
    p = {"seeds": (1, 2), "lr_grid": (1e-3, 2e-3), "ft_labels": (40, 100), "steps": 12}
    cell = lambda dev40, dev100, test100: {"labels": {  # noqa: E731
        "40": {"dev_acc": dev40, "test_acc": 0.5}, "100": {"dev_acc": dev100, "test_acc": test100}}}
    done = {("ft", "mlm", 1, 1e-3, 12): {**cell(0.9, 0.6, 0.9), "lr": 1e-3},
            ("ft", "mlm", 1, 2e-3, 12): {**cell(0.5, 0.7, 0.5), "lr": 2e-3}}
    assert ob.chosen_lr(p, done, "mlm") == 2e-3
    assert ob.chosen_lr(p, {k: v for k, v in done.items() if k[3] == 1e-3}, "mlm") is None


def test_equal_steps_rule(tmp_path, capsys):
    """--equal=steps (the lecture's comparison): every arm the same steps, its time beside, groups and
    verdicts named by the rule."""
    res = ob.main(["--preset=tiny", f"--out_dir={tmp_path}", "--arms=mlm,plm", "--equal=steps"])
    p = ob.PRESETS["tiny"]
    assert res["rule"] == "equal steps" and res["steps"] == {"mlm": p["steps"], "plm": p["steps"]}
    assert set(res["groups"]) == {"mlm, equal steps", "plm, equal steps", "random encoder", "random XLNet encoder"}
    # (XLNet's encoder fine-tunes beside a random one of its own architecture, not only BERT's)
    assert len(res["groups"]["random XLNet encoder"]["finetune"]) == len(p["seeds"])
    saved = tmp_path / "tiny" / "random_encoder" / "random-xlnet-seed1" / "config.json"
    assert json.loads(saved.read_text())["model_type"] == "xlnet"
    assert all(r["steps"] == p["steps"] for g in res["groups"].values() for r in g["runs"])
    out = capsys.readouterr().out
    assert "plm - mlm at equal steps" in out and "equal compute" not in out and "| minutes (one thread) |" in out
    for a in ("mlm", "plm"):  # the grid at the first seed: every cell, the chosen rate marked
        assert sum(f"| {a} | {lr:g}" in out for lr in p["lr_grid"]) == 2
        assert f"| {a} | {res['lr'][a]:g} (chosen) |" in out
        assert set(res["lr_grid_runs"][a]) == {f"{lr:g}" for lr in p["lr_grid"]}
    assert ob.cli(["--preset=tiny", f"--out_dir={tmp_path}", "--equal=time"]) == 2


def test_a_run_is_fine_tuned_only_once_it_is_done():
    """plan: a fine-tuning task appears only after its pretraining run is done (a worker free beside the
    run would otherwise train it a second time into the same folder), and then before any other run."""
    p = {"arms": ("mlm", "plm"), "seeds": (1, 2), "lr_grid": (1e-3, 2e-3), "ft_labels": (40,), "steps": 12}
    first = ob.plan(p, {}, {"mlm": 12, "plm": 12})
    assert [t for t in first if t[0] == "ft" and t[1] not in ob.RANDOM] == []
    done = {("lm", "plm", 1, 2e-3, 12): {}}
    assert ob.plan(p, done, {"mlm": 12, "plm": 12})[0] == ("ft", "plm", 1, 2e-3, 12)


def test_a_run_whose_dev_loss_rose_has_not_converged():
    """The flag reads the whole curve: a run that ended above its best (memorising its rows, the final
    model scored) is "rising", not converged; a flat end past the plateau is converged, one on it "plateau",
    a falling one still learning."""
    def run(*losses, floor=6.0):
        curve = [{"step": 100 * (i + 1), "dev_loss": x} for i, x in enumerate(losses)]
        return {"curve": curve, "dev_gain_last_quarter": ob.de.dev_gain_last_quarter(curve), "dev_floor": floor}
    assert ob.convergence(run(7.0, 6.0, 5.0, 5.5)) == "rising"   # (best unchanged: the gain rule says 0)
    assert ob.convergence(run(7.0, 6.0, 5.0, 5.01)) == "converged"
    assert ob.convergence(run(7.0, 6.0, 5.5, 5.0)) == "learning"
    # as flat, but its best within 0.1 nat of its floor: on the plateau, which a stopping rule must not end
    assert ob.convergence(run(7.0, 6.0, 5.0, 5.01, floor=5.05)) == "plateau"
    assert ob.convergence(run(7.0, 6.0, 5.0, 5.01, floor=5.11)) == "converged"
    ends = [run(7.0, 5.0, 5.5), run(7.0, 5.0, 5.0), run(7.0, 6.0, 5.0), run(7.0, 6.0, 6.0, floor=6.05)]
    assert ob._count(ends) == "1/4 (1 on the plateau, 1 rising)"


def test_more_steps_continue_every_seed_from_its_finished_run(tmp_path):
    """--more_steps=N: each arm's seeds at its chosen lr go on N steps from the preset's finished runs (their
    folders reused, not trained again; no new grid), scored and fine-tuned at the new length; the preset's
    own summary stays; with equal compute (tiny's rule) refused."""
    args = ["--preset=tiny", f"--out_dir={tmp_path}", "--arms=mlm", "--equal=steps"]
    base = ob.main(args)
    summary = (tmp_path / "tiny" / "summary.json").read_text()
    p, runs = ob.PRESETS["tiny"], tmp_path / "tiny" / "runs"
    gone = ob.run_name(p, "mlm", p["seeds"][1], base["lr"]["mlm"], p["steps"])  # (its first part trained first)
    shutil.rmtree(runs / gone)
    (tmp_path / "tiny" / "results" / "runs" / f"{gone}.json").unlink()
    more = ob.main(args + ["--more_steps=4"])
    assert (runs / gone / "run" / "final.pt").exists()
    assert more["lr"] == base["lr"] and (tmp_path / "tiny" / "summary.json").read_text() == summary
    group, before = more["groups"]["mlm, equal steps"], base["groups"]["mlm, equal steps"]
    assert len(group["runs"]) == len(group["finetune"]) == len(p["seeds"])
    for r, r0 in zip(group["runs"], before["runs"]):
        assert r["steps"] == p["steps"] + 4 and r["curve"][-1]["step"] == p["steps"] + 4
        assert r["curve"][:len(r0["curve"])] == r0["curve"] and r["test"] != r0["test"]
        name = ob.run_name(p, "mlm", r["seed"], r["lr"], p["steps"])
        first, again = runs / name / "run" / "final.pt", runs / f"{name}+4" / "run" / "final.pt"
        assert again.stat().st_mtime == first.stat().st_mtime  # (copied, not trained again)
    with pytest.raises(ValueError, match="--more_steps=4: .* with --equal=steps"):  # (tiny's rule: compute)
        ob.main(["--preset=tiny", f"--out_dir={tmp_path}", "--arms=mlm", "--more_steps=4"])
