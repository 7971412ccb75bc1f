"""bench/electra_vs_mlm.py: the tiny preset end to end (both objectives, every seed, the same tokens,
floors), cached on a rerun."""
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import electra_vs_mlm as evm  # noqa: E402


def test_tiny_preset_end_to_end(tmp_path, capsys):
    res = evm.main(["--preset=tiny", f"--out_dir={tmp_path}"])
    assert res == json.loads((tmp_path / "tiny" / "results.json").read_text())
    p = evm.PRESETS["tiny"]
    assert {(r["objective"], r["seed"]) for r in res["runs"]} == {(o, k) for o in evm.OBJECTIVES for k in p["seeds"]}
    assert len({r["tokens"] for r in res["runs"]}) == 1, "the same pretraining tokens for every run"
    for r in res["runs"]:
        assert 0 <= r["test_acc"] <= 1 and r["seconds"] > 0 and r["ft_lr"] in p["ft_lr_grid"]
        assert ("disc_acc_replaced" in r["final"]) == (r["objective"] == "electra")
    assert {"majority", "bow_logreg"} <= set(res["floors"])
    out = capsys.readouterr().out
    assert "| electra |" in out and "| mlm |" in out and "Paired difference" in out
    t0 = time.time()
    again = evm.main(["--preset=tiny", f"--out_dir={tmp_path}"])  # everything cached
    assert again["runs"] == res["runs"] and time.time() - t0 < 10
    assert evm.cli(["--preset=nope", f"--out_dir={tmp_path}"]) == 2
