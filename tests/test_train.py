"""train.py: settings parser, masking, packing, the loop (accumulation, resume, failures), DDP."""
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import bert
import runs
import t5
import train
from conftest import stopped_in_step
import xpt
from tokenizer import BPETokenizer

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--hidden_size=32", "--num_layers=2", "--num_heads=2", "--intermediate_size=64", "--max_len=24",
        "--vocab_size=300", "--batch_size=4", "--log_every=1"]


def make_corpus(path, n_docs=120, seed=0):
    """Generated sentences (no borrowed text): a small grammar over everyday words."""
    rng = random.Random(seed)
    who = ["the cat", "my sister", "our teacher", "a neighbour", "the old dog", "my friend Mina"]
    verb = ["walked to", "looked at", "cooked dinner near", "talked about", "waited for", "cleaned"]
    what = ["the park", "the small kitchen", "a red bus", "the market", "the rainy street", "a quiet cafe"]
    when = ["this morning", "after work", "on Sunday", "at noon", "before the storm", "last night"]
    docs = []
    for _ in range(n_docs):
        docs.append(" ".join(f"{rng.choice(who).capitalize()} {rng.choice(verb)} {rng.choice(what)} "
                             f"{rng.choice(when)}." for _ in range(rng.randint(2, 5))))
    path.write_text("\n".join(docs) + "\n")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus") / "c.txt")


@pytest.fixture(scope="module")
def tok(corpus):
    return BPETokenizer.train(train.read_documents(corpus), 300)


# ---------------------------------------------------------------- settings
def test_parse_args_types_and_errors(capsys):
    s = train.parse_args(["--steps=7", "--lr=0.1", "--whole_word=true", "--method=xpt-no-itl"])
    assert (s.steps, s.lr, s.whole_word, s.method) == (7, 0.1, True, "xpt-no-itl")
    assert train.parse_args([]) == train.Settings()
    with pytest.raises(ValueError, match="unknown setting .stepz.*valid keys: task, out_dir"):
        train.parse_args(["--stepz=3"])
    with pytest.raises(ValueError, match="--steps expects int, got 'many'"):
        train.parse_args(["--steps=many"])
    with pytest.raises(ValueError, match="expects bool"):
        train.parse_args(["--compile=maybe"])
    with pytest.raises(ValueError, match="--key=value"):
        train.parse_args(["steps"])
    # the shell's other spellings: --key value, and a bare --flag for a bool
    s = train.parse_args(["--steps", "7", "--whole_word", "--lr", "0.1", "--compile"])
    assert (s.steps, s.whole_word, s.lr, s.compile) == (7, True, 0.1, True)
    with pytest.raises(ValueError, match="--key=value"):
        train.parse_args(["--steps"])
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    out = capsys.readouterr().out
    for f in ("--steps=8000", "--lr=0.001", "--task=demo", "optimizer steps"):
        assert f in out


# ---------------------------------------------------------------- masking
SPECIAL = [0, 1, 2, 3, 4]  # <s> <pad> </s> <unk> <mask>


