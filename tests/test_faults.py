"""Bad input and faults, as a user meets them: every case ends with exit status 2 and one line
"error: ..." naming the file or setting (never a traceback), or with a safe recovery that is checked
(checkpoints that survive a truncated file or a failed write, token caches that heal, one run per
output folder)."""
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bert
import demo
import finetune
import train
from conftest import stopped_in_step

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--hidden_size=16", "--num_layers=1", "--num_heads=2", "--intermediate_size=32", "--max_len=16",
        "--vocab_size=300", "--batch_size=4", "--eval_every=0", "--log_every=1"]
CORPUS = ROOT / "data" / "en_valid.txt"
XPT_TINY = ["--max_len=16", "--batch_size=4", "--eval_every=0", "--log_every=1", "--phase1_steps=1",
            "--phase2_steps=1"]  # (the source brings the model's sizes)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every kind of broken input, written once."""
    d = tmp_path_factory.mktemp("faults")
    (d / "empty.txt").write_text("")
    (d / "binary.bin").write_bytes(bytes(range(256)) * 4)
    (d / "latin1.txt").write_bytes("hello world\ncaf\xe9 au lait\n".encode("latin-1"))
    (d / "cut.txt").write_bytes("첫 줄입니다\n둘째 줄이 잘렸".encode()[:-1])  # a copy cut inside a character
    (d / "bad_config").mkdir()
    (d / "bad_config" / "config.json").write_text("{not json")
    model = bert.BertForMaskedLM(bert.BertConfig(vocab_size=300, hidden_size=16, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=32,
                                                 max_position_embeddings=40))
    for name in ("truncated_weights", "foreign_weights"):
        model.save_pretrained(d / name)
    w = (d / "truncated_weights" / "model.safetensors").read_bytes()
    (d / "truncated_weights" / "model.safetensors").write_bytes(w[:len(w) // 2])
    (d / "foreign_weights" / "model.safetensors").write_bytes(b"\x00" * 64)
    (d / "bad_tokenizer").mkdir()
    (d / "bad_tokenizer" / "vocab.json").write_text('{"a": 1')
    (d / "bad_tokenizer" / "merges.txt").write_text("")
    (d / "small.txt").write_text("".join(f"line {i}\n" for i in range(30)))  # held out: 2 lines, 6 tokens
    (d / "no_label.tsv").write_text("id\tdocument\n1\thello\n")
    (d / "rows.tsv").write_text("text\tlabel\n" + "".join(f"row {i}\t{i % 2}\n" for i in range(20)))
    return d


# (name, command: "train" | "finetune", arguments with {d} for the files folder, what the line must name)
CASES = [
    ("batch size 0", "train", ["--task=mlm", f"--corpus={CORPUS}", "--batch_size=0"], "--batch_size must be >= 1"),
    ("lr 0", "train", ["--task=mlm", f"--corpus={CORPUS}", "--lr=0"], "--lr must be > 0"),
    ("masking rate", "train", ["--task=mlm", f"--corpus={CORPUS}", "--mlm_probability=1.5"], "--mlm_probability"),
    ("heads", "train", ["--task=mlm", f"--corpus={CORPUS}", "--hidden_size=17"], "divisible by --num_heads"),
    ("unknown setting", "train", ["--stepz=3"], "unknown setting 'stepz'"),
    ("steps under xpt", "train", ["--task=xpt", "--source=data/source_en", f"--corpus={CORPUS}", "--steps=5"],
     "--phase1_steps and --phase2_steps"),
    ("phase steps under mlm", "train", ["--task=mlm", f"--corpus={CORPUS}", "--phase1_steps=5"],
     "--phase1_steps does not apply to --task=mlm"),
    ("model size under xpt", "train", ["--task=xpt", "--source=data/source_en", f"--corpus={CORPUS}",
                                       "--hidden_size=64"], "--hidden_size does not apply to --task=xpt"),
    ("no such device", "train", ["--task=mlm", f"--corpus={CORPUS}", "--device=gpu"], "--device must be"),
    ("source not a folder", "train", ["--task=xpt", "--source=bert-base-uncased", f"--corpus={CORPUS}"],
     "--source=bert-base-uncased is not a folder"),
    ("longer than the source", "train", ["--task=xpt", "--source=data/source_en", f"--corpus={CORPUS}",
                                         "--max_len=64"], "--max_len=64 is longer than the source"),
    ("bad type", "train", ["--steps=many"], "--steps expects int"),
    ("unknown task", "train", ["--task=mlmm"], "task must be"),
    ("missing corpus", "train", ["--task=mlm", "--corpus={d}/nope.txt"], "nope.txt"),
    ("no corpus", "train", ["--task=mlm"], "--task=mlm needs --corpus"),
    ("empty corpus", "train", ["--task=mlm", "--corpus={d}/empty.txt"], "empty.txt contains no text"),
    ("held-out slice under one sequence", "train", ["--task=mlm", "--corpus={d}/small.txt"],
     "small.txt is too small: its held-out slice (5% of the documents) is 6 tokens, less than one sequence of "
     "--max_len=16; give it at least ~1 KB of text"),
    ("binary corpus", "train", ["--task=mlm", "--corpus={d}/binary.bin"], "binary.bin: line 2 is not UTF-8"),
    ("latin-1 corpus", "train", ["--task=mlm", "--corpus={d}/latin1.txt"], "latin1.txt: line 2 is not UTF-8"),
    ("corpus cut inside a character", "train", ["--task=mlm", "--corpus={d}/cut.txt"],
     "ends inside a character (cut short?); drop its last 2 byte(s)"),
    ("malformed config.json", "train", ["--task=xpt", "--source={d}/bad_config", f"--corpus={CORPUS}"],
     "bad_config/config.json: not a valid config.json"),
    ("missing source", "train", ["--task=xpt", "--source={d}/nowhere", f"--corpus={CORPUS}"], "nowhere"),
    ("truncated weights", "train", ["--task=xpt", "--source={d}/truncated_weights", f"--corpus={CORPUS}"],
     "truncated_weights/model.safetensors"),
    ("foreign weights", "train", ["--task=xpt", "--source={d}/foreign_weights", f"--corpus={CORPUS}"],
     "foreign_weights/model.safetensors"),
    ("tokenizer that does not parse", "train", ["--task=mlm", f"--corpus={CORPUS}", "--tokenizer_dir={d}/bad_tokenizer"],
     "bad_tokenizer/vocab.json"),
    ("no tokenizer files", "train", ["--task=mlm", f"--corpus={CORPUS}", "--tokenizer_dir={d}"], "no tokenizer files"),
    ("TSV without the columns", "finetune", ["--model=data/source_en", "--train={d}/no_label.tsv", "--test={d}/rows.tsv"],
     "no_label.tsv: no text column named 'text'"),
    ("missing TSV", "finetune", ["--model=data/source_en", "--train={d}/nope.tsv", "--test={d}/rows.tsv"], "nope.tsv"),
    ("non-UTF-8 TSV", "finetune", ["--model=data/source_en", "--train={d}/latin1.txt", "--test={d}/rows.tsv"],
     "latin1.txt"),
    ("finetune without a model", "finetune", ["--train={d}/rows.tsv"], "--model=DIR is required"),
]


@pytest.mark.parametrize("name,command,args,names", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_error(files, tmp_path, capsys, monkeypatch, name, command, args, names):
    monkeypatch.chdir(ROOT)
    argv = [a.replace("{d}", str(files)) for a in args]
    if command == "train":
        base = [*TINY, "--steps=2"] if argv[0] != "--task=xpt" else XPT_TINY
        rc = train.cli([*base, f"--out_dir={tmp_path / 'out'}", *argv] if argv[0].startswith("--task") else argv)
    else:
        rc = finetune.cli(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and "it/s]" not in ln and "%|" not in ln]
    assert rc == 2, err[-800:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and names in lines[0], lines
    if name in UP_FRONT:  # refused before any text was read or tokenizer trained
        assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


UP_FRONT = {"steps under xpt", "phase steps under mlm", "model size under xpt", "no such device",
            "source not a folder", "longer than the source"}


def test_a_device_this_torch_lacks_is_refused_up_front(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert train.cli(["--task=mlm", f"--corpus={CORPUS}", "--device=cuda", f"--out_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device=cuda: ") and "--device=cpu" in err and not list(tmp_path.iterdir())


def test_the_real_command_prints_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "train.py"), "--task=mlm", f"--corpus={tmp_path / 'nope.txt'}"],
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr, r.stderr


def mlm(out, steps=6, **kw):
    extra = [f"--{k}={v}" for k, v in kw.items()]
    return train.cli(["--task=mlm", f"--corpus={CORPUS}", *TINY, f"--steps={steps}", "--ckpt_every=2",
                      f"--out_dir={out}", *extra])


def weights(out):
    return torch.load(out / "run" / "final.pt", weights_only=True)["model"]


def test_truncated_final_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert mlm(tmp_path / "a") == 0
    final = tmp_path / "a" / "run" / "final.pt"
    final.write_bytes(final.read_bytes()[:1000])
    capsys.readouterr()
    assert mlm(tmp_path / "a") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "final.pt is not a readable checkpoint" in err and "delete" in err


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys, monkeypatch):
    """Kill after step 5 (checkpoints at 2 and 4), cut ckpt.pt short: the rerun says so, resumes from
    the checkpoint before it and ends with the weights of an uninterrupted run."""
    assert mlm(tmp_path / "whole") == 0
    with stopped_in_step(monkeypatch, 6):  # (a kill inside that step)
        mlm(tmp_path / "b")
    run = tmp_path / "b" / "run"
    assert torch.load(run / "ckpt.pt", weights_only=True)["step"] == 4
    assert torch.load(run / "ckpt.prev.pt", weights_only=True)["step"] == 2
    (run / "ckpt.pt").write_bytes((run / "ckpt.pt").read_bytes()[:500])
    capsys.readouterr()
    assert mlm(tmp_path / "b") == 0
    out = capsys.readouterr()
    assert "ckpt.pt is not a readable checkpoint" in out.err and "resuming from the checkpoint before it" in out.err
    assert "at step 2" in out.out
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (run / "ckpt.pt").exists() and not (run / "ckpt.prev.pt").exists()
    # with no readable checkpoint at all: a clear error, not a restart that hides the damage
    (run / "final.pt").unlink()
    (run / "ckpt.pt").write_bytes(b"garbage")
    capsys.readouterr()
    assert mlm(tmp_path / "b") == 2
    assert "no earlier readable checkpoint" in capsys.readouterr().err


def test_a_checkpoint_write_that_fails_midway_leaves_the_previous_one(tmp_path, monkeypatch, capsys):
    """The disk fills while the step-4 checkpoint is written: the error says so, the step-2 checkpoint
    is intact, no torn file is left, and the rerun resumes from step 2 to the uninterrupted result."""
    real = bert.atomic_write

    def failing(path, data):
        if Path(path).name == "ckpt.pt" and (Path(path).parent / "ckpt.prev.pt").exists():
            def half(f):  # part of the file, then the disk is full
                f.write(b"PK\x03\x04 partial")
                raise OSError(28, "No space left on device")
            return real(path, half)
        return real(path, data)
    monkeypatch.setattr(bert, "atomic_write", failing)
    with pytest.raises(OSError, match="No space left"):
        mlm(tmp_path / "c")
    monkeypatch.setattr(bert, "atomic_write", real)
    run = tmp_path / "c" / "run"
    assert torch.load(run / "ckpt.prev.pt", weights_only=True)["step"] == 2  # the good one, intact
    assert not (run / "ckpt.pt").exists() and not list(run.glob("*.tmp"))   # no torn file left behind
    capsys.readouterr()
    assert mlm(tmp_path / "c") == 0 and "at step 2" in capsys.readouterr().out
    assert mlm(tmp_path / "ref") == 0
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_damaged_token_cache_is_rebuilt(tmp_path, capsys, damage):
    assert mlm(tmp_path / "a", steps=2) == 0
    caches = sorted((tmp_path / "a" / "cache").glob("tokens-*.npz"))
    assert caches
    before = {p: p.read_bytes() for p in caches}
    for p in caches:
        if damage == "truncated":
            p.write_bytes(before[p][:100])
        else:  # a whole .npz, but of other documents
            with open(p, "wb") as f:
                np.savez(f, ids=np.array([1, 2, 3], dtype=np.uint16), offsets=np.array([0, 3]))
    shutil.rmtree(tmp_path / "a" / "run")
    capsys.readouterr()
    assert mlm(tmp_path / "a", steps=2) == 0
    err = capsys.readouterr().err
    assert err.count("is unusable") == len(caches) and "tokenizing again" in err
    for p in caches:  # rebuilt: the same tokens as before the damage
        z, ref = np.load(p), np.load(io.BytesIO(before[p]))
        assert np.array_equal(z["ids"], ref["ids"]) and np.array_equal(z["offsets"], ref["offsets"])


def test_one_run_per_output_folder(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(str(sleeper.pid))  # a live run holds the folder
        assert mlm(out, steps=2) == 2
        err = capsys.readouterr().err
        assert f"in use by another run (process {sleeper.pid})" in err
        assert not (out / "run").exists(), "nothing was written"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert mlm(out, steps=2) == 0, "a stale lock (its process is gone) is taken over"
    assert not (out / ".lock").exists(), "released at the end"


def test_tiny_preset_works_with_either_tokenizer(tmp_path, capsys):
    for kind in ("bpe", "wordpiece"):
        assert demo.cli(["--preset=tiny", f"--tokenizer={kind}", "--stage=tokenizers",
                          f"--out_dir={tmp_path / kind}"]) == 0, capsys.readouterr().err
