"""bench/data_efficiency.py: the tiny preset end to end on the toy data, resume, results keyed by their
settings, the corpora on a hand-made NSMC folder, errors at the command line, and the headline logic."""
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
    p = de.PRESETS["tiny"]
    for r in results["runs"]:
        assert r["best_loss"] > 0 and 0.0 <= r["accuracy"] <= 1.0 and r["curve"]
        assert r["best_loss"] <= r["final_loss"] == r["curve"][-1]["loss"]
        # the curve is on the arm's global steps: every arm ends at the same step
        assert r["curve"][-1]["step"] == p["phase1_steps"] + p["phase2_steps"]
        assert r["lr"] == (p["scratch_lr"] if r["method"] == "scratch" else p["lr"])["own"]
    assert set(results["efficiency"]["own"]["loss"]) == set(xpt.METHODS)
    out = capsys.readouterr().out
    assert "| own | xpt |" in out and "32x" in out and "--preset=tiny" in out
    assert "(best / final)" in out and "Peak learning rates, own: scratch" in out
    assert not list(tmp_path.rglob("*.tmp"))  # result.json and friends are written atomically

    # a rerun reads every run's result.json instead of training again
    t0 = time.time()
    again = de.main(["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu"])
    assert again["runs"] == summary["runs"]
    assert time.time() - t0 < elapsed

    # another scratch learning rate: scratch runs again (in new folders), the other arms are reused
    changed = de.main(["--preset=tiny", f"--out_dir={tmp_path}", "--device=cpu", "--scratch_lr=3e-3",
                       "--methods=scratch"])
    before = {(r["method"], r["budget"]): r for r in summary["runs"]}
    for r in changed["runs"]:
        if r["method"] == "scratch":
            assert r["lr"] == 3e-3 and r["config"] != before[("scratch", r["budget"])]["config"]
        else:
            assert r == before[(r["method"], r["budget"])]
    assert len(changed["runs"]) == len(summary["runs"])
    assert len(list((tmp_path / "tiny" / "runs" / "own" / str(budgets[0]) / "scratch").iterdir())) == 2


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


def test_korean_data_rewrites_subsets_and_keeps_test_texts_out(tmp_path):
    nsmc = _fake_nsmc(tmp_path / "nsmc")
    b = de.BenchSettings(preset="cpu", nsmc=str(nsmc))
    p = dict(de.PRESETS["cpu"], budgets=(1000, 2000), valid_lines=5, labelled=100, test=100)
    trains, valid, labelled, test = de.korean_data(p, b, tmp_path / "out")
    test_texts = {r.split("\t")[0] for r in _rows(test)}
    assert len(test_texts) == 12 and "겹치는 리뷰 하나" in test_texts
    assert len(_rows(labelled)) == 40 and not test_texts & {r.split("\t")[0] for r in _rows(labelled)}
    assert len(valid.read_text(encoding="utf-8").splitlines()) == 5

    # smaller subsets: the files follow, they are not reused
    p = dict(p, labelled=7, test=3)
    _, _, labelled, test = de.korean_data(p, b, tmp_path / "out")
    assert len(_rows(labelled)) == 7 and len(_rows(test)) == 3
    assert json.loads((tmp_path / "out" / "corpus" / "meta.json").read_text())["labelled"] == 7


def test_missing_inputs_are_one_line_errors(tmp_path, capsys):
    assert de.cli(["--preset=cpu", f"--nsmc={tmp_path / 'nowhere'}", f"--out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--nsmc" in err and "Traceback" not in err
    empty = tmp_path / "no-english"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="--english"):
        de.own_source(de.PRESETS["cpu"], de.BenchSettings(preset="cpu", english=str(empty)), tmp_path)


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
