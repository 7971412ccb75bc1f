"""bench/defaults.py: the tiny preset end to end (one JSON per run, a rerun trains nothing, --report), and
the grid's design: one factor at a time around the centre, plus the old defaults."""
import json
import time

import runs
import train
from conftest import load_script

bd = load_script("bench/defaults.py")


def test_tiny_preset_end_to_end(tmp_path, capsys):
    t0 = time.time()
    res = bd.main(["--preset=tiny", f"--out_dir={tmp_path}"])
    elapsed = time.time() - t0
    p = bd.PRESETS["tiny"]
    assert len(res["runs"]) == len(p["texts"]) * len(bd.recipes(p)) * len(p["seeds"])
    assert len(list((tmp_path / "tiny" / "results").glob("*.json"))) == len(res["runs"])
    for r in res["runs"]:
        assert r["floor"] > 0 and r["curve"][-1]["step"] == r["steps"] == r["recipe"].get("steps", p["steps"])
        assert r["below_floor_end"] == r["floor"] - r["curve"][-1]["loss"]
        left = r["leaves_plateau_at"]
        assert left is None or min(c["step"] for c in r["curve"] if c["loss"] < r["floor"] - 0.1) == left
    t0 = time.time()
    assert bd.main(["--preset=tiny", f"--out_dir={tmp_path}"]) == res and time.time() - t0 < elapsed / 2
    capsys.readouterr()
    bd.main([f"--report={tmp_path / 'tiny' / 'summary.json'}"])
    assert capsys.readouterr().out.strip() == bd.markdown(json.loads((tmp_path / "tiny" / "summary.json").read_text()))


def test_the_grid_moves_one_factor_at_a_time():
    grid = bd.recipes(bd.PRESETS["cpu"])
    assert grid["centre"] == bd.CENTRE and grid["old defaults"] == bd.OLD
    for name, recipe in grid.items():
        if name in bd.DEPTH:  # stage 2: stage 1's centre, with only depth and steps changed
            assert {k: recipe[k] for k in bd.CENTRE} == bd.CENTRE and set(recipe) - set(bd.CENTRE) <= {
                "num_layers", "steps"}, name
        elif name not in ("centre", "old defaults"):
            assert sum(recipe[k] != bd.CENTRE[k] for k in bd.CENTRE) == 1, name
    assert len(grid) == 2 + sum(len(v) - 1 for v in bd.FACTORS.values()) + len(bd.DEPTH)


def test_train_defaults_are_the_bench_choice():
    """`python train.py --task=mlm` runs the recipe the bench chose (stage 1's centre at stage 2's depth
    and steps), and the committed results hold that row on both texts (so the README's reasons are
    measured, not guessed)."""
    s = train.Settings()
    chosen = {**bd.CENTRE, **bd.DEPTH[bd.CHOSEN]}
    assert {k: getattr(s, k) for k in chosen} == chosen and s.batch_size == bd.PRESETS["cpu"]["batch_size"]
    committed = json.loads((bd.ROOT / "bench" / "results" / "defaults_cpu.json").read_text())
    cells = [c for c in committed["cells"] if c["recipe_name"] == bd.CHOSEN]
    assert {c["lang"] for c in cells} == {"en", "ko"} and all(c["recipe"] == chosen for c in cells)


def test_a_tiny_run_with_the_defaults_takes_seconds(tmp_path, capsys):
    """The defaults with a tiny model and a few steps on the toy corpus: seconds, and the last lines say
    where the loss stands against its floor."""
    t0 = time.time()
    train.main(["--task=mlm", f"--corpus={bd.ROOT / 'data' / 'en_train.txt'}", f"--out_dir={tmp_path}",
                "--hidden_size=32", "--num_layers=1", "--num_heads=2", "--intermediate_size=64",
                "--vocab_size=400", "--steps=20"])
    assert time.time() - t0 < 30
    lines = capsys.readouterr().out.splitlines()
    if lines[-3:] == runs.PLATEAU_ADVICE["mlm"].splitlines():  # (on the plateau: the remedies come last)
        lines = lines[:-3]
    assert lines[-1].startswith("mlm: held-out loss") and "unigram floor" in lines[-1], lines[-4:]
    assert "learned context: " in lines[-1]