def test_mask_statistics_on_a_large_batch():
    g = torch.Generator().manual_seed(0)
    V = 99
    ids = torch.randint(5, V, (300, 401), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2          # <s> ... </s>
    ids[:50, 300:] = 1                   # padding in some rows
    before = ids.clone()
    inputs, labels = train.mask_tokens(ids, mask_id=4, vocab_size=V, special_ids=SPECIAL, generator=g)
    assert torch.equal(ids, before), "mask_tokens must not modify its input"
    chosen = labels != -100
    eligible = ~torch.isin(ids, torch.tensor(SPECIAL))
    assert not (chosen & ~eligible).any(), "special tokens and padding are never chosen"
    assert torch.equal(labels[chosen], ids[chosen])
    assert abs(chosen.sum().item() / eligible.sum().item() - 0.15) < 0.005
    n = chosen.sum().item()
    masked = (inputs == 4) & chosen
    kept = (inputs == ids) & chosen
    replaced = chosen & ~masked & ~kept
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    # a random replacement can hit the original token by chance (1/94): count those as "kept"
    assert abs(kept.sum().item() / n - (0.1 + 0.1 / (V - 5))) < 0.01
    assert abs(replaced.sum().item() / n - (0.1 - 0.1 / (V - 5))) < 0.01
    assert not torch.isin(inputs[replaced], torch.tensor(SPECIAL)).any(), "random tokens are never special"
    assert torch.equal(inputs[~chosen], ids[~chosen])


def test_mask_is_reproducible_and_dynamic():
    ids = torch.randint(5, 99, (3, 7 * 13))
    a = train.mask_tokens(ids, mask_id=4, vocab_size=99, special_ids=SPECIAL, generator=torch.Generator().manual_seed(1))
    b = train.mask_tokens(ids, mask_id=4, vocab_size=99, special_ids=SPECIAL, generator=torch.Generator().manual_seed(1))
    c = train.mask_tokens(ids, mask_id=4, vocab_size=99, special_ids=SPECIAL, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_whole_word_masking_takes_all_pieces():
    V = 50
    word_starts = torch.zeros(V, dtype=torch.bool)
    word_starts[5:30] = True                     # ids 5..29 start words, 30..49 continue them
    g = torch.Generator().manual_seed(0)
    ids = torch.where(torch.rand(200, 60, generator=g) < 0.5, torch.randint(5, 30, (200, 60), generator=g),
                      torch.randint(30, V, (200, 60), generator=g))
    ids[:, 0] = 0
    _, labels = train.mask_tokens(ids, mask_id=4, vocab_size=V, special_ids=SPECIAL, generator=g,
                                  word_starts=word_starts)
    chosen = labels != -100
    # a continuation is chosen exactly when the piece before it (same word) is chosen
    cont = ~word_starts[ids]
    cont[:, :2] = False  # position 0 is <s>; a piece right after a special token starts its own word
    assert torch.equal(chosen[:, 1:][cont[:, 1:]], chosen[:, :-1][cont[:, 1:]])
    assert 0.12 < chosen[:, 1:].float().mean().item() < 0.18


def test_span_masking_statistics():
    """SpanBERT's span masking on a large batch: span lengths from the clipped geometric distribution
    (mean 3.8 at p = 0.2, none above 10), the 15% budget per row, whole words, no special token, and
    80/10/10 drawn per span."""
    g = torch.Generator().manual_seed(0)
    lengths = train.span_lengths(100_000, g)
    assert lengths.min() == 1 and lengths.max() == 10 and abs(lengths.float().mean().item() - 3.8) < 0.05
    V = 99
    word_starts = torch.zeros(V, dtype=torch.bool)
    word_starts[5:60] = True  # ids 5..59 start words, 60..98 continue them
    ids = torch.where(torch.rand(200, 64, generator=g) < 0.6, torch.randint(5, 60, (200, 64), generator=g),
                      torch.randint(60, V, (200, 64), generator=g))
    ids[:, 0], ids[:40, 50:] = 0, 1  # <s>, padding
    inputs, labels = train.mask_tokens(ids, mask_id=4, vocab_size=V, special_ids=SPECIAL, generator=g,
                                       word_starts=word_starts, spans=True)
    chosen, real = labels != -100, ids >= 5
    assert not (chosen & ~real).any()
    budget = torch.round(0.15 * real.sum(1).float())
    assert ((chosen.sum(1) - budget) >= 0).all() and ((chosen.sum(1) - budget) < 10).all()  # a word's overshoot
    cont = ~word_starts[ids] & real  # a continuation piece (padding is not one)
    cont[:, :2] = False
    assert torch.equal(chosen[:, 1:][cont[:, 1:]], chosen[:, :-1][cont[:, 1:]]), "whole words"
    runs = [len(r) for row in chosen.tolist() for r in "".join("x" if c else " " for c in row).split()]
    assert sum(runs) / len(runs) > 2.5, "contiguous spans, not scattered tokens"
    masked = (inputs[chosen] == 4).float().mean().item()
    assert 0.74 < masked < 0.86, masked
    plain_inputs, plain_labels = train.mask_spans(ids, mask_id=4, vocab_size=V, special_ids=SPECIAL,
                                                  generator=torch.Generator().manual_seed(1))
    assert ((plain_labels != -100).sum(1) == budget).all(), "without word starts the budget is exact"


def test_word_start_flags_follow_the_tokenizer(tok):
    flags = train.tokenizer_info(tok, train.Settings(whole_word=True))["word_starts"]
    assert flags.shape == (len(tok),)
    for i in range(len(tok)):  # byte-level BPE: a word starts with the space marker; specials stand alone
        assert bool(flags[i]) == (tok.id_to_token(i).startswith("\u0120") or i in tok.special_ids), i
    ids = tok.encode("Tom cooked dinner")
    assert [bool(flags[i]) for i in ids].count(True) >= 2  # " cooked" and " dinner" start words


# ---------------------------------------------------------------- data
def test_full_sentences_packing(tok, corpus):
    docs = train.read_documents(corpus)[:20]
    ids, offsets = train.tokenize_documents(docs, tok)
    assert ids.dtype == np.uint16
    d = train.pack_full_sentences(ids, offsets, 13, tok.bos_id, tok.eos_id, tok.pad_id)
    x, m = d["input_ids"], d["attention_mask"]
    assert x.shape[1] == 13 and (x[:, 0] == tok.bos_id).all()
    # the content, in order, is every document followed by a separator
    body = [t for row, mm in zip(x.tolist(), m.tolist()) for t in row[1:sum(mm) - 1]]
    expect = [t for i in range(len(docs)) for t in [*ids[offsets[i]:offsets[i + 1]].tolist(), tok.eos_id]]
    assert body == expect
    assert (m[:-1] == 1).all(), "only the last sequence is padded"


def test_sentence_pair_packing(tok, corpus):
    docs = train.read_documents(corpus)
    ids, offsets = train.tokenize_documents(docs, tok)
    d = train.pack_sentence_pairs(ids, offsets, 23, tok.cls_id, tok.sep_id, tok.pad_id, seed=0)
    x, seg, lab = d["input_ids"], d["token_type_ids"], d["next_sentence_label"]
    assert (x[:, 0] == tok.cls_id).all()
    assert ((x == tok.sep_id).sum(1) == 2).all()
    assert 0.35 < lab.float().mean().item() < 0.65
    first_sep = (x == tok.sep_id).int().argmax(1)
    for i in range(5):
        assert (seg[i, :first_sep[i] + 1] == 0).all() and seg[i, first_sep[i] + 1] == 1


def test_tokenization_is_cached(tok, corpus, tmp_path):
    docs = train.read_documents(corpus)
    a = train.tokenize_documents(docs, tok, tmp_path, "k")
    assert len(list(tmp_path.glob("tokens-*.npz"))) == 1

    class Boom:
        def __len__(self):
            return len(tok)

        def encode(self, text):
            raise AssertionError("should have come from the cache")
        encode_batch = encode
    b = train.tokenize_documents(docs, Boom(), tmp_path, "k")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_bad_corpora(tmp_path, tok):
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="contains no text"):
        train.read_documents(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError, match="not found"):
        train.read_documents(tmp_path / "nope.txt")
    (tmp_path / "one.txt").write_text("just one line\n")
    with pytest.raises(ValueError, match="need >= 2"):
        train.build_datasets(train.Settings(), tok, tmp_path / "one.txt")


def test_blank_line_documents(tmp_path):
    (tmp_path / "b.txt").write_text("first line\nstill first\n\nsecond doc\n\n\nthird\n")
    assert train.read_documents(tmp_path / "b.txt", "blank") == ["first line still first", "second doc", "third"]


def test_batch_indices_walk_epochs():
    seen = torch.cat([train.batch_indices(10, s, 4, seed=3) for s in range(5)])  # 2 epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:20].tolist()) == list(range(10))
    assert torch.equal(train.batch_indices(10, 3, 4, seed=3), seen[12:16])


# ---------------------------------------------------------------- the loop
def tiny_settings(**kw):
    s = train.parse_args(TINY + ["--dropout=0.0", "--eval_every=0", "--ckpt_every=0"])
    return train.dataclasses.replace(s, **kw)


def tiny_model(tok, s):
    torch.manual_seed(0)
    return train.bert.BertForMaskedLM(train.bert.fresh_config(s, tok))


def test_gradient_accumulation_equals_one_big_batch(tok, corpus, tmp_path):
    s = tiny_settings(steps=4)
    tr, va = train.build_datasets(s, tok, corpus)
    info = train.tokenizer_info(tok, s)
    a = tiny_model(tok, s)
    train.train_loop(a, tr, va, out_dir=tmp_path / "a", steps=4, tok_info=info,
                     s=train.dataclasses.replace(s, batch_size=6, grad_accum=1))
    b = tiny_model(tok, s)
    train.train_loop(b, tr, va, out_dir=tmp_path / "b", steps=4, tok_info=info,
                     s=train.dataclasses.replace(s, batch_size=2, grad_accum=3))
    for (n, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=2e-6), n


def test_config_mismatch_is_named(tok, corpus, tmp_path):
    s = tiny_settings(steps=2)
    tr, va = train.build_datasets(s, tok, corpus)
    info = train.tokenizer_info(tok, s)
    train.train_loop(tiny_model(tok, s), tr, va, out_dir=tmp_path, steps=2, tok_info=info, s=s)
    with pytest.raises(runs.CheckpointMismatchError, match=r"lr: checkpoint 0.001 vs now 0.1"):
        train.train_loop(tiny_model(tok, s), tr, va, out_dir=tmp_path, steps=2, tok_info=info,
                         s=train.dataclasses.replace(s, lr=0.1))


Out = namedtuple("Out", "loss logits")


class NaNAt(torch.nn.Module):
    """Maps a batch to a loss; the loss turns NaN at a chosen step."""
    def __init__(self, bad_step, vocab):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 8)
        self.out = torch.nn.Linear(8, vocab)
        self.calls, self.bad_step = 0, bad_step

    def forward(self, input_ids, attention_mask=None, labels=None, **_):
        logits = self.out(self.emb(input_ids))[labels != -100]
        loss = torch.nn.functional.cross_entropy(logits, labels[labels != -100])
        if self.training:
            self.calls += 1
            if self.calls == self.bad_step:
                loss = loss * float("nan")
        return Out(loss, logits)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tok, corpus, tmp_path):
    s = tiny_settings(steps=10, ckpt_every=2)
    tr, va = train.build_datasets(s, tok, corpus)
    with pytest.raises(train.NonFiniteLossError, match=r"at step 5 .*last good checkpoint \(step 4\)"):
        train.train_loop(NaNAt(5, len(tok)), tr, va, out_dir=tmp_path, steps=10,
                         tok_info=train.tokenizer_info(tok, s), s=s)
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_generic_module_trains_and_logs(tok, corpus, tmp_path):
    s = tiny_settings(steps=6, eval_every=3)
    tr, va = train.build_datasets(s, tok, corpus)
    evals = train.train_loop(NaNAt(-1, len(tok)), tr, va, out_dir=tmp_path, steps=6,
                             tok_info=train.tokenizer_info(tok, s), s=s)
    assert [e["step"] for e in evals] == [3, 6]
    log = [json.loads(x) for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "final.pt").exists() and not (tmp_path / "ckpt.pt").exists()


class Scripted(torch.nn.Module):
    """Its held-out loss follows `script` (one value per training step taken); its one weight moves
    at every training step, so the weights of each step are told apart."""
    def __init__(self, script, vocab):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.script, self.vocab, self.steps, self.seen = script, vocab, 0, []

    def forward(self, input_ids, attention_mask=None, labels=None, **_):
        target = labels[labels != -100]
        if self.training:
            self.steps += 1
            self.seen.append(self.w.item())  # the weight before this step
            return Out(self.w.sum(), None)
        loss = self.script[self.steps - 1]  # cross-entropy exactly `loss`: right class 0, the others c
        c = math.log((math.exp(loss) - 1) / (self.vocab - 1))
        logits = torch.full((len(target), self.vocab), c)
        logits[torch.arange(len(target)), target] = 0.0
        return Out(None, logits)


