"""bench/gpu_check.py, the one prepared command for a GPU visit: its --smoke run (every part on the CPU
at toy sizes) passes and records what the GPU run will, a machine without CUDA gets a clear error, and
the projection of the data-efficiency preset's time is right on a hand-checkable preset."""
import json
import time

import pytest
import torch

from conftest import load_script

gc = load_script("bench/gpu_check.py")


def test_smoke_runs_every_part(tmp_path, capsys):
    t0 = time.time()
    assert gc.main(["--smoke", f"--out={tmp_path}"]) == 0
    elapsed = time.time() - t0
    res = json.loads((tmp_path / "gpu_check.json").read_text())
    assert res["smoke"] and res["all_passed"] and res["environment"]["torch"] == torch.__version__
    parts = res["parts"]
    assert set(parts) == {"1", "2", "3", "4"} and all(p["finished"] and p["passed"] for p in parts.values())
    one = parts["1"]["figures"]
    assert one["compile"]["backend"] == "aot_eager" and len(one["compile"]["losses"]["compiled"]) == 5
    assert all(f["sdpa_padding_mask"]["kinds"] for k, f in one.items() if k != "compile")
    variants = parts["2"]["figures"]["variants"]
    assert {"ours eager", "ours compiled", "HF eager (sdpa)"} <= set(variants)
    for name in ("ours eager", "ours compiled"):
        assert variants[name]["tokens_per_s"] > 0 and 0 < variants[name]["mfu"] < 1
    assert {"mfu_ours_compiled_ge_40pct", "ours_compiled_ge_2x_hf_eager"} == set(parts["2"]["figures"]["goals"])
    demo = parts["3"]["figures"]
    assert demo["xpt"] > 0 and demo["floor"] > 0 and (tmp_path / "demo_output.txt").exists()
    assert json.loads((tmp_path / "demo_results.json").read_text())["arms"]["xpt"]["final"]["eval_loss"] == demo["xpt"]
    probe = parts["4"]["figures"]
    assert set(probe["sec_per_step"]) == {"xpt", "scratch"} and probe["projection"]["hours_estimate"] >= 0
    out = capsys.readouterr().out
    assert "part 4 xpt probe: passed" in out and "wrote" in out
    print(f"smoke: {elapsed:.0f} s")  # the issue asks < 60 s on an idle machine


def test_without_cuda_it_says_so_and_bad_parts_are_refused(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert gc.main([f"--out={tmp_path}"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert gc.main(["--smoke", "--parts=2,7", f"--out={tmp_path}"]) == 2
    assert "--parts must be" in capsys.readouterr().err
    assert not (tmp_path / "gpu_check.json").exists()


def test_projection_on_a_hand_checkable_preset():
    full = dict(arm_budgets={"scratch": (1000, 4000), "xpt": (1000,)}, grid_budgets={"scratch": (4000,), "xpt": (1000,)},
                seeds=(1, 2), lr_grid=(1e-3, 3e-3), max_steps=100, phase1_steps=10, min_steps={"scratch": 30, "xpt": 5},
                max_len=10, batch_size=10)
    fig = {"sec_per_step": {"xpt": 1.0, "scratch": 2.0}, "tokens_per_byte": 0.5}
    p = gc.projection(fig, smoke=False, full=full, epochs=2)
    # runs: scratch 1000 B (2 seeds, 2 s/step), scratch 4000 B (grid 2 + 1 more seed), xpt 1000 B (grid 2 + 1)
    # = 8. Steps at the estimate: 2 epochs over 50 (1000 B) or 200 (4000 B) sequences of 10 tokens = 10 or
    # 40 steps; at least min_steps (+ phase 1 for xpt): scratch 1000 B 30, scratch 4000 B 40, xpt 1000 B 15
    assert p["runs"] == 8
    assert p["seconds_cap"] == pytest.approx(100 * (2 * 2 + 3 * 2 + 3 * 1))
    assert p["seconds_estimate"] == pytest.approx(2 * 30 * 2 + 3 * 40 * 2 + 3 * 15 * 1)
