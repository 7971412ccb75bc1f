"""
The plumbing of train.py's training loop, in a file of its own so that train.py reads as the lecture
(settings, data, masking, the step, the loop, the tasks) and this as the machinery a first reading can
skip: nothing here changes what a model learns, only that a run can be stopped, resumed, checked and
shared.

  - settings on the command line: `parse_args` (--key=value into any settings dataclass, typed and
    checked), `help_text` (--help from the comments beside the fields), `check_settings`;
  - `_Run`: the bookkeeping around train.train_loop's steps: start, or resume bit-identically from
    ckpt.pt (the RNG states are in it), evaluations, early stopping (`stalled`) with the best weights in
    best.pt, final.pt at the end;
  - checkpoints written atomically (temp file + rename), loaded with torch.load(weights_only=True),
    the previous one kept as a fallback, a run's settings compared with its checkpoint's (every
    difference named);
  - the JSONL log (a killed run's lines after its checkpoint are dropped on resume), the output
    folder's lock (two runs never write one folder), DDP under torchrun;
  - text in (UTF-8 checked, documents split) and what is derived from it cached on disk: token ids
    (numpy, checked before use), trained tokenizers.

Needs torch, numpy, tqdm, bert.py (atomic writes) and tokenizer.py only: it never imports train.py.
"""
import contextlib
import dataclasses
import hashlib
import inspect
import json
import math
import os
import random
import signal
import re
import sys
import tempfile
import threading
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import bert
import t5
import tokenizer as tokenizers_mod
import xlnet

OBJECTIVE_FILES = {"plm": xlnet, "t5": t5}  # objectives whose model and batches live in the model's file


# ----------------------------------------------------------------------------------------------------
# Settings on the command line: --key=value into a dataclass, --help from its comments, the checks
# ----------------------------------------------------------------------------------------------------
def parse_args(argv, defaults, usage=None):
    """Parse `--key=value` overrides into a copy of `defaults`, any settings dataclass (train.py,
    finetune.py and the benches all use this parser). Values are converted to the field's type; an
    unknown key or an unconvertible value raises ValueError naming the valid keys. `--help` raises
    SystemExit after printing help_text(defaults, usage)."""
    s = defaults
    kinds = {f.name: type(getattr(s, f.name)) for f in fields(s)}
    for arg in joined_args(argv, kinds):
        if arg in ("-h", "--help"):
            print(help_text(s, usage))
            raise SystemExit(0)
        if not arg.startswith("--") or "=" not in arg:
            raise ValueError(f"expected --key=value, got {arg!r}; valid keys: {', '.join(kinds)}")
        key, value = arg[2:].split("=", 1)
        key = key.replace("-", "_")
        if key not in kinds:
            raise ValueError(f"unknown setting {key!r}; valid keys: {', '.join(kinds)}")
        kind = kinds[key]
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                v = value.lower() in ("true", "1", "yes")
            else:
                v = kind(value)
        except ValueError:
            raise ValueError(f"--{key} expects {kind.__name__}, got {value!r}") from None
        s = dataclasses.replace(s, **{key: v})
    return s