def test_early_stopping_keeps_the_best_weights_and_resumes_as_finished(tok, corpus, tmp_path):
    script = [5.0, 4.0, 4.5, 3.5, 3.6, 3.5, 3.8, 3.0, 2.0, 1.0]
    s = tiny_settings(steps=10, eval_every=1, patience=3, lr=0.1)
    tr, va = train.build_datasets(s, tok, corpus)
    info = train.tokenizer_info(tok, s)
    m = Scripted(script, len(tok))
    evals = train.train_loop(m, tr, va, out_dir=tmp_path, steps=10, tok_info=info, s=s)
    # best 3.5 at step 4 (a tie at step 6 is no improvement); steps 5, 6, 7 do not beat it: stop at 7
    assert [e["step"] for e in evals] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["loss"] for e in evals] == pytest.approx(script[:7], abs=1e-5)
    assert m.steps == 7 and m.w.item() == m.seen[4] != m.seen[7 - 1]  # the weights after step 4
    assert (tmp_path / "final.pt").exists() and not (tmp_path / "best.pt").exists()
    again = Scripted(script, len(tok))  # a rerun finds final.pt: the kept weights, nothing trained
    assert train.train_loop(again, tr, va, out_dir=tmp_path, steps=10, tok_info=info, s=s) == evals
    assert again.steps == 0 and again.w.item() == m.w.item()
    full = Scripted(script, len(tok))  # without patience every step runs and the last weights stay
    train.train_loop(full, tr, va, out_dir=tmp_path / "full", steps=10, tok_info=info,
                     s=train.dataclasses.replace(s, patience=0))
    assert full.steps == 10 and full.w.item() != m.w.item()
    with pytest.raises(ValueError, match="patience must be >= 0"):
        train.train_loop(full, tr, va, out_dir=tmp_path / "bad", steps=2, tok_info=info,
                         s=train.dataclasses.replace(s, patience=-1))


def _cmd(out_dir, corpus, steps):
    return [sys.executable, str(ROOT / "train.py"), "--task=mlm", f"--corpus={corpus}", f"--out_dir={out_dir}",
            f"--steps={steps}", "--ckpt_every=7", "--eval_every=50", *TINY]


