"""bench/data_efficiency.py: the tiny preset end to end on the toy data, resume, and the headline logic."""
import importlib.util
import json
import time
from pathlib import Path

import pytest

import xpt

ROOT = Path(__file__).resolve().parent.parent
_SPEC = importlib.util.spec_from_file_location("data_efficiency", ROOT / "bench" / "data_efficiency.py")
de = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(de)


def test_tiny_preset_end_to_end(tmp_path, capsys):
    t0 = time.time()
    summary = de.main(["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu"])
    elapsed = time.time() - t0
    assert elapsed < 60, f"the tiny preset took {elapsed:.0f} s"
    results = json.loads((tmp_path / "tiny" / "results.json").read_text())
    assert results == json.loads(json.dumps(summary))
    budgets = de.PRESETS["tiny"]["budgets"]
    runs = {(r["source"], r["method"], r["budget"]) for r in results["runs"]}
    assert runs == {("own", m, b) for m in xpt.METHODS for b in budgets}
    for r in results["runs"]:
        assert r["best_loss"] > 0 and 0.0 <= r["accuracy"] <= 1.0 and r["curve"]
    assert set(results["efficiency"]["own"]["loss"]) == set(xpt.METHODS)
    out = capsys.readouterr().out
    assert "| own | xpt |" in out and "32x" in out and "--preset=tiny" in out

    # a rerun reads every run's result.json instead of training again
    t0 = time.time()
    again = de.main(["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu"])
    assert again["runs"] == summary["runs"]
    assert time.time() - t0 < elapsed


def test_efficiency_headline():
    budgets = [1, 2, 4, 8]
    loss = {"scratch": [5.0, 4.0, 3.5, 3.0], "xpt": [3.5, 2.9, 2.5, 2.0], "xpt-no-itl": [4.0, 3.5, 3.2, 3.0],
            "embeddings-only": [6.0, 6.0, 6.0, 6.0]}
    results = [{"source": "s", "method": m, "budget": b, "best_loss": v}
               for m, vs in loss.items() for b, v in zip(budgets, vs)]
    e = de.efficiency(results, "s", budgets, "best_loss", "lower")
    assert e["scratch"] == (8, "1x")
    assert e["xpt"] == (2, "4x")  # 2.9 <= 3.0 at budget 2; 3.5 at budget 1 does not reach it
    assert e["xpt-no-itl"] == (8, "1x")
    assert e["embeddings-only"] == (None, "not reached")
    assert e["xpt-one-phase"] == (None, "not reached")  # no runs at all
    acc = [{"source": "s", "method": m, "budget": b, "accuracy": a}
           for m, a in (("scratch", 0.7), ("xpt", 0.8)) for b in budgets]
    ea = de.efficiency(acc, "s", budgets, "accuracy", "higher")
    assert ea["scratch"] == (1, "1x") and ea["xpt"] == (1, ">= 1x")


def test_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        de.main(["--preset=huge", f"--out_dir={tmp_path}"])
    with pytest.raises(ValueError, match="unknown methods"):
        de.main(["--preset=tiny", "--methods=xpt,magic", f"--out_dir={tmp_path}"])