def joined_args(argv, kinds):
    """argv with the shell's other spellings made --key=value: `--key value`, and a bare `--flag` for a
    bool setting (= true). kinds: {setting name: its type}."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        key = arg[2:].replace("-", "_") if arg.startswith("--") and "=" not in arg else None
        if key in kinds and kinds[key] is bool and (i + 1 == len(argv) or argv[i + 1].startswith("--")):
            arg = f"{arg}=true"
        elif key in kinds and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            arg, i = f"{arg}={argv[i + 1]}", i + 1
        out.append(arg)
        i += 1
    return out


def given_names(argv):
    """The settings named on a command line (the others keep their defaults)."""
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}


def task_named(argv):
    """The --task of a command line (--task=X or --task X); "demo" when it names none."""
    for i, a in enumerate(argv):
        if a.startswith("--task="):
            return a.split("=", 1)[1]
        if a == "--task" and i + 1 < len(argv):
            return argv[i + 1]
    return "demo"


def help_text(s, usage=None):
    """Every setting of the dataclass `s` with its current value and the comment beside its field
    (read from the source of its class), under the `usage` lines (train.py's by default)."""
    comments = {}
    source = "\n".join(inspect.getsource(c) for c in type(s).__mro__ if dataclasses.is_dataclass(c))
    for line in source.splitlines():  # (a subclass's fields and those it inherits)
        line = line.strip()
        if ":" in line and "#" in line and "=" in line.split("#")[0]:
            name = line.split(":", 1)[0].strip()
            comments.setdefault(name, line.split("#", 1)[1].strip())
    items = [(f"--{f.name}={getattr(s, f.name)}", comments.get(f.name, "")) for f in fields(s)]
    width = max(len(k) for k, _ in items)
    lines = [f"  {k.ljust(width)}  {c}" for k, c in items]
    return "\n".join(list(usage or ["usage: [--key=value ...]"]) + [""] + lines)


def check_settings(s):
    """Refuse settings no run can use, before anything is read or written, naming the setting and what
    it needs (the same check on a fresh run and on a rerun). Raises ValueError."""
    fraction = lambda v: 0 <= v <= 1  # noqa: E731
    rules = {  # setting: (test, what it needs)
        **{k: (lambda v: v >= 1, ">= 1") for k in ("batch_size", "grad_accum", "hidden_size", "num_layers",
                                                  "num_heads", "intermediate_size", "vocab_size",
                                                  "log_every")},
        **{k: (lambda v: v >= 0, ">= 0") for k in ("steps", "more_steps", "embedding_size", "phase1_steps",
                                                  "phase2_steps",
                                                  "source_steps", "itl_layers", "eval_every", "eval_batches",
                                                  "patience",
                                                  "min_steps", "phase1_patience",
                                                  "ckpt_every", "weight_decay", "max_grad_norm",
                                                  "reused_lr_scale", "source_lr", "scratch_lr")},
        "max_len": (lambda v: v >= 5, ">= 5"),
        "lr": (lambda v: v > 0, "> 0"),
        "mlm_probability": (lambda v: 0 < v <= 1, "in (0, 1]"),
        "valid_fraction": (lambda v: 0 < v < 1, "in (0, 1)"),
        "dropout": (lambda v: 0 <= v < 1, "in [0, 1)"),
        "warmup": (fraction, "in [0, 1] (a fraction of the steps)"),
        "objective": (lambda v: v in ("mlm", "electra", "plm", "t5"), "mlm, electra, plm or t5"),
        "plm_k": (lambda v: v >= 2, ">= 2"),
        "mean_span": (lambda v: v >= 1, ">= 1"),
        "generator_size": (lambda v: 0 < v <= 1, "in (0, 1]"),
        "disc_weight": (lambda v: v >= 0, ">= 0"),
    }
    problems = [f"--{k} must be {need}, got {getattr(s, k)}" for k, (ok, need) in rules.items()
                if hasattr(s, k) and not ok(getattr(s, k))]  # (source_steps ...: the demo's settings)
    if hasattr(s, "device"):
        problems += device_problems(s.device)
    if not problems and s.hidden_size % s.num_heads:
        problems.append(f"--hidden_size={s.hidden_size} must be divisible by --num_heads={s.num_heads}")
    if getattr(s, "objective", "mlm") != "mlm" and s.packing != "full":
        problems.append(f"--objective={s.objective} pretrains on --packing=full "
                        "(it has no sentence-pair task)")
    if getattr(s, "objective", "mlm") in ("plm", "t5") and (s.whole_word or s.span_masking):
        problems.append(f"--objective={s.objective} draws its own targets: --whole_word and --span_masking "
                        "are for the masked LMs")
    if problems:
        raise ValueError("; ".join(problems))
    return s


# settings that only one task uses: naming one for the other task is a mistake, not a no-op
ONLY_FOR = {"xpt": ("phase1_steps", "phase2_steps", "method", "source", "itl_layers", "reused_lr_scale",
                    "init_shared", "phase1_patience"),
            "mlm": ("steps", "more_steps", "objective", "generator_size", "disc_weight", "plm_k", "mean_span",
                    "hidden_size",
                    "num_layers", "num_heads", "intermediate_size", "packing", "embedding_size",
                    "share_layers")}


def check_task(s, given):
    """The task's own checks, before any text is read or tokenizer trained: the task, settings it
    would ignore (`given`: the names on the command line), the source folder and its length; and the
    objective's own defaults (t5.DEFAULTS) for the settings the command line leaves out."""
    if s.task not in ("mlm", "xpt"):
        raise ValueError(f"task must be mlm or xpt, got {s.task!r} "
                         f"(python train.py with no --task runs the demo)")
    other = "xpt" if s.task == "mlm" else "mlm"
    ignored = [f"--{k}" for k in ONLY_FOR[other] if k in given]
    if ignored:
        hint = " (the steps of XPT are --phase1_steps and --phase2_steps)" if "--steps" in ignored else ""
        raise ValueError(f"{', '.join(ignored)} {'does' if len(ignored) == 1 else 'do'} not apply to "
                         f"--task={s.task}, only to --task={other}{hint}")
    own = getattr(OBJECTIVE_FILES.get(s.objective), "DEFAULTS", {})
    own = {k: v for k, v in own.items() if k not in given}
    if s.task == "mlm" and own:  # the objective's own defaults (t5.DEFAULTS), for what the command leaves out
        s = dataclasses.replace(s, **own)
    if s.task == "xpt" and not (s.source and s.corpus):
        raise ValueError("--task=xpt needs --source=DIR (an HF-format checkpoint directory)" if not s.source
                         else "--task=xpt needs --corpus=FILE (target-language text)")
    if s.task == "xpt":
        source = resolve_source(s.source) if s.source else None
        if source is not None:
            longest = bert.BertConfig.from_json_file(source / "config.json").max_len
            if s.max_len > longest:
                raise ValueError(f"--max_len={s.max_len} is longer than the source model's {longest} "
                                 f"positions ({source}); use --max_len={longest} or less")
            s = dataclasses.replace(s, source=str(source))
    return s


def command(main, argv=None):
    """Run main(argv) for the command line: a user's mistake is one line "error: ..." and exit status 2;
    a stop by Ctrl-C or SIGTERM one line too, with the shell's status for the signal (130, 143)."""
    try:
        main(argv)
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    except (ValueError, FileNotFoundError, NonFiniteLossError, OutputInUseError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def summary_lines(desc, r, floor, verdict, model_dir, logs, finished_before=False, task="mlm"):
    """What a finished command prints last: where the model, tokenizer and logs are, NSP/SOP accuracy,
    and last of all the held-out loss `r` next to its unigram floor with the verdict (learned context
    or not; on the plateau, what moves the task's runs on: PLATEAU_ADVICE)."""
    done = "already finished: " if finished_before else ""
    where, acc = ("on its own targets", "target") if r.get("scored") else \
        ("at [MASK] positions", "masked-token")
    lines = [f"  model and tokenizer (HF format): {model_dir}", f"  log: {', '.join(map(str, logs))}"]
    if "sentence_acc" in r:
        lines.append(f"  sentence-pair accuracy (NSP/SOP) {r['sentence_acc']:.1%} (chance: 50%)")
    lines.append(f"{desc}: {done}held-out loss {r['loss']:.4f} {where}, unigram floor {floor:.4f} "
                 f"({r['loss'] - floor:+.3f} nat): learned context: {verdict}; {acc} accuracy {r['acc']:.1%}")
    if verdict != "yes":
        lines.append(PLATEAU_ADVICE[task])
    return "\n".join(lines)


# What a run on the unigram plateau is told, per task (the numbers: docs/results.md, measured 2026-12-04)
PLATEAU_ADVICE = {
    "mlm": ("  still at the unigram plateau: the loss token frequencies alone give. A small masked LM sits "
            "there\n  before it learns from context: with these defaults ~1,000 steps on 1 MB of English, "
            "~4,000 on 1 MB of\n  Korean (docs/results.md). More steps (--more_steps=4000) move it on; "
            "200 KB of Korean needs more text"),
    "xpt": ("  still at the unigram plateau: the loss token frequencies alone give. XPT usually leaves it "
            "in\n  phase 1 (the demo: 2.1 nat below the floor after 200 steps); more steps (--phase1_steps, "
            "--phase2_steps,\n  in a new --out_dir) or a source whose layers know more move it on"),
}


# ----------------------------------------------------------------------------------------------------
# Errors a user can meet, each a one-line message at the command line
# ----------------------------------------------------------------------------------------------------
class NonFiniteLossError(RuntimeError):
    pass


class CheckpointUnreadableError(ValueError):
    """A checkpoint file that cannot be read (cut short, overwritten, not a checkpoint)."""


class CheckpointMismatchError(ValueError):
    pass


class Interrupted(Exception):
    """A run stopped by SIGINT (Ctrl-C) or SIGTERM after finishing its step and writing a checkpoint;
    exit_code is the shell's for that signal (130, 143)."""

    def __init__(self, signum, step, where):
        super().__init__(signum, step, where)  # (its args rebuild it: it crosses process pools)
        self.exit_code = 128 + signum

    def __str__(self):
        signum, step, where = self.args
        return (f"stopped at step {step} by {signal.Signals(signum).name}: checkpoint written to {where}; "
                f"rerun the same command to continue")


class OutputInUseError(RuntimeError):
    """Another live run holds the output folder."""


# ----------------------------------------------------------------------------------------------------
# Devices and processes: CUDA or CPU, DDP under torchrun
# ----------------------------------------------------------------------------------------------------
def pick_device(name):
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    return torch.device(name)


def device_problems(name):
    """What is wrong with a --device value here, before anything runs: [] when it can be used."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", name):
        return [f"--device must be auto, cpu, cuda, cuda:N or mps, got {name!r}"]
    if name.startswith("cuda") and not torch.cuda.is_available():
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
        return [f"--device={name}: {why}; use --device=cpu (or auto)"]
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        return [f"--device={name}: there are {torch.cuda.device_count()} GPUs"]
    if name == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        return ["--device=mps: not available here; use --device=cpu (or auto)"]
    return []


def resolve_source(name):
    """The folder of a source model: `name` itself when it is a folder, else a model of that name in the
    local Hugging Face cache (HF_HOME, or ~/.cache/huggingface; read offline, never downloaded).
    Raises FileNotFoundError saying what a source folder must hold."""
    path = Path(name)
    if path.is_dir():
        return path
    hub = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub"
    repo = hub / ("models--" + name.replace("/", "--"))
    ref = repo / "refs" / "main"
    snapshots = [repo / "snapshots" / ref.read_text().strip()] if ref.exists() else \
        sorted((repo / "snapshots").glob("*"))
    for snap in snapshots:
        if (snap / "config.json").exists():
            return snap
    raise FileNotFoundError(f"--source={name} is not a folder (nor a model in the Hugging Face cache {hub}): "
                            f"give a folder with config.json and model.safetensors (or pytorch_model.bin), "
                            f"e.g. data/source_en")


def distributed():
    """(rank, world_size), initialising the process group under torchrun (RANK/WORLD_SIZE set)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def rank0_first(fn):
    """Run fn on rank 0 first (it writes caches: tokenizer, token ids), then on the other ranks (they
    read them). Without torchrun it just runs fn."""
    rank, world = distributed()
    if world == 1:
        return fn()
    import torch.distributed as dist
    if rank == 0:
        result = fn()
        dist.barrier()
    else:
        dist.barrier()
        result = fn()
    return result


@contextlib.contextmanager
def stop_requests():
    """While the block runs, SIGINT and SIGTERM only record themselves in the yielded dict ("signum"):
    the loop finishes its step, writes a checkpoint and raises Interrupted, so a stop loses nothing. A
    second signal stops at once (the default behaviour). Outside the main thread: no handlers."""
    flag = {"signum": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    signals = (signal.SIGINT, signal.SIGTERM)
    old = {sig: signal.getsignal(sig) for sig in signals}

    def handler(signum, frame):
        if flag["signum"] is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        flag["signum"] = signum
    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


# ----------------------------------------------------------------------------------------------------
# One run of train.train_loop: start or exact resume, evaluations, early stopping, the end
# ----------------------------------------------------------------------------------------------------
class _Run:
    """The bookkeeping around `train_loop`'s steps: one object per run, so that the loop reads as the
    training it does. Holds the step, the evaluations, the optimizer, the (wrapped) network and the
    paths in out_dir: ckpt.pt (to resume), best.pt (early stopping), final.pt (done), log.jsonl."""

    @classmethod
    def start(cls, model, out_dir, steps, s, groups, run_config, desc, step_offset):
        """Set up a run, or resume it from ckpt.pt; if final.pt exists, load it: `finished` = its evals."""
        self = cls()
        out_dir = Path(out_dir)
        if s.patience < 0:
            raise ValueError(f"patience must be >= 0 (0 = no early stopping), got {s.patience}")
        if s.patience and not s.eval_every:
            raise ValueError("early stopping (--patience) needs held-out evaluations: set --eval_every > 0")
        self.model, self.s, self.steps, self.desc, self.step_offset = model, s, steps, desc, step_offset
        self.rank, self.world = distributed()
        self.device = pick_device(s.device)
        model.to(self.device)
        self.master = self.rank == 0
        self.ckpt_path, self.final_path = out_dir / "ckpt.pt", out_dir / "final.pt"
        self.prev_path = out_dir / "ckpt.prev.pt"  # the checkpoint before ckpt.pt, kept until the run ends
        self.log_path, self.best_path = out_dir / "log.jsonl", out_dir / "best.pt"
        self.run_config = dict(run_config or {}, steps=steps, batch_size=s.batch_size,
                               grad_accum=s.grad_accum,
                               world=self.world, lr=s.lr, warmup=s.warmup, weight_decay=s.weight_decay,
                               max_grad_norm=s.max_grad_norm, mlm_probability=s.mlm_probability,
                               whole_word=s.whole_word, span_masking=s.span_masking, seed=s.seed,
                               max_len=s.max_len, packing=s.packing,
                               step_offset=step_offset, patience=s.patience, min_steps=s.min_steps,
                               # (whole-word runs are scored token by token since 2026-12-04: train.evaluate)
                               eval="mask-only" + (", token by token" if s.whole_word else ""))
        self.finished = None
        if self.final_path.exists():
            try:
                state = load_checkpoint(self.final_path, self.run_config)
            except CheckpointUnreadableError as e:
                raise CheckpointUnreadableError(f"{e}; the run's final weights are lost: delete {out_dir} to "
                                                f"train this run again") from None
            model.load_state_dict(state["model"])
            self.finished = state.get("evals", [])
            return self

        opt_groups = [{k: v for k, v in g.items() if k != "names"} for g in groups if g["params"]]
        if not opt_groups:
            raise ValueError("no trainable parameters")
        self.optimizer = torch.optim.AdamW(opt_groups, lr=s.lr, betas=(0.9, 0.98), eps=1e-6,
                                           fused=self.device.type == "cuda")
        self.step, self.evals = 0, []
        # Dropout draws from torch's global RNG: seed it here, so a run does not depend on what ran
        # before it in the process (a resumed run restores the RNG state from its checkpoint instead).
        torch.manual_seed(s.seed * 1009 + step_offset + 1)
        state = self._latest_checkpoint()
        if state is not None:
            model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step, self.evals = state["step"], state["evals"]
            torch.set_rng_state(state["rng_torch"])
            random.setstate(_to_py_state(state["rng_python"]))
            if torch.cuda.is_available() and "rng_cuda" in state:
                torch.cuda.set_rng_state_all(state["rng_cuda"])
            if self.master:
                print(f"resuming {desc} from {state['path']} at step {self.step}")
        if self.master:
            # (the lines a killed run wrote after its checkpoint)
            _truncate_log(self.log_path, step_offset + self.step)

        self.net = model
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if s.compile:
            self.net = torch.compile(self.net)
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if self.device.type == "cuda" \
            else contextlib.nullcontext
        self.t_last, self.tokens_since = time.time(), 0
        self.last_ckpt = self.step if state is not None else None
        return self

    def _latest_checkpoint(self):
        """The newest readable checkpoint of this run (ckpt.pt, else the one before it), or None. An
        unreadable newest one is reported and skipped; with no readable one left, a clear error."""
        problems = []
        for path in (self.ckpt_path, self.prev_path):
            if not path.exists():
                continue
            try:
                state = load_checkpoint(path, self.run_config)
            except CheckpointUnreadableError as e:
                problems.append(str(e))
                continue
            if problems:
                print(f"warning: {problems[0]}; resuming from the checkpoint before it", file=sys.stderr)
            return {**state, "path": path}
        if problems:
            raise CheckpointUnreadableError(f"{problems[0]}, and there is no earlier readable checkpoint: "
                                            f"delete "
                                            f"{self.ckpt_path.parent} to start this run over")
        return None

    def checkpoint(self, path=None, done=False):
        """Write ckpt.pt (with the optimizer and RNG states, to resume) or, when done, final.pt."""
        if not self.master:
            return
        state = {"model": self.model.state_dict(), "step": self.step, "config": self.run_config,
                 "evals": self.evals}
        if not done:
            state.update(optimizer=self.optimizer.state_dict(), rng_torch=torch.get_rng_state(),
                         rng_python=list(_flatten_py_state(random.getstate())))
            if torch.cuda.is_available():
                state["rng_cuda"] = torch.cuda.get_rng_state_all()
        if not done and self.ckpt_path.exists():
            os.replace(self.ckpt_path, self.prev_path)  # the last good one stays until the new one is whole
        save_atomic(state, path or self.ckpt_path)
        if not done:
            self.last_ckpt = self.step

    def log_step(self, loss, grad_norm, lr, *, tokens, bar, every, last):
        self.tokens_since += tokens
        if self.master and (self.step % every == 0 or last):
            tps = self.tokens_since / max(time.time() - self.t_last, 1e-9)
            _log(self.log_path, {"step": self.step_offset + self.step, "loss": loss,
                                 "grad_norm": float(grad_norm),
                                 "lr": lr, "tokens_per_s": round(tps)})
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}")
            self.t_last, self.tokens_since = time.time(), 0

    def record_eval(self, r, floor=None, verdict=None):
        """Keep and log an evaluation; with the unigram floor of the held-out text, one line says where
        the loss stands against it and the verdict (train.learned_context)."""
        r["step"] = self.step_offset + self.step
        self.evals.append(r)
        if self.master:
            extra = ("disc_", "replaced", "sentence")  # (ELECTRA's discriminator, NSP/SOP)
            electra = {f"eval_{k}": v for k, v in r.items() if k.startswith(extra)}
            floors = {} if floor is None else {"floor": floor}
            _log(self.log_path, {"step": r["step"], "eval_loss": r["loss"], "eval_ppl": r["ppl"],
                                 "eval_acc": r["acc"], **electra, **floors})
            if floor is not None:
                where = "learned context" if verdict == "yes" else \
                    "still at the unigram plateau (the loss token frequencies alone give)"
                tqdm.write(f"{self.desc} step {r['step']}: held-out loss {r['loss']:.4f}, unigram floor "
                           f"{floor:.4f} ({r['loss'] - floor:+.3f} nat): {where}")
        return r

    def keep_if_best(self, r):
        """Early stopping: keep the weights of the best evaluation so far in best.pt."""
        best_before = min((e["loss"] for e in self.evals[:-1]), default=math.inf)
        if self.s.patience and self.master and r["loss"] < best_before:
            save_atomic({"model": self.model.state_dict(), "step": r["step"]}, self.best_path)

    def stalled(self):
        return stalled([e["loss"] for e in self.evals], self.step, self.s.patience, self.s.min_steps)

    def non_finite(self, loss):
        where = f"the last good checkpoint (step {self.last_ckpt}) is in {self.ckpt_path}" \
            if self.last_ckpt is not None else "no checkpoint was written yet"
        return NonFiniteLossError(f"loss is {loss} at step {self.step + 1} ({self.desc}); stopping; {where}")

    def stop_requested(self, flag):
        """Whether a signal asked this run to stop (under DDP: any rank's, so that all stop together)."""
        asked = flag["signum"] or 0
        if self.world > 1:
            import torch.distributed as dist
            t = torch.tensor([asked], device=self.device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            asked = int(t.item())
        return asked

    def interrupt(self, signum):
        """Write the checkpoint of the step just done and stop (Interrupted)."""
        self.checkpoint()
        return Interrupted(signum, self.step_offset + self.step, self.ckpt_path)

    def barrier(self):
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()

    def finish(self, run_eval):
        """The last evaluation (unless one was just made), the best weights back under early stopping,
        final.pt written, ckpt.pt and best.pt removed. Returns the evaluations."""
        s, evals = self.s, self.evals
        r = evals[-1] if evals and evals[-1]["step"] == self.step_offset + self.step else run_eval()
        if self.master:
            print(f"{self.desc}: held-out loss {r['loss']:.4f}, perplexity {r['ppl']:.1f}, "
                  f"{'target' if r.get('scored') else 'masked-token'} accuracy {r['acc']:.1%} "
                  f"after {self.step} steps")
            if "disc_loss" in r:  # ELECTRA: the loss above is the generator's
                print(f"{self.desc}: discriminator loss {r['disc_loss']:.4f}, "
                      f"right on {r['disc_acc_replaced']:.1%} "
                      f"of the replaced tokens and {r['disc_acc_original']:.1%} of the original ones"
                      + (f", AUC {r['disc_auc']:.3f} (a coin: 0.5)" if r.get("disc_auc") is not None else ""))
        if s.patience:
            best = min(evals, key=lambda e: e["loss"])
            if best is not r:  # the weights of the best evaluation replace the last ones
                self.model.load_state_dict(torch.load(self.best_path, map_location=self.device,
                                                      weights_only=True)["model"])
            if self.master:
                why = f"stopped early: no better held-out loss in {s.patience} evaluations" \
                    if self.step < self.steps else "the step cap was reached"
                print(f"{self.desc}: {why}; kept the weights of step {best['step']} "
                      f"(held-out loss {best['loss']:.4f})")
        if self.master:
            self.checkpoint(self.final_path, done=True)
            for path in (self.ckpt_path, self.prev_path, self.best_path):
                if path.exists():
                    path.unlink()
        return evals


def stalled(losses, step, patience, min_steps=0):
    """Early stopping's rule: True when the last `patience` held-out losses all failed to beat the best
    before them, and the run has done at least `min_steps` steps.

    subtle: a small masked LM trained from scratch first sits on the unigram plateau, where its held-out
    loss can *rise* for hundreds of steps (it memorises token frequencies of its batches) before it
    learns from context and falls far below (../shared/CALIBRATION.md items 6-8). A patience shorter
    than that bump stops the run inside it; min_steps is the guard."""
    if step < min_steps or not 0 < patience < len(losses):
        return False
    return min(losses[-patience:]) >= min(losses[:-patience])


# ----------------------------------------------------------------------------------------------------
# Checkpoints: written atomically, read with weights_only, compared with the run's settings
# ----------------------------------------------------------------------------------------------------
def save_atomic(obj, path):
    """torch.save through bert.atomic_write (temp file, fsync, rename): never half a checkpoint."""
    bert.atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, run_config):
    """torch.load(weights_only=True: tensors and plain containers only, no pickled code) and check that the
    checkpoint was made by the same run configuration, naming every difference if not."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["config"], state["model"]
    except Exception as e:  # (torch.load's errors for a cut-short zip, a foreign file, ... vary)
        reason = (str(e).strip().splitlines() or [""])[0].split(". ")[0][:150]  # its first sentence
        raise CheckpointUnreadableError(f"{path} is not a readable checkpoint "
                                        f"({type(e).__name__}: {reason})") \
            from None
    diffs = config_differences(state["config"], run_config)
    if diffs:
        raise CheckpointMismatchError(f"{path} was made by another configuration:\n  " + "\n  ".join(diffs)
                                      + f"\n(delete {Path(path).parent} to start over)")
    return state


# Run-config keys added after checkpoints were first written, with the value that older checkpoints
# (which lack the key) were made with: such a checkpoint still loads and resumes.
CONFIG_ADDED = {"patience": 0, "span_masking": False, "min_steps": 0}


def _flat(d, prefix=""):
    """{"model": {"hidden_size": 8}} -> {"model.hidden_size": 8}: a difference names the one setting."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_differences(saved, current):
    saved = {**{k: v for k, v in CONFIG_ADDED.items() if k in current}, **saved}
    saved, current = _flat(saved), _flat(current)
    keys = sorted(set(saved) | set(current))
    return [f"{k}: checkpoint {saved.get(k, '<absent>')!r} vs now {current.get(k, '<absent>')!r}"
            for k in keys if saved.get(k, "<absent>") != current.get(k, "<absent>")]


def _flatten_py_state(st):
    # random.getstate() -> (version, tuple of 625 ints, gauss_next); stored as a flat list of ints.
    return [st[0], *st[1], -1 if st[2] is None else st[2]]


def _to_py_state(flat):
    flat = list(flat)
    return (flat[0], tuple(flat[1:-1]), None if flat[-1] == -1 else flat[-1])


# ----------------------------------------------------------------------------------------------------
# The JSONL log, the output folder's lock
# ----------------------------------------------------------------------------------------------------
def _log(path, record):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")


def read_log(path):
    """The records of a JSONL log; a line cut short by a kill is skipped."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def _truncate_log(path, step):
    """Drop log lines written after `step` (a killed run's lines past its checkpoint: they will be
    written again), so that every step is logged exactly once."""
    if path.exists():
        kept = [r for r in read_log(path) if r["step"] <= step]
        path.write_text("".join(json.dumps(r) + "\n" for r in kept))


@contextlib.contextmanager
def output_lock(out_dir):
    """One run per output folder: out_dir/.lock holds the process id of the run using it (rank 0's under
    torchrun), so that two processes never write the same checkpoints. A lock whose process is gone (a
    killed run) is taken over; a live one is an OutputInUseError."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    path = Path(out_dir) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # atomic: one process wins
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _alive(pid):
                raise OutputInUseError(f"{out_dir} is in use by another run (process {pid}): wait for it to "
                                       f"finish, stop it, or choose another --out_dir") from None
            path.unlink(missing_ok=True)  # stale (its run was killed): take it over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def _alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


# ----------------------------------------------------------------------------------------------------
# Text in, and what is derived from it cached: documents, token ids, tokenizers
# ----------------------------------------------------------------------------------------------------
def read_text(path, encoding="utf-8-sig"):
    """The text of a UTF-8 file (a byte-order mark at its start dropped); bytes that are not UTF-8 are a
    ValueError naming the file and line, and what to do: a file cut inside its last character (a copy
    cut short) needs those bytes dropped, any other needs converting."""
    path = Path(path)
    try:
        return path.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        raw = path.read_bytes()
        line = raw.count(b"\n", 0, e.start) + 1
        where = f"{path}: line {line} is not UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})"
        if e.reason == "unexpected end of data":  # a multi-byte character cut at the end of the file
            raise ValueError(f"{where}: the file ends inside a character (cut short?); drop its last "
                             f"{len(raw) - e.start} byte(s), e.g. head -c {e.start} FILE > FIXED") from None
        raise ValueError(f"{where}; save the text as UTF-8 (e.g. iconv -t utf-8)") from None


def read_documents(path, doc_format="line"):
    """Documents of a plain-text file. doc_format="line": one document per line (empty lines skipped);
    "blank": documents separated by blank lines (lines inside a document are joined with spaces)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    text = read_text(path)
    if doc_format == "line":
        docs = [ln.strip() for ln in text.splitlines()]
    elif doc_format == "blank":
        blocks = re.split(r"\n[ \t\r\f\v]*\n", text)  # one or more blank (or whitespace-only) lines
        docs = [" ".join(ln.strip() for ln in block.splitlines() if ln.strip()) for block in blocks]
    else:
        raise ValueError(f"doc_format must be 'line' or 'blank', got {doc_format!r}")
    docs = [d for d in docs if d.strip()]
    if not docs:
        raise ValueError(f"corpus {path} contains no text")
    return docs


def tokenize_documents(docs, tok, cache_dir=None, key=""):
    """Token ids of every document, as (flat ids, offsets): document i is ids[offsets[i]:offsets[i+1]].
    Stored with the smallest unsigned dtype that fits the vocabulary. With cache_dir, the result is saved
    as .npz keyed by the documents and the tokenizer, and a rerun loads it instead of re-tokenizing."""
    h = hashlib.sha256(("\n".join(docs) + "\x00" + key).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"tokens-{h}.npz" if cache_dir else None
    if path is not None and path.exists():
        cached = _read_token_cache(path, len(docs), len(tok))
        if cached is not None:
            return cached
    encode_batch = getattr(tok, "encode_batch", None)
    chunks = []
    step = 2000
    for i in tqdm(range(0, len(docs), step), desc="tokenize", unit="chunk", leave=False,
                  disable=len(docs) <= step):
        part = docs[i:i + step]
        chunks.extend(encode_batch(part) if encode_batch else [tok.encode(d) for d in part])
    dtype = np.uint16 if len(tok) <= 2 ** 16 else np.uint32
    lengths = np.array([len(c) for c in chunks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = np.fromiter((t for c in chunks for t in c), dtype=dtype, count=int(offsets[-1]))
    if path is not None:  # (a unique temp file per writer: safe with several processes)
        bert.atomic_write(path, lambda f: np.savez(f, ids=ids, offsets=offsets))
    return ids, offsets


def get_tokenizer(s, docs, out_dir, name="tokenizer", kind=None, vocab_size=None):
    """Load s.tokenizer_dir, or the one cached in out_dir/name, or train one on the documents `docs`
    (the training documents only: the held-out text must not shape the vocabulary)."""
    if s.tokenizer_dir:
        return tokenizers_mod.load_tokenizer(s.tokenizer_dir)
    kind = kind or s.tokenizer
    vocab_size = vocab_size or s.vocab_size
    d = Path(out_dir) / name
    meta = {"docs_sha": hashlib.sha256("\n".join(docs).encode()).hexdigest()[:16], "kind": kind,
            "vocab_size": vocab_size}
    if (d / "meta.json").exists() and json.loads((d / "meta.json").read_text()) == meta:
        return tokenizers_mod.load_tokenizer(d)
    if int(os.environ.get("RANK", "0")) != 0:
        raise RuntimeError("internal: only rank 0 trains the tokenizer")
    print(f"training a {kind} tokenizer ({vocab_size} tokens) on {len(docs):,} documents ...")
    if kind == "bpe":
        tok = tokenizers_mod.BPETokenizer.train(docs, vocab_size, progress=True)
    elif kind == "wordpiece":
        # subtle: no lowercasing/accent stripping: NFD would split every Hangul syllable into jamo.
        tok = tokenizers_mod.WordPieceTokenizer.train(docs, vocab_size, lowercase=False, progress=True)
    else:
        raise ValueError(f"tokenizer must be 'bpe' or 'wordpiece', got {kind!r}")
    d.mkdir(parents=True, exist_ok=True)
    tok.save(d)
    (d / "meta.json").write_text(json.dumps(meta))
    return tok


def split_documents(s, train_path, valid_path=None):
    """(training documents, held-out documents). Without a held-out file, a fixed slice is held out: the
    last valid_fraction of the documents (at least one)."""
    docs = read_documents(train_path, s.doc_format)
    if valid_path:
        return docs, read_documents(valid_path, s.doc_format)
    if len(docs) < 2:
        raise ValueError(f"corpus {train_path} has {len(docs)} document(s); need >= 2 to hold one "
                         f"out for evaluation (or pass --valid_corpus)")
    k = max(1, int(round(len(docs) * s.valid_fraction)))
    return docs[:-k], docs[-k:]


def check_token_counts(s, train_path, docs, n_train, n_valid, held_out):
    """Both texts must give tokens, and a held-out slice (held_out: cut from the corpus) at least one
    sequence: else say how much text would do (one sequence's worth held out at this valid_fraction, at
    the corpus's own bytes per token)."""
    for part, n in (("train", n_train), ("valid", n_valid)):
        if n == 0:
            raise ValueError(f"the {part} text produced no tokens")
    if held_out and n_valid < s.max_len - 2:
        need = (s.max_len - 2) / s.valid_fraction * sum(len(d.encode()) for d in docs) / n_train
        raise ValueError(f"corpus {train_path} is too small: its held-out slice ({s.valid_fraction:.0%} of "
                         f"the documents) is {n_valid} tokens, less than one sequence of "
                         f"--max_len={s.max_len}; give it at least ~{max(1, round(need / 1000)):,} KB "
                         f"of text (or a --valid_corpus)")


def save_model(model, tok, directory):
    """The model in HF's layout with its tokenizer beside it (rank 0 only); the tokenizer's HF config
    learns the model's length, so HF tools truncate to what the positions allow."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    model.save_pretrained(directory)
    tok.save(directory)
    if isinstance(model.config, t5.T5Config):  # its sentinels <extra_id_N> join the tokenizer's files
        add_sentinels(directory, model.config.vocab_size)
    path = Path(directory) / "tokenizer_config.json"
    if path.exists() and hasattr(model.config, "max_len"):  # (XLNet, T5: relative positions, no length)
        config = json.loads(path.read_text(encoding="utf-8"))
        bert.atomic_write(path, json.dumps({**config, "model_max_length": model.config.max_len}, indent=2,
                                           ensure_ascii=False).encode())


def add_sentinels(directory, vocab_size, n=t5.N_SENTINELS):
    """T5's sentinels written into a saved tokenizer (t5.span_corruption's ids): <extra_id_i> gets id
    vocab_size - 1 - i (HF's order), and HF is told they are special (never split)."""
    d, names = Path(directory), [f"<extra_id_{i}>" for i in range(n)]
    special = names
    if (d / "vocab.json").exists():  # byte-level BPE: {token: id}
        vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
        vocab.update({t: vocab_size - 1 - i for i, t in enumerate(names)})
        bert.atomic_write(d / "vocab.json", json.dumps(vocab, ensure_ascii=False).encode())
        # subtle: as RoBERTa's <mask> (tokenizer.py), a sentinel takes the space before it: a span's
        # first token carries its word's space (Ġ), so the model never saw 'Ġ', '<extra_id_0>'
        special = [{"__type": "AddedToken", "content": t, "lstrip": True, "rstrip": False,
                    "normalized": False, "single_word": False, "special": True} for t in names]
    else:  # WordPiece: line k of vocab.txt is id k
        text = (d / "vocab.txt").read_text(encoding="utf-8") + "".join(t + "\n" for t in reversed(names))
        bert.atomic_write(d / "vocab.txt", text.encode())
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        config = {**json.loads((d / name).read_text(encoding="utf-8")), "additional_special_tokens": special}
        bert.atomic_write(d / name, json.dumps(config, indent=2, ensure_ascii=False).encode())


# ----------------------------------------------------------------------------------------------------
# Cache keys and checks: tokenizers, token ids, packed data, files
# ----------------------------------------------------------------------------------------------------
def fingerprint(tok):
    """A short hash of a tokenizer's saved files (vocabulary + merges): the tokenization cache key."""
    with tempfile.TemporaryDirectory() as d:
        tok.save(d)
        h = hashlib.sha256()
        for p in sorted(Path(d).iterdir()):
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:16]


def _read_token_cache(path, n_docs, vocab_size):
    """(ids, offsets) from a token cache if it is whole and fits (n_docs documents, ids below
    vocab_size); a cut-short or foreign file gets a warning and None: it is rebuilt, never used."""
    try:
        with np.load(path) as z:
            ids, offsets = z["ids"], z["offsets"]
        ok = (offsets.ndim == 1 and len(offsets) == n_docs + 1 and offsets[0] == 0
              and offsets[-1] == len(ids) and bool(np.all(np.diff(offsets) >= 0))
              and (len(ids) == 0 or int(ids.max()) < vocab_size))
    except Exception as e:  # (a cut-short .npz fails in zipfile, numpy or pickle, depending where)
        ok, why = False, f"{type(e).__name__}: {e}"
    else:
        why = "it does not match these documents and this tokenizer"
    if ok:
        return ids, offsets
    print(f"warning: token cache {path} is unusable ({why}); tokenizing again", file=sys.stderr)
    return None


def data_sha(*datasets):
    """A short hash of packed datasets: part of a run's identity, so a cache is never reused for
    other data."""
    h = hashlib.sha256()
    for d in datasets:
        for k in sorted(d):
            h.update(k.encode() + d[k].numpy().tobytes())
    return h.hexdigest()[:16]


def _file_sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]