def _same_as_never_stopped(ref, out, steps):
    """The stopped-and-rerun run `out` ended with the reference's weights, and logged each step once."""
    a = torch.load(ref / "run" / "final.pt", weights_only=True)["model"]
    b = torch.load(out / "run" / "final.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    log = (out / "run" / "log.jsonl").read_text().splitlines()
    steps_logged = [json.loads(x)["step"] for x in log if "loss" in json.loads(x)]
    assert steps_logged == list(range(1, steps + 1)), "the log has each step exactly once"


def test_sigkill_and_rerun_is_bit_identical(corpus, tmp_path):
    steps = 400
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the uninterrupted reference runs beside the one that is killed (one thread each, two cores)
    ref_err = open(tmp_path / "ref.stderr", "w")  # (a file: a pipe nobody reads could fill and block it)
    ref = subprocess.Popen(_cmd(tmp_path / "ref", corpus, steps), stdout=subprocess.DEVNULL, stderr=ref_err, env=env)
    out = tmp_path / "killed"
    p = subprocess.Popen(_cmd(out, corpus, steps), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    log = out / "run" / "log.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:  # kill somewhere in the middle, after a checkpoint exists
        if (out / "run" / "ckpt.pt").exists() and log.exists() and log.read_text().count("\n") > 100:
            break
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "run" / "final.pt").exists(), "the run finished before it could be killed"
    again = subprocess.run(_cmd(out, corpus, steps), capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming" in again.stdout
    ref_err.close()
    assert ref.wait() == 0, (tmp_path / "ref.stderr").read_text()[-2000:]
    _same_as_never_stopped(tmp_path / "ref", out, steps)


def test_ctrl_c_and_sigterm_stop_after_a_checkpoint_and_resume_bit_identical(corpus, tmp_path):
    """SIGINT (Ctrl-C) and then SIGTERM stop a run: the step in flight finishes, a checkpoint of it is
    written, the lock is released, one line says so, the exit status is the shell's (130, 143); the rerun
    continues from there and ends bit-identical to a run that was never stopped."""
    steps = 300
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref_err = open(tmp_path / "ref.stderr", "w")
    ref = subprocess.Popen(_cmd(tmp_path / "ref", corpus, steps), stdout=subprocess.DEVNULL, stderr=ref_err, env=env)
    out = tmp_path / "stopped"
    log = out / "run" / "log.jsonl"
    for sig, status, after in ((signal.SIGINT, 130, 40), (signal.SIGTERM, 143, 120)):
        err = open(tmp_path / f"{sig}.stderr", "w")
        p = subprocess.Popen(_cmd(out, corpus, steps), stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.time() + 60
        while time.time() < deadline and not (log.exists() and log.read_text().count("\n") > after):
            time.sleep(0.01)
        p.send_signal(sig)
        assert p.wait() == status
        err.close()
        last = (tmp_path / f"{sig}.stderr").read_text().strip().splitlines()[-1]
        assert last.startswith("stopped at step ") and "rerun the same command to continue" in last, last
        stopped_at = int(last.split()[3])
        assert torch.load(out / "run" / "ckpt.pt", weights_only=True)["step"] == stopped_at < steps
        assert not (out / ".lock").exists()
    again = subprocess.run(_cmd(out, corpus, steps), capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-2000:]
    ref_err.close()
    assert ref.wait() == 0, (tmp_path / "ref.stderr").read_text()[-2000:]
    _same_as_never_stopped(tmp_path / "ref", out, steps)


def test_a_stop_asked_in_the_last_step_is_not_lost(tok, corpus, tmp_path, monkeypatch):
    """Ctrl-C during a run's last step: the run finishes (final.pt), and the command still stops
    (runs.Interrupted), so XPT's phase 2 (or a --more_steps segment) does not start after it."""
    s = tiny_settings(steps=3, eval_every=0)
    tr, va = train.build_datasets(s, tok, corpus)
    lr_at = train.lr_at

    def signalling(step, total, warmup):  # called once per step, inside the signal handlers' block
        if step == total - 1:
            os.kill(os.getpid(), signal.SIGINT)
        return lr_at(step, total, warmup)
    monkeypatch.setattr(train, "lr_at", signalling)
    with pytest.raises(runs.Interrupted) as stopped:
        train.train_loop(tiny_model(tok, s), tr, va, out_dir=tmp_path, steps=3, tok_info=train.tokenizer_info(tok, s),
                         s=s)
    assert stopped.value.exit_code == 130 and (tmp_path / "final.pt").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # (the handlers are put back)


def test_a_finished_run_says_so_and_more_steps_continue_it(corpus, tmp_path, capsys):
    """A run ends with its summary (loss, floor, verdict with remedies, where things are); a rerun says
    "already finished"; --more_steps=N goes on from its final weights for N more steps (a segment of its
    own, the data stream continuing), and a rerun of that command is finished too."""
    argv = _cmd(tmp_path, corpus, 3)[2:]
    for done in ("", "already finished: "):
        train.main(argv)
        lines = capsys.readouterr().out.splitlines()[-6:]
        assert lines[0] == f"  model and tokenizer (HF format): {tmp_path / 'model'}"
        assert lines[1] == f"  log: {tmp_path / 'run' / 'log.jsonl'}"
        assert lines[2].startswith(f"mlm: {done}held-out loss ") and "unigram floor" in lines[2], lines
        assert "learned context: no" in lines[2]  # (3 steps: nothing learned, and it says so, with remedies)
        assert lines[3].startswith("  still at the unigram plateau") and "--more_steps" in lines[5]
    first = torch.load(tmp_path / "run" / "final.pt", weights_only=True)["model"]
    train.main(argv + ["--more_steps=4"])
    out = capsys.readouterr().out
    assert "resuming" not in out and "mlm +4: held-out loss" in out
    assert [r["step"] for r in runs.read_log(tmp_path / "run+4" / "log.jsonl") if "loss" in r] == [4, 5, 6, 7]
    after = torch.load(tmp_path / "run+4" / "final.pt", weights_only=True)["model"]
    assert any(not torch.equal(first[k], after[k]) for k in first)
    assert any(x.startswith("  log: ") and str(tmp_path / "run+4" / "log.jsonl") in x for x in out.splitlines())
    train.main(argv + ["--more_steps=4"])
    assert "mlm: already finished: held-out loss" in capsys.readouterr().out


def test_ddp_with_accumulation_matches_one_process(corpus, tmp_path):
    """Two processes x 2 accumulated micro-batches of 3 rows = one process with batches of 12: the same
    loss, the same gradient norm (a missing `* world` in the loss weighting halves it; Adam would hide
    that in the weights) and the same final weights (rows read twice or skipped would not). (no_sync
    only saves communication: averaging after every micro-batch gives the same sum, so no number shows it.)"""
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed unavailable")
    common = ["--dropout=0.0", "--steps=6", "--ckpt_every=0", "--eval_every=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(_cmd(tmp_path / "one", corpus, 6) + common + ["--batch_size=12"],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                          *_cmd(tmp_path / "two", corpus, 6)[1:], *common, "--batch_size=3", "--grad_accum=2"],
                         capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("training sequences of") == 1, "rank 0 alone prints the run's header"

    def logged(d, key):
        return [r[key] for r in runs.read_log(d / "run" / "log.jsonl") if key in r]
    for key in ("loss", "grad_norm"):
        a, b = logged(tmp_path / "one", key), logged(tmp_path / "two", key)
        assert len(a) == len(b) == 6 and np.allclose(a, b, rtol=1e-4), (key, a, b)
    wa = torch.load(tmp_path / "one" / "run" / "final.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "two" / "run" / "final.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), (k, (wa[k] - wb[k]).abs().max())


class Recorder(torch.nn.Module):
    """Records the (masked inputs, labels) of every training step; its loss trains one weight (held
    out, it predicts uniformly)."""
    def __init__(self, vocab):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.seen, self.evaluated = vocab, [], []

    def forward(self, input_ids, attention_mask=None, labels=None, **_):
        if not self.training:
            self.evaluated.append((input_ids.clone(), labels.clone()))
            return Out(None, torch.zeros(int((labels != -100).sum()), self.vocab))
        self.seen.append((input_ids.clone(), labels.clone()))
        return Out(self.w.sum(), None)


def test_whole_word_masking_through_the_loop(tok, corpus, tmp_path):
    """--whole_word=true end to end: the loop masks every piece of a chosen word, never a special token,
    and replaces the chosen pieces 80/10/10 ([MASK] / random / unchanged); held out, token by token, which
    its checkpoint records (one of before, without it, is a named mismatch)."""
    s = tiny_settings(whole_word=True, mlm_probability=0.3, batch_size=8, eval_every=40)
    tr, va = train.build_datasets(s, tok, corpus)
    info = train.tokenizer_info(tok, s)
    rec = Recorder(len(tok))
    train.train_loop(rec, tr, va, out_dir=tmp_path, steps=40, tok_info=info, s=s)
    # held out, it is scored token by token like every masked LM (the unigram floor's task): a piece is
    # masked without the rest of its word (a run of [MASK]s over a word would say where words begin)
    held = torch.cat([torch.where(lab != -100, lab, i) for i, lab in rec.evaluated])
    masked = torch.cat([lab != -100 for _, lab in rec.evaluated])
    piece = ~info["word_starts"][held[:, 1:]] & ~torch.isin(held[:, :-1], torch.tensor(tok.special_ids))
    assert (masked[:, 1:] & piece & ~masked[:, :-1]).any()
    inputs = torch.cat([i for i, _ in rec.seen])
    labels = torch.cat([lab for _, lab in rec.seen])
    original = torch.where(labels != -100, labels, inputs)
    chosen = labels != -100
    special = torch.isin(original, torch.tensor(tok.special_ids))
    assert not (chosen & special).any()
    starts = info["word_starts"][original]
    cont = ~starts[:, 1:] & ~special[:, :-1]  # a continuation piece right after a piece of its word
    assert cont.any() and torch.equal(chosen[:, 1:][cont], chosen[:, :-1][cont])
    got = inputs[chosen]
    frac_mask = (got == tok.mask_id).float().mean().item()
    frac_same = (got == labels[chosen]).float().mean().item()
    assert 0.74 < frac_mask < 0.86 and 0.05 < frac_same < 0.16, (frac_mask, frac_same)
    assert 0.2 < chosen[~special].float().mean().item() < 0.4
    # its checkpoint says so: a whole-word run of before (held out, whole words at once) is another
    # configuration, named, and is not resumed as if it were this one
    state = torch.load(tmp_path / "final.pt", weights_only=True)
    assert state["config"]["eval"] == "mask-only, token by token"
    torch.save({**state, "config": {**state["config"], "eval": "mask-only"}}, tmp_path / "final.pt")
    with pytest.raises(runs.CheckpointMismatchError, match="eval: checkpoint 'mask-only'"):
        train.train_loop(Recorder(len(tok)), tr, va, out_dir=tmp_path, steps=40, tok_info=info, s=s)


def test_every_run_is_evaluated_on_the_same_masked_inputs(tok, corpus, tmp_path):
    """What makes XPT vs scratch fair: two runs with other seeds (other training masks, other data order)
    are scored on exactly the same held-out inputs and targets, at every evaluation."""
    s = tiny_settings(eval_every=2)
    tr, va = train.build_datasets(s, tok, corpus)
    info = train.tokenizer_info(tok, s)
    a, b = Recorder(len(tok)), Recorder(len(tok))
    train.train_loop(a, tr, va, out_dir=tmp_path / "a", steps=4, tok_info=info, s=s)
    train.train_loop(b, tr, va, out_dir=tmp_path / "b", steps=4, tok_info=info, s=train.dataclasses.replace(s, seed=7))
    assert not torch.equal(a.seen[0][0], b.seen[0][0]), "the training inputs differ"
    assert len(a.evaluated) == len(b.evaluated) > 0
    for (ia, la), (ib, lb) in zip(a.evaluated, b.evaluated):
        assert torch.equal(ia, ib) and torch.equal(la, lb)
    n = len(a.evaluated) // 2  # the evaluations at step 2 and at step 4 are the same task too
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a.evaluated[:n], a.evaluated[n:]))


def test_a_run_with_step_offset_continues_the_data_and_masks(tok, corpus, tmp_path):
    """train_loop(step_offset=3) sees exactly the rows and masks of steps 4..6 of one long run (what
    XPT's phase 2 relies on), not a replay of steps 1..3."""
    s = tiny_settings(mlm_probability=0.3)
    tr, va = train.build_datasets(s, tok, corpus)
    info = train.tokenizer_info(tok, s)
    whole, later = Recorder(len(tok)), Recorder(len(tok))
    train.train_loop(whole, tr, va, out_dir=tmp_path / "whole", steps=6, tok_info=info, s=s)
    train.train_loop(later, tr, va, out_dir=tmp_path / "later", steps=3, tok_info=info, s=s, step_offset=3)
    assert len(whole.seen) == 6 and len(later.seen) == 3
    for (a_in, a_lab), (b_in, b_lab) in zip(whole.seen[3:], later.seen):
        assert torch.equal(a_in, b_in) and torch.equal(a_lab, b_lab)
    assert not torch.equal(whole.seen[0][0], later.seen[0][0])


def test_xpt_phases_continue_the_data_and_resume_exactly_between_phases(tok, corpus, tmp_path, monkeypatch):
    """Phase 2 continues the data stream where phase 1 stopped (not a replay of its batches), and a run
    killed between the phases (phase 1 finished, phase 2 not started) ends bit-identical."""
    s = tiny_settings(phase1_steps=3, phase2_steps=3, eval_every=0)
    tr, va = train.build_datasets(s, tok, corpus)
    src_model = tiny_model(tok, s)
    src_model.save_pretrained(tmp_path / "src")
    offsets, loop = [], train.train_loop
    monkeypatch.setattr(train, "train_loop", lambda *a, **kw: offsets.append(kw["step_offset"]) or loop(*a, **kw))
    _, evals = train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "a")
    assert offsets == [0, 3], "phase 2 starts where phase 1 stopped (see the step_offset test above)"
    monkeypatch.setattr(train, "train_loop", loop)
    assert [(e["phase"], e["step"]) for e in evals] == [(1, 3), (2, 6)]
    log2 = runs.read_log(tmp_path / "a" / "phase2" / "log.jsonl")
    assert [r["step"] for r in log2 if "loss" in r] == [4, 5, 6]
    train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "b")
    import shutil
    shutil.rmtree(tmp_path / "b" / "phase2")          # "killed" right after phase 1 finished
    torch.manual_seed(12345)                           # a process with another RNG history
    torch.rand(100)
    m, _ = train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "b")
    a = torch.load(tmp_path / "a" / "phase2" / "final.pt", weights_only=True)["model"]
    for k, v in m.state_dict().items():
        assert torch.equal(a[k], v), k


