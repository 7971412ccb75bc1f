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

import numpy as np
import pytest
import torch

import bert
import train
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
    with pytest.raises(ValueError, match="unknown setting 'stepz'.*valid keys: task, preset"):
        train.parse_args(["--stepz=3"])
    with pytest.raises(ValueError, match="--steps expects int, got 'many'"):
        train.parse_args(["--steps=many"])
    with pytest.raises(ValueError, match="expects bool"):
        train.parse_args(["--compile=maybe"])
    with pytest.raises(ValueError, match="--key=value"):
        train.parse_args(["steps"])
    with pytest.raises(SystemExit):
        train.parse_args(["--help"])
    out = capsys.readouterr().out
    for f in ("--steps=1000", "--lr=0.0005", "--task=demo", "optimizer steps"):
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


def test_word_start_flags_follow_the_tokenizer(tok):
    flags = train.word_start_flags(tok)
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
    return train.bert.BertForMaskedLM(train.fresh_config(s, tok))


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
    with pytest.raises(train.CheckpointMismatchError, match=r"lr: checkpoint 0.0005 vs now 0.1"):
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
    assert [round(e["loss"], 6) for e in evals] == script[:7]
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


def test_sigkill_and_rerun_is_bit_identical(corpus, tmp_path):
    steps = 400
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(_cmd(tmp_path / "ref", corpus, steps), capture_output=True, text=True, env=env)
    assert ref.returncode == 0, ref.stderr[-2000:]
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
    a = torch.load(tmp_path / "ref" / "run" / "final.pt", weights_only=True)["model"]
    b = torch.load(out / "run" / "final.pt", weights_only=True)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps_logged = [json.loads(x)["step"] for x in log.read_text().splitlines() if "loss" in json.loads(x)]
    assert steps_logged == list(range(1, steps + 1)), "the log has each step exactly once"


def test_ddp_two_processes_match_one(corpus, tmp_path):
    pytest.importorskip("torch.distributed")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed unavailable")
    common = ["--dropout=0.0", "--steps=6", "--ckpt_every=0", "--eval_every=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(_cmd(tmp_path / "one", corpus, 6) + common + ["--batch_size=6"],
                         capture_output=True, text=True, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
                          *_cmd(tmp_path / "two", corpus, 6)[1:], *common, "--batch_size=3"],
                         capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr[-3000:]

    def losses(d):
        return [json.loads(x)["loss"] for x in (d / "run" / "log.jsonl").read_text().splitlines()
                if "loss" in json.loads(x)]
    l1, l2 = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(l1) == len(l2) == 6
    assert np.allclose(l1, l2, atol=1e-4), (l1, l2)


def test_xpt_phases_continue_the_data_and_resume_exactly_between_phases(tok, corpus, tmp_path):
    """Phase 2 continues the data stream where phase 1 stopped (not a replay of its batches), and a run
    killed between the phases (phase 1 finished, phase 2 not started) ends bit-identical."""
    s = tiny_settings(phase1_steps=3, phase2_steps=3, eval_every=0)
    tr, va = train.build_datasets(s, tok, corpus)
    src_model = tiny_model(tok, s)
    src_model.save_pretrained(tmp_path / "src")
    _, evals = train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "a")
    assert [(e["phase"], e["step"]) for e in evals] == [(1, 3), (2, 6)]
    log2 = train.read_log(tmp_path / "a" / "phase2" / "log.jsonl")
    assert [r["step"] for r in log2 if "loss" in r] == [4, 5, 6]
    # same rows? phase 2's first batch is the global batch of step 3, not of step 0
    assert not torch.equal(train.batch_indices(len(tr["input_ids"]), 3, 4, s.seed),
                           train.batch_indices(len(tr["input_ids"]), 0, 4, s.seed))
    train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "b")
    import shutil
    shutil.rmtree(tmp_path / "b" / "phase2")          # "killed" right after phase 1 finished
    torch.manual_seed(12345)                           # a process with another RNG history
    torch.rand(100)
    m, _ = train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "b")
    a = torch.load(tmp_path / "a" / "phase2" / "final.pt", weights_only=True)["model"]
    for k, v in m.state_dict().items():
        assert torch.equal(a[k], v), k


def test_embeddings_only_runs_as_one_phase(tok, corpus, tmp_path):
    s = tiny_settings(phase1_steps=2, phase2_steps=2, eval_every=0)
    tr, va = train.build_datasets(s, tok, corpus)
    tiny_model(tok, s).save_pretrained(tmp_path / "src")
    _, evals = train.run_xpt(s, tmp_path / "src", tok, tr, va, tmp_path / "e", method="embeddings-only")
    assert [(e["phase"], e["step"]) for e in evals] == [(1, 4)]


def test_nsp_packing_trains_bert_for_pretraining(tok, corpus, tmp_path):
    s = tiny_settings(packing="nsp", steps=3)
    tr, va = train.build_datasets(s, tok, corpus)
    cfg = train.fresh_config(s, tok)
    assert cfg.type_vocab_size == 2, "sentence pairs need two segment types, even in the RoBERTa flavour"
    torch.manual_seed(0)
    model = train.bert.BertForPreTraining(cfg)
    evals = train.train_loop(model, tr, va, out_dir=tmp_path, steps=3, tok_info=train.tokenizer_info(tok, s), s=s)
    assert evals[-1]["step"] == 3 and 0 < evals[-1]["loss"] < 20
    with pytest.raises(ValueError, match="packing=full"):
        train.run_xpt(s, tmp_path, tok, tr, va, tmp_path / "x")


def test_task_xpt_from_the_command_line(tok, corpus, tmp_path, capsys):
    s = tiny_settings()
    tiny_model(tok, s).save_pretrained(tmp_path / "src")
    train.main([f"--task=xpt", f"--source={tmp_path / 'src'}", f"--corpus={corpus}", f"--out_dir={tmp_path / 'o'}",
                "--phase1_steps=2", "--phase2_steps=2", *TINY, "--eval_every=0"])
    out = capsys.readouterr().out
    assert "ITL in" in out and "xpt phase 1: held-out loss" in out and "xpt phase 2: held-out loss" in out
    assert (tmp_path / "o" / "xpt" / "model" / "model.safetensors").exists()
    assert (tmp_path / "o" / "xpt" / "model" / "vocab.json").exists()
    with pytest.raises(ValueError, match="needs --source"):
        train.main(["--task=xpt", f"--corpus={corpus}"])


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


def test_whole_word_evaluation_masks_a_word_together():
    V = 99
    word_starts = torch.zeros(V, dtype=torch.bool)
    word_starts[5:50] = True  # ids 5..49 start a word, 50..98 continue one
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, V, (3, 7), generator=g)
    ids[:, 0] = 0  # <s>
    groups, _ = train.eval_mask_groups(ids, vocab_size=V, special_ids=[0, 1, 2, 3, 4], word_starts=word_starts)
    for b in range(3):
        for t in range(2, 7):
            if ids[b, t] >= 50 and ids[b, t - 1] >= 5:  # a continuation piece after a real token
                assert groups[b, t] == groups[b, t - 1], (b, t)
    assert (groups[:, 0] == -1).all()