def test_phase_1_leaves_every_reused_tensor_bit_identical_and_phase_2_moves_them(tok, corpus, tmp_path):
    """Through run_xpt's real loop (AdamW, weight decay, clipping): after phase 1 every tensor copied
    from the source (encoder layers, positions, segments, every LayerNorm, the MLM transform) equals the
    source's bit for bit; after phase 2 none does."""
    s = tiny_settings(phase1_steps=3, phase2_steps=3, eval_every=0, weight_decay=0.1)
    tr, va = train.build_datasets(s, tok, corpus)
    src = tiny_model(tok, s)
    src.save_pretrained(tmp_path / "src")
    model, _ = train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "x")
    p1 = torch.load(tmp_path / "x" / "phase1" / "final.pt", weights_only=True)["model"]
    source = src.state_dict()

    def source_name(n):  # layer i of the xpt model is layer i - itl_layers of the source
        if n.startswith("bert.layers."):
            i = int(n.split(".")[2])
            return n.replace(f"layers.{i}.", f"layers.{i - s.itl_layers}.", 1)
        return n
    reused = sorted(model.xpt["reused"])
    kinds = {"position_embeddings", "token_type_embeddings", "embeddings.layer_norm", "attn_norm", "ffn_norm",
             "query", "head.dense", "head.layer_norm"}
    assert all(any(k in n for n in reused) for k in kinds), reused
    for n in reused:
        assert torch.equal(p1[n], source[source_name(n)]), n
    final = model.state_dict()
    moved = [n for n in reused if not torch.equal(final[n], source[source_name(n)])]
    assert moved == reused


def test_a_run_stopped_inside_xpt_phase_2_with_accumulation_resumes_bit_identical(tok, corpus, tmp_path,
                                                                                     monkeypatch):
    """Stopped in the middle of phase 2 (after its step-2 checkpoint, inside step 4), with gradient
    accumulation and dropout on, the rerun ends with the same weights as a run that never stopped."""
    s = tiny_settings(phase1_steps=3, phase2_steps=6, eval_every=0, ckpt_every=2, grad_accum=2, batch_size=3)
    tr, va = train.build_datasets(s, tok, corpus)
    tiny_model(tok, train.dataclasses.replace(s, dropout=0.1)).save_pretrained(tmp_path / "src")
    whole, _ = train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "whole")

    with stopped_in_step(monkeypatch, 3 + 4):  # (a kill inside that step)
        train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "stopped")
    assert (tmp_path / "stopped" / "phase2" / "ckpt.pt").exists()
    assert not (tmp_path / "stopped" / "phase2" / "final.pt").exists()
    torch.manual_seed(999)  # another RNG history: the checkpoint's RNG state must be what counts
    resumed, _ = train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "stopped")
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_learning_rate_warms_up_decays_and_restarts_in_each_phase(tok, corpus, tmp_path):
    # lr_at: linear warm-up over 4 steps to the peak, then linear decay to 0 at step 10
    assert [train.lr_at(i, 10, 4) for i in range(10)] == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6])
    # through run_xpt: each phase has its own schedule (warm-up 34% of its steps: 1 of 4, then 2 of 6)
    s = tiny_settings(phase1_steps=4, phase2_steps=6, warmup=0.34, lr=1e-2)
    tr, va = train.build_datasets(s, tok, corpus)
    tiny_model(tok, s).save_pretrained(tmp_path / "src")
    train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "x")
    logged = [r["lr"] for phase in ("phase1", "phase2")
              for r in runs.read_log(tmp_path / "x" / phase / "log.jsonl") if "loss" in r]
    assert logged == pytest.approx([1e-2 * x for x in [1, 1, 2 / 3, 1 / 3, 1 / 2, 1, 1, 3 / 4, 2 / 4, 1 / 4]])


def test_init_shared_through_run_xpt_copies_the_rows_of_tokens_both_vocabularies_spell_alike(tok, corpus, tmp_path):
    """--init_shared: run_xpt reads the source's own tokenizer from its folder and starts every target
    token spelled the same (same role) at the source's vector; the others start fresh."""
    s = tiny_settings(phase1_steps=0, phase2_steps=0, init_shared=True)  # no step: the starting point
    src = tiny_model(tok, s)
    src.save_pretrained(tmp_path / "src")
    tok.save(tmp_path / "src")
    docs = train.read_documents(corpus)
    target = BPETokenizer.train(docs[::3] + ["Mina cooked quietly at dawn."], 285)
    tr, va = train.build_datasets(s, target, corpus)
    model, _ = train.run_xpt(s, tmp_path / "src", target, tr, va, tmp_path / "x")
    w, sw = model.bert.embeddings.word_embeddings.weight, src.bert.embeddings.word_embeddings.weight
    shared = {j: tok.token_to_id(target.id_to_token(j)) for j in range(len(target))
              if j not in target.special_ids and tok.token_to_id(target.id_to_token(j)) is not None}
    assert 50 < len(shared) < len(target) - len(target.special_ids), len(shared)  # some shared, some not
    for j, i in shared.items():
        assert torch.equal(w[j], sw[i]), target.id_to_token(j)
    fresh = [j for j in range(len(target)) if j not in shared and j not in target.special_ids]
    assert fresh and not any(torch.equal(w[j], sw[min(j, len(sw) - 1)]) for j in fresh)
    off, _ = train.run_xpt(train.dataclasses.replace(s, init_shared=False), tmp_path / "src", target, tr, va,
                           tmp_path / "y")
    assert not torch.equal(off.bert.embeddings.word_embeddings.weight[list(shared)], sw[list(shared.values())])


def test_a_checkpoint_from_before_early_stopping_still_resumes(tok, corpus, tmp_path, monkeypatch):
    """Checkpoints written before `patience` joined the run config (their config lacks the key) resume;
    a real difference is still refused."""
    s = tiny_settings(steps=6, ckpt_every=2)
    tr, va = train.build_datasets(s, tok, corpus)
    info = train.tokenizer_info(tok, s)
    whole = tiny_model(tok, s)
    train.train_loop(whole, tr, va, out_dir=tmp_path / "whole", steps=6, tok_info=info, s=s)
    with stopped_in_step(monkeypatch, 4):  # (a kill inside that step)
        train.train_loop(tiny_model(tok, s), tr, va, out_dir=tmp_path / "old", steps=6, tok_info=info, s=s)
    ckpt = tmp_path / "old" / "ckpt.pt"
    state = torch.load(ckpt, weights_only=True)
    del state["config"]["patience"]  # as written before the key existed
    torch.save(state, ckpt)
    resumed = tiny_model(tok, s)
    train.train_loop(resumed, tr, va, out_dir=tmp_path / "old", steps=6, tok_info=info, s=s)
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert runs.config_differences({"lr": 1.0}, {"lr": 2.0, "patience": 0}) == ["lr: checkpoint 1.0 vs now 2.0"]
    assert runs.config_differences({}, {"patience": 3}) == ["patience: checkpoint 0 vs now 3"]


def test_electra_objective_trains_saves_and_resumes_bit_identical(tok, corpus, tmp_path, monkeypatch, capsys):
    """--objective=electra through the same loop: the generator and the discriminator share their
    embedding tables, evaluation reports the discriminator on replaced and original tokens, a run
    stopped in the middle (with accumulation) resumes to the same weights (the generator's samples
    come from the checkpointed RNG), and the discriminator is saved as an ELECTRA checkpoint."""
    s = tiny_settings(objective="electra", steps=6, ckpt_every=2, eval_every=3, grad_accum=2, batch_size=3,
                      hidden_size=32, num_heads=4, generator_size=0.5)
    whole, _, evals = train.run_mlm(s, out_dir=tmp_path / "whole", corpus=corpus, tok=tok)
    g, d = whole.generator, whole.discriminator
    assert g.bert.embeddings.word_embeddings is d.bert.embeddings.word_embeddings
    assert g.config.hidden_size == 16 and d.config.hidden_size == 32 and g.bert.embeddings.projection is not None
    assert {"disc_loss", "disc_acc_replaced", "disc_acc_original", "disc_precision", "disc_auc"} <= set(evals[-1])
    assert 0 < evals[-1]["replaced_share"] < 0.3 and 0 <= evals[-1]["disc_auc"] <= 1
    assert f"AUC {evals[-1]['disc_auc']:.3f} (a coin: 0.5)" in capsys.readouterr().out  # (the run's summary)
    with stopped_in_step(monkeypatch, 4):  # (a kill inside that step)
        train.run_mlm(s, out_dir=tmp_path / "stopped", corpus=corpus, tok=tok)
    torch.manual_seed(4321)
    resumed, _, again = train.run_mlm(s, out_dir=tmp_path / "stopped", corpus=corpus, tok=tok)
    for (n, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), n
    assert again == evals
    saved = bert.ElectraForPreTraining.from_pretrained(tmp_path / "whole" / "model")
    assert saved.config.model_type == "electra" and torch.equal(saved.rtd.prediction.weight, d.rtd.prediction.weight)
    with pytest.raises(ValueError, match="packing=full"):
        train.check_settings(train.dataclasses.replace(s, packing="nsp"))


def test_every_evaluation_says_where_it_stands_against_the_floor(tok, corpus, tmp_path, capsys):
    """Each evaluation prints (and logs) the held-out loss, the unigram floor, the difference and the
    verdict: a 4-step run sits at the plateau; the same line reads "learned context" below the floor."""
    s = tiny_settings(steps=4, eval_every=2)
    train.run_mlm(s, out_dir=tmp_path / "a", corpus=corpus, tok=tok)
    out = capsys.readouterr().out
    tr, va = train.build_datasets(s, tok, corpus)
    floor = train.floors(tok, tr, va)[0]
    assert "mlm step 2: held-out loss" in out and f"unigram floor {floor:.4f}" in out
    assert "still at the unigram plateau" in out.split("mlm step 2:")[1].splitlines()[0]
    logged = [json.loads(line) for line in (tmp_path / "a" / "run" / "log.jsonl").read_text().splitlines()]
    assert [e["floor"] for e in logged if "eval_loss" in e] == [floor, floor]
    train.train_loop(tiny_model(tok, s), tr, va, out_dir=tmp_path / "b", steps=2, tok_info=train.tokenizer_info(tok, s),
                     s=s, desc="below", floor=floor + 5)  # (a floor the loss is far below)
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("below step 2:")][0]
    assert " nat): learned context" in line and "unigram floor" in line and "(-" in line


@pytest.mark.parametrize("objective", ["plm", "t5"])
def test_xlnet_and_t5_train_in_the_same_loop_resume_and_load_in_hf(objective, tok, corpus, tmp_path, monkeypatch,
                                                                     capsys):
    """--objective=plm (xlnet.py) and t5 (t5.py) through the masked LM's loop: scored on their own
    held-out targets (the same ones in every evaluation) next to the unigram floor of those targets; a
    run stopped mid-way resumes to the same weights; the folder loads in transformers with no missing
    or unexpected keys, gives our logits, and its tokenizer gives our ids (T5: <extra_id_N> at HF's ids)."""
    s = tiny_settings(objective=objective, steps=6, ckpt_every=2, eval_every=3)
    whole, _, evals = train.run_mlm(s, out_dir=tmp_path / "whole", corpus=corpus, tok=tok)
    out = capsys.readouterr().out
    assert evals[-1]["scored"] and evals[-1]["tokens"] > 20 and "on its own targets, unigram floor" in out
    with stopped_in_step(monkeypatch, 4):
        train.run_mlm(s, out_dir=tmp_path / "stopped", corpus=corpus, tok=tok)
    resumed, _, again = train.run_mlm(s, out_dir=tmp_path / "stopped", corpus=corpus, tok=tok)
    for (n, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), n
    assert again == evals
    # the floor: the unigram loss of exactly the targets evaluate scores (their count is its token count)
    info = train.tokenizer_info(tok, s)
    tr, va = train.build_datasets(s, tok, corpus)
    make = train.make_inputs(s, info)
    r = train.evaluate(whole, va, mask_id=tok.mask_id, vocab_size=len(tok), special_ids=tok.special_ids,
                       batch_size=64, device="cpu", make=make)
    assert (r["loss"], r["tokens"]) == (evals[-1]["loss"], evals[-1]["tokens"])  # (the same targets again)
    floor = train.task_floor(make, tr, va, len(tok), tok.special_ids)
    assert 2 < floor < math.log(len(tok)) + 1
    transformers = pytest.importorskip("transformers")
    cls = transformers.XLNetLMHeadModel if objective == "plm" else transformers.T5ForConditionalGeneration
    hf, loading = cls.from_pretrained(tmp_path / "whole" / "model", output_loading_info=True)
    assert not any(loading.values()), loading
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "whole" / "model")
    text = "The cat walked to the park."
    ids = torch.tensor([hf_tok(text)["input_ids"]])
    assert ids[0, 1:-1].tolist() == tok.encode(text)
    whole.eval()
    kw = {} if objective == "plm" else {"labels": ids}
    torch.testing.assert_close(hf(ids, **kw).logits, whole(ids, **kw).logits, atol=1e-5, rtol=1e-5)
    if objective == "t5":
        sentinels = hf_tok.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_1>", "<extra_id_99>"])
        assert sentinels == [whole.config.vocab_size - 1, whole.config.vocab_size - 2, len(tok)]
        ids = hf_tok("the <extra_id_0> park")["input_ids"]  # the sentinel takes its space, as in training
        assert hf_tok.convert_ids_to_tokens(ids[ids.index(whole.config.vocab_size - 1) - 1]) != "Ġ"


def test_the_objectives_batches_by_their_rules(tok, corpus):
    """make_inputs for XLNet: special tokens are never scored; for T5: each row's inputs and targets
    together give back its text (each sentinel in the inputs replaced by the span after it in the
    targets), sentinels from the top of the vocabulary, inputs padded with the pad id, targets with -100."""
    s = tiny_settings(objective="plm")
    tr, _ = train.build_datasets(s, tok, corpus)
    batch = {k: v[:5] for k, v in tr.items()}
    info = train.tokenizer_info(tok, s)
    g = torch.Generator().manual_seed(0)
    x = train.make_inputs(s, info)(dict(batch), g)
    scored = x["labels"][x["labels"] != -100]
    assert len(scored) > 5 and not set(scored.tolist()) & set(tok.special_ids)
    s = tiny_settings(objective="t5")
    x = train.make_inputs(s, info)(dict(batch), g)
    V = len(tok) + t5.N_SENTINELS
    for row, inp, keep, tgt in zip(batch["input_ids"], x["input_ids"], x["attention_mask"], x["labels"]):
        text = [t for t in row.tolist() if t not in tok.special_ids]
        inp, tgt = inp[keep.bool()].tolist(), tgt[tgt != -100].tolist()
        assert inp[-1] == tgt[-1] == tok.eos_id
        spans, cur = {}, None
        for t in tgt[:-1]:
            if t >= len(tok):
                cur = spans.setdefault(t, [])
            else:
                cur.append(t)
        rebuilt = [u for t in inp[:-1] for u in (spans[t] if t >= len(tok) else [t])]
        assert rebuilt == text and all(V - 1 - k in spans for k in range(len(spans)))
    assert (x["input_ids"][x["attention_mask"] == 0] == tok.pad_id).all()


@pytest.mark.parametrize("mean_span", [1.0, 3.0])
def test_t5_format_alone_is_not_below_its_floor(tok, corpus, mean_span):
    """T5's held-out loss and floor are over its span tokens, not its format: a model that knows the
    format perfectly (every sentinel and the end token, which are half the targets at mean span 1) and
    nothing of the context (the span tokens by their training frequencies) sits on the floor, however
    much probability it puts on a span ending (here nearly all: a span's end is random, no context tells
    it). Scored over all targets it would be nats below the floor; at span tokens among all ids, above."""
    s = tiny_settings(objective="t5", mean_span=mean_span, mlm_probability=0.4)
    info, (tr, va) = train.tokenizer_info(tok, s), train.build_datasets(s, tok, corpus)
    make, V = train.make_inputs(s, info), len(tok)
    g = torch.Generator().manual_seed(20210305)  # (the training targets the floor counts, as task_floor)
    ys = (make({k: v[i:i + 64] for k, v in tr.items()}, g)["labels"] for i in range(0, len(tr["input_ids"]), 64))
    ys = torch.cat([y[train.ordinary_targets(y, V, tok.special_ids)] for y in ys])
    unigram = torch.zeros(V + t5.N_SENTINELS)  # (a sentinel next: 100 to 1 against any span token)
    unigram[:V] = torch.log((torch.bincount(ys, minlength=V) + 0.5) / (len(ys) + 0.5 * V))

    class FormatOnly(torch.nn.Module):
        def forward(self, input_ids, attention_mask, labels):
            logits = unigram.expand(*labels.shape, -1).clone()
            fmt = (labels >= V) | (labels == tok.eos_id)
            logits[fmt] = torch.nn.functional.one_hot(labels[fmt], V + t5.N_SENTINELS).float() * 1e4
            return SimpleNamespace(logits=logits)
    r = train.evaluate(FormatOnly(), va, mask_id=tok.mask_id, vocab_size=V, special_ids=tok.special_ids,
                       batch_size=64, device="cpu", make=make)
    floor = train.task_floor(make, tr, va, V, tok.special_ids)
    assert r["loss"] == pytest.approx(floor, abs=0.01) and train.learned_context(r["loss"], floor) == "no"
    labels = make({k: v[:64] for k, v in va.items()}, torch.Generator().manual_seed(0))["labels"]
    fmt_share = ((labels >= V) | (labels == tok.eos_id)).sum() / (labels != -100).sum()
    assert fmt_share > (0.4 if mean_span == 1 else 0.15)  # (the format is a large share of the targets)


def test_t5_sentinels_in_a_wordpiece_folder_load_in_hf(tmp_path):
    """A WordPiece tokenizer saved for T5: <extra_id_i> at id len + 99 - i in vocab.txt, never split."""
    transformers = pytest.importorskip("transformers")
    from tokenizer import WordPieceTokenizer
    wp = WordPieceTokenizer.train(["the cat sat on the mat", "a dog ran in the park"] * 20, 120)
    wp.save(tmp_path)
    runs.add_sentinels(tmp_path, len(wp) + t5.N_SENTINELS)
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert hf_tok.convert_tokens_to_ids(["<extra_id_0>", "<extra_id_99>"]) == [len(wp) + 99, len(wp)]
    assert hf_tok.tokenize("the <extra_id_3> sat") == ["the", "<extra_id_3>", "sat"]


def test_t5_pretrains_without_dropout_unless_told():
    """The command line's --objective=t5 gets t5.DEFAULTS (no dropout, T5 1.1's pretraining) where the
    command leaves the setting out; a given value stands, and the other objectives keep 0.1."""
    for extra, want in ((["--objective=t5"], 0.0), (["--objective=t5", "--dropout=0.2"], 0.2),
                        (["--objective=plm"], 0.1), ([], 0.1)):
        argv = ["--task=mlm", "--corpus=text.txt"] + extra
        s = runs.check_task(train.check_settings(train.parse_args(argv)), runs.given_names(argv))
        assert s.dropout == want, extra


def test_objective_settings_that_cannot_work_are_one_line_errors():
    for kw, match in ((dict(objective="t5", packing="nsp"), "packing=full"),
                      (dict(objective="plm", whole_word=True), "draws its own targets"),
                      (dict(objective="xlnet"), "mlm, electra, plm or t5"), (dict(plm_k=1), "plm_k"),
                      (dict(mean_span=0.5), "mean_span")):
        with pytest.raises(ValueError, match=match):
            train.check_settings(tiny_settings(**kw))


def test_xpt_from_an_electra_discriminator(tok, corpus, tmp_path):
    """Beyond the paper: XPT of an ELECTRA discriminator. Through run_xpt's loop, after phase 1 every
    tensor copied from the source (layers, positions, segments, LayerNorms, the replaced-token head) is
    bit-identical to it while the new generator (no source counterpart) and the new words have trained;
    phase 2 moves everything; the result is saved as an ELECTRA discriminator with its generator."""
    s = tiny_settings(phase1_steps=3, phase2_steps=3, hidden_size=32, num_heads=4, generator_size=0.5)
    cfg = train.bert.new_electra(s, tok)[0].discriminator.config
    torch.manual_seed(0)
    src = bert.ElectraForPreTraining(cfg)
    src.save_pretrained(tmp_path / "src")
    tr, va = train.build_datasets(s, tok, corpus)
    model, evals = train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "x")
    assert isinstance(model, bert.ElectraPair) and "disc_loss" in evals[-1]
    p1 = torch.load(tmp_path / "x" / "phase1" / "final.pt", weights_only=True)["model"]
    source = src.state_dict()

    def source_name(n):  # discriminator.bert.layers.i -> bert.layers.(i - 1)
        n = n[len("discriminator."):]
        if n.startswith("bert.layers."):
            i = int(n.split(".")[2])
            n = n.replace(f"layers.{i}.", f"layers.{i - s.itl_layers}.", 1)
        return n
    reused = sorted(model.xpt["reused"])
    assert any(".rtd." in "." + n for n in reused) and any("position_embeddings" in n for n in reused)
    for n in reused:
        assert torch.equal(p1[n], source[source_name(n)]), n
    init = xpt.build_xpt(src, len(tok), itl_layers=s.itl_layers, target_pad_token_id=tok.pad_id, seed=s.seed,
                         generator_size=s.generator_size).state_dict()
    new = [n for n in p1 if n.startswith("generator.bert.layers.") or "word_embeddings" in n]
    assert new and all(not torch.equal(p1[n], init[n]) for n in new), "the generator and the words train in phase 1"
    final = model.state_dict()
    assert all(not torch.equal(final[n], source[source_name(n)]) for n in reused)
    saved = bert.ElectraForPreTraining.from_pretrained(tmp_path / "x" / "model")
    assert saved.config.num_hidden_layers == cfg.num_hidden_layers + 2
    assert (tmp_path / "x" / "model" / "generator" / "model.safetensors").exists()


def test_reused_lr_scale_slows_the_copied_parameters_in_phase_2(tok, corpus, tmp_path):
    """--reused_lr_scale through run_xpt: in phase 2 the parameters copied from the source move ~100x
    less at scale 0.01 than at 1, while the new ones (words, ITLs) move as much as before."""
    s = tiny_settings(phase1_steps=2, phase2_steps=4, eval_every=0)
    tr, va = train.build_datasets(s, tok, corpus)
    tiny_model(tok, s).save_pretrained(tmp_path / "src")

    def phase2_moves(scale):
        d = tmp_path / f"scale{scale}"
        train.run_xpt(train.dataclasses.replace(s, reused_lr_scale=scale), tmp_path / "src", tok, tr, va, d)
        a = torch.load(d / "phase1" / "final.pt", weights_only=True)["model"]
        b = torch.load(d / "phase2" / "final.pt", weights_only=True)["model"]
        return {k: (b[k] - a[k]).abs().max().item() for k in a}
    full, slow = phase2_moves(1.0), phase2_moves(0.01)
    reused = [k for k in full if k.startswith("bert.layers.1.") and k.endswith("weight")]
    new = ["bert.embeddings.word_embeddings.weight", "bert.layers.0.query.weight"]
    assert reused and all(0 < slow[k] < 0.05 * full[k] for k in reused), {k: (slow[k], full[k]) for k in reused}
    assert all(slow[k] > 0.3 * full[k] for k in new), {k: (slow[k], full[k]) for k in new}


def test_embeddings_only_runs_as_one_phase(tok, corpus, tmp_path):
    s = tiny_settings(phase1_steps=2, phase2_steps=2, eval_every=0)
    tr, va = train.build_datasets(s, tok, corpus)
    tiny_model(tok, s).save_pretrained(tmp_path / "src")
    _, evals = train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "e", method="embeddings-only")
    assert [(e["phase"], e["step"]) for e in evals] == [(1, 4)]


def test_sentence_order_pairs_are_consecutive_segments_swapped_half_the_time(tok, corpus):
    """--packing=sop (ALBERT): both segments come from one window of one document; label 0 pairs are in
    order, label 1 pairs are exactly those swapped; about half are swapped."""
    s = tiny_settings(packing="sop", max_len=24)
    docs = train.read_documents(corpus)
    ids, offsets = train.tokenize_documents(docs, tok)
    data = train.pack_sentence_pairs(ids, offsets, 24, tok.cls_id, tok.sep_id, tok.pad_id, s.seed, order=True)
    labels = data["next_sentence_label"].tolist()
    assert 0.4 < sum(labels) / len(labels) < 0.6, sum(labels) / len(labels)
    text = ids.astype(np.int64).tolist()
    for row, seg, label in zip(data["input_ids"].tolist(), data["token_type_ids"].tolist(), labels):
        seps = [i for i, t in enumerate(row) if t == tok.sep_id]
        a, b = row[1:seps[0]], row[seps[0] + 1:seps[1]]
        assert all(x == 0 for x in seg[:seps[0] + 1]) and all(x == 1 for x in seg[seps[0] + 1:seps[1] + 1])
        first, second = (a, b) if label == 0 else (b, a)  # undo the swap: the original order
        joined = first + second
        starts = [i for i in range(len(text) - len(joined) + 1) if text[i:i + len(joined)] == joined]
        assert starts and any(offsets[d] <= starts[0] and starts[0] + len(joined) <= offsets[d + 1]
                              for d in range(len(offsets) - 1)), "one contiguous stretch of one document"
    tr, _ = train.build_datasets(s, tok, corpus)  # --packing=sop: the same pairs, BERT's two-way head
    assert set(tr["next_sentence_label"].tolist()) == {0, 1} and train.bert.fresh_config(s, tok).type_vocab_size == 2


def test_nsp_packing_trains_bert_for_pretraining(tok, corpus, tmp_path):
    s = tiny_settings(packing="nsp", steps=3)
    tr, va = train.build_datasets(s, tok, corpus)
    cfg = train.bert.fresh_config(s, tok)
    assert cfg.type_vocab_size == 2, "sentence pairs need two segment types, even in the RoBERTa flavour"
    torch.manual_seed(0)
    model = train.bert.BertForPreTraining(cfg)
    assert set(tr["next_sentence_label"].tolist()) == {0, 1}, "both kinds of pair"
    evals = train.train_loop(model, tr, va, out_dir=tmp_path, steps=3, tok_info=train.tokenizer_info(tok, s), s=s)
    # an untrained model: the logged training loss is MLM + NSP ~ ln V + ln 2; the held-out (MLM) ~ ln V
    first = runs.read_log(tmp_path / "log.jsonl")[0]["loss"]
    assert first == pytest.approx(math.log(len(tok)) + math.log(2), abs=0.3), first
    assert evals[-1]["step"] == 3 and evals[-1]["loss"] == pytest.approx(math.log(len(tok)), abs=0.3)
    # the pairs' accuracy is scored and logged; a head that always answers "in order" (0) is right on
    # exactly the in-order share of the held-out pairs
    assert 0 <= evals[-1]["sentence_acc"] <= 1 and "eval_sentence_acc" in runs.read_log(tmp_path / "log.jsonl")[-1]
    with torch.no_grad():
        model.nsp.weight.zero_()
        model.nsp.bias.copy_(torch.tensor([5.0, 0.0]))
    r = train.evaluate(model, va, mask_id=tok.mask_id, vocab_size=len(tok), special_ids=tok.special_ids,
                       batch_size=5, device="cpu")
    assert r["sentence_acc"] == pytest.approx((va["next_sentence_label"] == 0).float().mean().item())
    with pytest.raises(ValueError, match="packing=full"):
        train.run_xpt(s, tmp_path, tok, tr, va, tmp_path / "x")


# the source brings the model's sizes: --task=xpt refuses them (and --steps), like every setting it would ignore
XPT_TINY = [a for a in TINY if a.split("=")[0] not in ("--hidden_size", "--num_layers", "--num_heads",
                                                         "--intermediate_size")]


def test_task_xpt_from_the_command_line(tok, corpus, tmp_path, capsys):
    s = tiny_settings()
    tiny_model(tok, s).save_pretrained(tmp_path / "src")
    train.main(["--task=xpt", f"--source={tmp_path / 'src'}", f"--corpus={corpus}", f"--out_dir={tmp_path / 'o'}",
                "--phase1_steps=2", "--phase2_steps=2", *XPT_TINY, "--eval_every=0"])
    out = capsys.readouterr().out
    assert "ITL in" in out and "xpt phase 1: held-out loss" in out and "xpt phase 2: held-out loss" in out
    assert (tmp_path / "o" / "xpt" / "model" / "model.safetensors").exists()
    assert (tmp_path / "o" / "xpt" / "model" / "vocab.json").exists()
    with pytest.raises(ValueError, match="needs --source"):
        train.main(["--task=xpt", f"--corpus={corpus}"])


def test_a_byte_order_mark_is_not_text(tmp_path):
    (tmp_path / "bom.txt").write_bytes("\ufeff첫 문서\n둘째 문서\n".encode())
    assert train.read_documents(tmp_path / "bom.txt") == ["첫 문서", "둘째 문서"]


def test_unigram_floor_by_hand():
    # vocab 6: ids 0 and 1 special. Training counts (specials dropped): t2 x3, t3 x1 -> N = 4.
    # p(t) = (c_t + 0.5) / (N + 0.5 V) = (c_t + 0.5) / 7: p(2) = 3.5/7 = 1/2, p(4) = 0.5/7 = 1/14.
    # Held-out [2, 4] (the specials 0, 1 left out): F = -(ln 1/2 + ln 1/14) / 2 = ln(28) / 2.
    f = train.unigram_loss([0, 2, 2, 1, 2, 3, 1], [1, 2, 0, 4], vocab_size=6, special_ids=[0, 1])
    assert f == pytest.approx(math.log(28) / 2, abs=1e-12)
    with pytest.raises(ValueError, match="no .*tokens"):
        train.unigram_loss([2, 3], [0, 1, 1], vocab_size=6, special_ids=[0, 1])
    # the accuracy floor: always guess the most frequent training token (2, three times); held out [2, 4]
    assert train.majority_accuracy([0, 2, 2, 1, 2, 3, 1], [1, 2, 0, 4], special_ids=[0, 1]) == 0.5
    assert train.majority_accuracy([3, 3, 2], [2, 2, 4], special_ids=[0, 1]) == 0.0


def test_evaluation_masks_every_held_out_token_once_at_mask_positions():
    torch.manual_seed(0)
    V, mask_id, specials = 99, 4, [0, 1, 2, 3, 4]
    ids = torch.randint(5, V, (3, 7))
    ids[0, 0], ids[2, 5:] = 0, 1  # a <s> and two pads
    groups, k = train.eval_mask_groups(ids, vocab_size=V, special_ids=specials, mlm_probability=0.15)
    assert k == 7 and torch.equal(groups < 0, ids < 5)
    seen = []

    class Probe(torch.nn.Module):
        """Records what it is asked; predicts uniformly, so the loss must be ln V exactly."""
        def forward(self, input_ids, attention_mask=None, labels=None):
            chosen = labels != -100
            assert (input_ids[chosen] == mask_id).all(), "a scored position was not [MASK]"
            assert torch.equal(input_ids[~chosen], ids[~chosen]), "an unscored position was changed"
            seen.append(labels[chosen])
            return bert.MaskedLMOutput(loss=None, logits=torch.zeros(*input_ids.shape, V))

    data = {"input_ids": ids, "attention_mask": (ids != 1).long()}
    r = train.evaluate(Probe(), data, mask_id=mask_id, vocab_size=V, special_ids=specials, batch_size=3,
                       device=torch.device("cpu"))
    scored = torch.cat(seen)
    assert r["tokens"] == len(scored) == int((ids >= 5).sum())  # every non-special token once
    assert sorted(scored.tolist()) == sorted(ids[ids >= 5].tolist())
    assert r["loss"] == pytest.approx(math.log(V))
    # the groups depend on the data alone: the same on a second call, whatever the global RNG did
    torch.manual_seed(123)
    again, _ = train.eval_mask_groups(ids, vocab_size=V, special_ids=specials)
    assert torch.equal(again, groups)


