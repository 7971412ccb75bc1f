"""
The single-GPU path, proved in one prepared command: correctness, speed, the demo and XPT at GPU scale.

    python bench/gpu_check.py --prepare           # on the CPU machine first: out/gpu_inputs/ (Korean, caches)
    python bench/gpu_check.py --out=DIR           # on the GPU machine: every part, about 6 minutes at most
    python bench/gpu_check.py --out=DIR --parts=2,4   # a subset (a rerun of what failed)
    python bench/gpu_check.py --smoke --out=DIR   # on a CPU: every part at toy sizes, < 60 s (the test)

GPU machines come rarely and briefly (about 15 minutes, start-up included), as a bare machine with
PyTorch, transformers, numpy, regex and tqdm and nothing to download. So everything worth knowing is asked
in one go, each part in a process of its own with its own time cap: a part that fails, hangs or crashes
the CUDA context is recorded, and the next part still runs.

  1 correctness  bert.BertForMaskedLM (a small odd-sized config and a random BERT-base) on the GPU against
                 the same weights on the CPU: hidden states and loss in fp32 (max |diff| <= TOL_FP32 on
                 the hidden states, relative loss difference <= TOL_FP32_LOSS) and under bf16 autocast
                 (mean |diff| <= TOL_BF16, relative loss difference <= TOL_BF16_LOSS); which SDPA kernel
                 ran (flash / memory-efficient / cuDNN / math) with and without a padding mask, read from
                 the profiler; five AdamW steps compiled (torch.compile) against eager, dropout off
                 (compiled code draws its own random numbers): losses within TOL_COMPILE.
  2 speed        training throughput (forward + backward + fused AdamW) of BERT-base at sequence length
                 128 under bf16 autocast, at a batch that fills the GPU: ours eager, ours compiled and
                 Hugging Face's BertForMaskedLM (SDPA attention) eager, in the same run: tokens/s,
                 sequences/s, MFU against the datasheet dense bf16 peak (bench/bench_bert.py's FLOP
                 count: each model credited with the FLOPs of its own algorithm). Goals on an
                 H100/H200-class GPU: MFU >= 40% for ours compiled and >= 2x HF eager (recorded as met or
                 not; they are goals, not pass/fail).
  3 demo         `python train.py` (the CPU demo, 600 Korean steps per arm; its tokenizers prepared by
                 --prepare): wall time and results next to the CPU's (bench/results/demo_default.json).
  4 xpt probe    bench/data_efficiency.py's gpu preset, one seed, two budgets, xpt and scratch, a few
                 hundred steps each, and one fine-tuning epoch: the step rates, and from them the full
                 preset's time projected two ways (every run to its step cap; runs stopping after as many
                 epochs as the cpu preset's runs did). Its Korean sample and tokenizer come from
                 --prepare (out/gpu_inputs/, a folder that travels with the working tree).

Writes DIR/gpu_check.json (every figure, the GPU's name, the torch version, which parts passed) and a
readable summary on stdout. Without CUDA (and without --smoke) it stops with a clear message, exit 2.
--smoke runs every part on the CPU at toy sizes (compile with the light "aot_eager" backend), so that
the script cannot rot between GPU visits: tests/test_gpu_check.py runs it.
"""
import argparse
import contextlib
import copy
import json
import math
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import torch  # noqa: E402

import bert  # noqa: E402

INPUTS = ROOT / "out" / "gpu_inputs"  # --prepare writes here; `run` carries it to the GPU machine
# Each part: name and time cap in seconds (GPU, smoke). The GPU caps add up to 6 minutes. The smoke caps
# are ~4x what the parts take on an idle 2-core machine: the suite runs them on loaded, slower ones too.
PARTS = {1: ("correctness", 50, 90), 2: ("speed", 120, 120), 3: ("demo", 100, 150), 4: ("xpt probe", 90, 120)}
TOL_FP32 = 1e-3        # max |hidden GPU - hidden CPU|, fp32 (different kernels, different summation order)
TOL_FP32_LOSS = 1e-4   # relative loss difference, fp32
TOL_BF16 = 2e-2        # mean |hidden bf16 - hidden fp32| (bf16 keeps 8 bits of mantissa: ~0.4% per rounding)
TOL_BF16_LOSS = 2e-2   # relative loss difference, bf16 autocast against fp32
TOL_COMPILE = 2e-3     # relative loss difference of each compiled step against eager
SMALL = dict(vocab_size=99, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
             max_position_embeddings=64)


def base_config():
    from bench_bert import GPU_CONFIG  # BERT-base
    return dict(GPU_CONFIG)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class Record:
    """One part's checks and figures, saved to out/part{n}.json after every check, so that a part killed
    at its time cap still leaves what it had measured."""

    def __init__(self, n, out):
        self.path, self.checks, self.figures = Path(out) / f"part{n}.json", [], {}
        self.head = {"part": n, "name": PARTS[n][0], "finished": False, "t0": time.time()}

    def check(self, name, ok, detail):
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})
        self.save()

    def save(self, **extra):
        r = {**self.head, **extra, "seconds": round(time.time() - self.head["t0"], 1), "checks": self.checks,
             "figures": self.figures}
        r["passed"] = r["finished"] and not r.get("error") and bool(self.checks) and all(c["ok"] for c in self.checks)
        bert.atomic_write(self.path, json.dumps(r, indent=1).encode())


def batch_for(c, B, T, device, seed=0, pad_row=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, c["vocab_size"], (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    if pad_row:
        mask[0, T // 2:] = 0  # one row half padding: the masked attention path
    labels = torch.where((torch.rand(B, T, generator=g) < 0.15) & (mask == 1), ids, torch.full_like(ids, -100))
    labels[-1, 0] = ids[-1, 0]  # at least one label
    return ids.to(device), mask.to(device), labels.to(device)


def autocast(device, enabled=True):
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


# ----------------------------------------------------------------------------------------------------
# Part 1: correctness
# ----------------------------------------------------------------------------------------------------
def sdpa_kernels(model, ids, mask, device):
    """Names of the scaled-dot-product-attention kernels one forward ran, from the profiler."""
    from torch.profiler import ProfilerActivity, profile
    with torch.no_grad(), autocast(device), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(ids, attention_mask=mask)
    names = sorted({e.key for e in prof.key_averages() if "scaled_dot_product" in e.key and "_attention" in e.key})
    kinds = [k for k, tag in (("cuDNN", "cudnn"), ("flash", "flash"), ("memory-efficient", "efficient"),
                              ("math", "math")) if any(tag in n for n in names)]
    return kinds, names


def part_correctness(rec, device, smoke, deadline, out):
    figures = rec.figures
    configs = {"small (vocab 99, hidden 64)": (SMALL, 3, 7)}
    if not smoke:
        configs["BERT-base (random weights)"] = (base_config(), 4, 128)
    for name, (c, B, T) in configs.items():
        torch.manual_seed(0)
        cpu_model = bert.BertForMaskedLM(bert.BertConfig(**c)).eval()
        model = copy.deepcopy(cpu_model).to(device)
        ids, mask, labels = batch_for(c, B, T, "cpu")
        with torch.no_grad():
            ref_h = cpu_model.bert(ids, mask)
            ref_loss = cpu_model(ids, mask, labels=labels).loss.item()
            dids, dmask, dlabels = ids.to(device), mask.to(device), labels.to(device)
            h = model.bert(dids, dmask).float().cpu()
            loss = model(dids, dmask, labels=dlabels).loss.item()
            with autocast(device):
                h16 = model.bert(dids, dmask).float().cpu()
                loss16 = model(dids, dmask, labels=dlabels).loss.float().item()
        real = mask.bool()  # padded positions' outputs are not used by anything
        f = {"fp32_max_abs_hidden": (h - ref_h)[real].abs().max().item(),
             "fp32_rel_loss": abs(loss - ref_loss) / abs(ref_loss),
             "bf16_mean_abs_hidden": (h16 - ref_h)[real].abs().mean().item(),
             "bf16_max_abs_hidden": (h16 - ref_h)[real].abs().max().item(),
             "bf16_rel_loss": abs(loss16 - ref_loss) / abs(ref_loss), "loss_cpu_fp32": ref_loss}
        rec.check(f"{name}: fp32 on {device} = CPU", f["fp32_max_abs_hidden"] <= TOL_FP32
                  and f["fp32_rel_loss"] <= TOL_FP32_LOSS,
                  f"max |dh| {f['fp32_max_abs_hidden']:.2e} (<= {TOL_FP32:g}), loss rel {f['fp32_rel_loss']:.2e}")
        rec.check(f"{name}: bf16 autocast ~ fp32", f["bf16_mean_abs_hidden"] <= TOL_BF16
                  and f["bf16_rel_loss"] <= TOL_BF16_LOSS,
                  f"mean |dh| {f['bf16_mean_abs_hidden']:.2e} (<= {TOL_BF16:g}), loss rel {f['bf16_rel_loss']:.2e}")
        for label, m in (("padding mask", dmask), ("no mask", None)):
            kinds, names = sdpa_kernels(model, dids, m, device)
            f[f"sdpa_{label.replace(' ', '_')}"] = {"kinds": kinds, "ops": names}
            rec.check(f"{name}: SDPA kernel ({label}, bf16)", bool(kinds), ", ".join(kinds) or "none seen")
        figures[name] = f
        del model, cpu_model
    # torch.compile: five AdamW steps against eager, dropout off (compiled code has its own RNG stream)
    c = dict(SMALL, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    backend = "aot_eager" if smoke else "inductor"
    losses = {}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        model = bert.BertForMaskedLM(bert.BertConfig(**c)).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        net = torch.compile(model, backend=backend) if mode == "compiled" else model
        losses[mode] = []
        for step in range(5):
            ids, mask, labels = batch_for(c, 3, 7, device, seed=step)
            loss = net(ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses[mode].append(loss.item())
    rel = max(abs(a - b) / abs(a) for a, b in zip(losses["eager"], losses["compiled"]))
    figures["compile"] = {"backend": backend, "losses": losses, "max_rel_diff": rel}
    rec.check(f"torch.compile ({backend}) = eager, 5 AdamW steps", rel <= TOL_COMPILE,
              f"max relative loss difference {rel:.2e} (<= {TOL_COMPILE:g})")


# ----------------------------------------------------------------------------------------------------
# Part 2: speed
# ----------------------------------------------------------------------------------------------------
def peak_flops(device):
    """(FLOP/s, how it was found): the datasheet dense bf16 peak of a known GPU, else a measured matmul."""
    from bench_bert import GPU_PEAK_BF16, measured_matmul_flops
    if torch.device(device).type == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)
        if peak is not None:
            return peak, f"datasheet dense bf16 ({name})"
        return measured_matmul_flops("cuda", torch.bfloat16, 8192, 10), "measured bf16 8192^3 matmul"
    return measured_matmul_flops("cpu", torch.float32, 512, 3), "measured fp32 512^3 matmul (smoke)"


def time_training(make_step, device, warmup, max_steps, seconds):
    """Seconds per step (median of the timed steps) and the number timed; warm-up steps (compilation
    happens there) are not timed."""
    for _ in range(warmup):
        make_step()
    sync(device)
    times, t_end = [], time.perf_counter() + seconds
    while len(times) < max_steps and (len(times) < 3 or time.perf_counter() < t_end):
        t = time.perf_counter()
        make_step()
        sync(device)
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2], len(times)


def part_speed(rec, device, smoke, deadline, out):
    from bench_bert import step_flops
    figures = rec.figures
    cuda = torch.device(device).type == "cuda"
    c = base_config() if not smoke else dict(SMALL, max_position_embeddings=128)
    T = 128 if not smoke else 16
    B = 256 if cuda else 4
    peak, how = peak_flops(device)
    figures.update(config="BERT-base" if not smoke else "small", seq_len=T, peak_flops=peak, peak_source=how,
                   dtype="bf16 autocast" if cuda else "fp32")
    variants = figures["variants"] = {}

    def ours(compiled):
        torch.manual_seed(0)
        model = bert.BertForMaskedLM(bert.BertConfig(**c)).to(device).train()
        net = torch.compile(model, backend="inductor" if cuda else "aot_eager") if compiled else model
        return model, lambda ids, mask, labels: net(ids, attention_mask=mask, labels=labels).loss

    def hf():
        import transformers
        torch.manual_seed(0)
        model = transformers.BertForMaskedLM(transformers.BertConfig(**c, attn_implementation="sdpa"))
        model = model.to(device).train()
        return model, lambda ids, mask, labels: model(input_ids=ids, attention_mask=mask, labels=labels).loss

    builders = [("ours eager", lambda: ours(False)), ("HF eager (sdpa)", hf), ("ours compiled", lambda: ours(True))]
    for i, (name, build) in enumerate(builders):
        left = deadline - time.time()
        if left < (3 if smoke else 10):
            variants[name] = {"error": "no time left in this part's cap"}
            continue
        try:
            model, loss_fn = build()
        except ImportError as e:
            variants[name] = {"error": f"not installed: {e}"}
            continue
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=cuda)
        ids, mask, labels = batch_for(c, B, T, device, pad_row=False)
        n_pred = int((labels != -100).sum())

        def step():
            with autocast(device, enabled=cuda):
                loss = loss_fn(ids, mask, labels)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            step.loss = loss

        # the last variant may use what is left; the others a share of it
        dt, n = time_training(step, device, warmup=1 if smoke else 3, max_steps=3 if smoke else 20,
                              seconds=min(15.0, left / (len(builders) - i) / 3))
        flops = step_flops(c, B, T, n_pred if name.startswith("ours") else B * T)
        variants[name] = {"ms_per_step": dt * 1e3, "steps_timed": n, "batch": B, "tokens_per_s": B * T / dt,
                          "sequences_per_s": B / dt, "mfu": flops / dt / peak, "loss": step.loss.item()}
        rec.check(f"{name}: finite loss", math.isfinite(step.loss.item()), f"{step.loss.item():.3f}")
        model = opt = loss_fn = None  # (the memory goes back before the next variant)
        if cuda:
            torch.cuda.empty_cache()
    fast, ref = variants.get("ours compiled", {}), variants.get("HF eager (sdpa)", {})
    if "ms_per_step" in fast and "ms_per_step" in ref:
        figures["speedup_vs_hf_eager"] = ref["ms_per_step"] / fast["ms_per_step"]
    figures["goals"] = {"mfu_ours_compiled_ge_40pct": fast.get("mfu", 0) >= 0.40,
                        "ours_compiled_ge_2x_hf_eager": figures.get("speedup_vs_hf_eager", 0) >= 2.0}
    ran = all("ms_per_step" in v or "not installed" in v.get("error", "") for v in variants.values())
    rec.check("every variant ran", ran, "; ".join(f"{k}: {v.get('error', 'ok')}" for k, v in variants.items()))


# ----------------------------------------------------------------------------------------------------
# Part 3: the demo
# ----------------------------------------------------------------------------------------------------
def part_demo(rec, device, smoke, deadline, out):
    figures = rec.figures
    # the run's checkpoints stay out of DIR (what DIR holds comes back from the GPU machine); its
    # results.json is copied there. Every call starts afresh (a rerun would read the cached stages).
    demo_out = out / "demo_run" if smoke else ROOT / "out" / "gpu_check_demo"
    shutil.rmtree(demo_out, ignore_errors=True)
    if not smoke and (INPUTS / "demo").exists():
        shutil.copytree(INPUTS / "demo", demo_out)  # the tokenizers, learned on the CPU machine
    cmd = [sys.executable, str(ROOT / "train.py"), f"--out_dir={demo_out}", f"--device={device}"]
    cmd += ["--preset=tiny", "--source_steps=4", "--phase1_steps=2", "--phase2_steps=4", "--eval_every=2"] if smoke else []
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(5.0, deadline - time.time()))
    figures["seconds"] = round(time.time() - t0, 1)
    figures["command"] = " ".join(["python", "train.py"] + cmd[2:])
    (out / "demo_output.txt").write_text(p.stdout + p.stderr, encoding="utf-8")
    rec.check("train.py exits 0", p.returncode == 0, f"exit {p.returncode}; output in demo_output.txt")
    results = next(demo_out.glob("demo*/results.json"), None)
    if results is None:
        rec.check("results.json written", False, "none")
        return
    shutil.copy(results, out / "demo_results.json")
    r = json.loads(results.read_text())
    x, s = r["arms"]["xpt"]["final"]["eval_loss"], r["arms"]["scratch"]["final"]["eval_loss"]
    figures.update(xpt=x, scratch=s, floor=r["unigram_loss"]["ko"], source=r["source"].get("final_loss"),
                   demo_seconds=r["seconds"])
    cpu = ROOT / "bench" / "results" / "demo_default.json"
    if not smoke and cpu.exists():
        c = json.loads(cpu.read_text())
        figures["cpu"] = {"xpt": c["arms"]["xpt"]["final"]["eval_loss"],
                          "scratch": c["arms"]["scratch"]["final"]["eval_loss"], "seconds": c["seconds"]}
        rec.check("XPT below the floor, as on the CPU", x < r["unigram_loss"]["ko"] - 0.1,
                  f"xpt {x:.3f} (CPU {figures['cpu']['xpt']:.3f}), floor {r['unigram_loss']['ko']:.3f}")


# ----------------------------------------------------------------------------------------------------
# Part 4: the data-efficiency experiment's GPU preset, probed
# ----------------------------------------------------------------------------------------------------
def _de():
    import data_efficiency
    return data_efficiency


def probe_settings(smoke, device):
    """(BenchSettings, the probe's preset): the gpu preset cut to one seed, two budgets, xpt and scratch,
    a few hundred steps. (smoke: the tiny preset on the repository's toy data.) --prepare and part 4
    must agree on it: the prepared caches are keyed by it."""
    de = _de()
    name = "tiny" if smoke else "gpu"
    p = dict(de.PRESETS[name])
    if smoke:  # (the first budget only: seconds count in the test)
        p.update(budgets=p["budgets"][:1], ft_budgets=p["budgets"][:1], seeds=(1,))
    else:
        p.update(budgets=(25_000, 100_000), seeds=(1,), lr_grid=(1e-3,), tokenizer_bytes=200_000,
                 phase1_steps=100, phase1_patience=0, max_steps=300, patience=0, ft_epochs=1)
    de.PRESETS[name] = p  # (this process only)
    b = de.BenchSettings(preset=name, out_dir=str(INPUTS / "data_efficiency") if not smoke else "",
                         nsmc=str(INPUTS / "nsmc"), device=device, workers=1)
    return b, p


def part_probe(rec, device, smoke, deadline, out):
    de = _de()
    figures = rec.figures
    b, p = probe_settings(smoke, device)
    if smoke:
        b.out_dir = str(out / "probe")
    elif not (INPUTS / "data_efficiency").exists():
        rec.check("prepared inputs", False, f"{INPUTS} is missing: run --prepare on the CPU machine")
        return
    with contextlib.redirect_stdout(sys.stderr):
        e = de.experiment(b)
    rates, lr, top = {}, p["lr_grid"][0], max(p["budgets"])
    # the larger budget first (its xpt encoder is the one fine-tuned); what the cap leaves out is skipped
    for x in sorted(p["budgets"], reverse=True):
        for method in ("xpt", "scratch"):
            if time.time() > deadline - 10:
                break
            r = de.run_arm(e, method, x, 1, lr)
            rates.setdefault(method, []).append(r["seconds"] / r["steps"])
            figures[f"{method} {x}"] = {"steps": r["steps"], "seconds": r["seconds"], "test_loss": r["test_loss"]}
            rec.save()
    rec.check("xpt and scratch arms ran", set(rates) == {"scratch", "xpt"}, f"{len(rates)} methods")
    if set(rates) != {"scratch", "xpt"}:
        return
    figures["sec_per_step"] = {m: min(v) for m, v in rates.items()}  # (the dev evaluations included)
    figures["tokens_per_byte"] = int(e.data[top]["attention_mask"].sum()) / top
    ft = de.run_finetune(e, de.arm_dir(e, "xpt", top, 1, lr) / "model", 1e-4, 1, "probe")
    figures["ft_seconds_per_epoch"] = ft["seconds"] / p["ft_epochs"]
    figures["projection"] = projection(figures, smoke)
    rec.check("fine-tuning and the projection", True, f"{figures['projection']}")

def projection(fig, smoke, full=None, epochs=None):
    """The full preset's time (bench/data_efficiency.py's plan: the lr grid at the grid budgets, then the
    seeds, then the other budgets) from the probe's rates (seconds per step, evaluations included), two
    ways: every run to its step cap (an upper bound), and every run stopping at the later of its
    min_steps (+ phase 1 for xpt) and `epochs` passes over its budget (the cpu preset's median xpt run,
    bench/results/data_efficiency_cpu.json; 30 without it)."""
    full = full or (_de().PRESETS["tiny"] if smoke else _full_gpu_preset())
    cpu = ROOT / "bench" / "results" / "data_efficiency_cpu.json"
    if epochs is None:
        epochs = 30.0
        c = json.loads(cpu.read_text()) if cpu.exists() else {}
        xr = [r for r in c.get("runs", []) if r.get("method") == "xpt" and "tokens" in c]
        if xr:
            cs = c["settings"]
            per = sorted(r["steps"] * cs["batch_size"] / (c["tokens"][str(r["budget_bytes"])] / cs["max_len"])
                         for r in xr)
            epochs = per[len(per) // 2]
    n_runs = {x: {m: (len(full["lr_grid"]) + len(full["seeds"]) - 1 if x in full["grid_budgets"][m]
                      else len(full["seeds"])) for m in ("xpt", "scratch") if x in full["arm_budgets"][m]}
              for x in sorted({x for xs in full["arm_budgets"].values() for x in xs})}
    cap_s = est_s = 0.0
    for x, ms in n_runs.items():
        sequences = x * fig["tokens_per_byte"] / full["max_len"]
        for m, n in ms.items():
            rate = fig["sec_per_step"][m]
            floor = full["min_steps"][m] + (full["phase1_steps"] if m == "xpt" else 0)
            cap_s += n * full["max_steps"] * rate
            est_s += n * min(full["max_steps"], max(floor, epochs * sequences / full["batch_size"])) * rate
    return {"runs": sum(n for ms in n_runs.values() for n in ms.values()), "epochs_per_run": round(epochs, 1),
            "seconds_cap": round(cap_s, 1), "seconds_estimate": round(est_s, 1),
            "hours_if_every_run_hits_the_cap": round(cap_s / 3600, 2), "hours_estimate": round(est_s / 3600, 2)}


def _full_gpu_preset():
    """The gpu preset as the file defines it (probe_settings cut it down in this process)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("_de_full", HERE / "data_efficiency.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.PRESETS["gpu"]


# ----------------------------------------------------------------------------------------------------
# --prepare (on the CPU machine), the parts' processes, the summary
# ----------------------------------------------------------------------------------------------------
def prepare(nsmc):
    """out/gpu_inputs/: a sample of NSMC in its own layout (enough for the probe's splits and budgets),
    the probe's corpora, Korean tokenizer and token caches, and the demo's tokenizers."""
    nsmc = Path(nsmc)
    if not (nsmc / "unlabeled.txt").exists():
        raise FileNotFoundError(f"{nsmc} has no unlabeled.txt (set --nsmc=FOLDER)")
    sample = INPUTS / "nsmc"
    sample.mkdir(parents=True, exist_ok=True)
    for name, n in (("unlabeled.txt", 12_000), ("train.tsv", 14_001), ("test.tsv", 6_001)):
        with open(nsmc / name, encoding="utf-8") as f:
            lines = [line for _, line in zip(range(n), f)]
        (sample / name).write_text("".join(lines), encoding="utf-8")
    b, _ = probe_settings(False, "cpu")
    _de().experiment(b)
    cmd = [sys.executable, str(ROOT / "train.py"), "--stage=tokenizers", f"--out_dir={INPUTS / 'demo'}"]
    subprocess.run(cmd, cwd=ROOT, check=True)
    size = sum(f.stat().st_size for f in INPUTS.rglob("*") if f.is_file())
    print(f"prepared {INPUTS}: {size / 1e6:.1f} MB (limit 50)")
    if size > 50e6:
        raise RuntimeError(f"{INPUTS} holds {size / 1e6:.0f} MB: more than the 50 MB that may travel")


def run_part(n, device, smoke, out):
    """The body of one part's process: its checks and figures to out/part{n}.json."""
    name, cap_gpu, cap_smoke = PARTS[n]
    deadline = time.time() + (cap_smoke if smoke else cap_gpu) - 5
    fn = {1: part_correctness, 2: part_speed, 3: part_demo, 4: part_probe}[n]
    if smoke:
        torch.set_num_threads(1)  # (two parts run at once on the CPU)
    rec = Record(n, out)
    try:
        fn(rec, device, smoke, deadline, out)
        error = None
    except Exception as e:  # recorded: the next part still runs
        error = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}"
    rec.head["finished"] = True
    rec.save(error=error)


def finish_part(n, out, status, cap, wall):
    """One part's record, from its part{n}.json (what it measured, even if it was killed at its cap)."""
    f = out / f"part{n}.json"
    r = json.loads(f.read_text()) if f.exists() else {"part": n, "name": PARTS[n][0], "passed": False, "checks": []}
    tail = (out / f"part{n}_output.txt").read_text(errors="replace")[-3000:]
    if not f.exists():
        r.update(error=f"{status}: no result\n{tail}", seconds=round(wall, 1))
    if status == "TIMEOUT":
        r.update(status=f"TIMEOUT after {cap} s (what it had measured is kept)", passed=False)
    r["wall_seconds"] = round(wall, 1)
    return r


def environment(device):
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": device,
           "date": time.strftime("%Y-%m-%d")}
    if torch.device(device).type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                   gpu_memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    try:
        import transformers
        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    return env


def summary_text(res):
    lines = [f"gpu_check: {res['environment'].get('gpu', res['environment']['device'])}, torch "
             f"{res['environment']['torch']}{' (smoke)' if res['smoke'] else ''}"]
    for n, r in sorted(res["parts"].items()):
        status = "passed" if r.get("passed") else r.get("status", "FAILED")
        lines.append(f"part {n} {r.get('name', '')}: {status} ({r.get('seconds', '?')} s)")
        for c in r.get("checks", []):
            lines.append(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['check']}: {c['detail']}")
        if r.get("error"):
            lines.append("  error: " + r["error"].splitlines()[0])
        f = r.get("figures", {})
        for name, v in f.get("variants", {}).items():
            if "ms_per_step" in v:
                lines.append(f"  {name}: {v['ms_per_step']:.1f} ms/step, {v['tokens_per_s']:,.0f} tokens/s, "
                             f"{v['sequences_per_s']:,.0f} seq/s, MFU {v['mfu']:.1%} (batch {v['batch']})")
        if "speedup_vs_hf_eager" in f:
            lines.append(f"  ours compiled / HF eager: {f['speedup_vs_hf_eager']:.2f}x; goals {f['goals']}")
        if "xpt" in f and "floor" in f:
            lines.append(f"  demo: xpt {f['xpt']:.3f}, scratch {f['scratch']:.3f}, floor {f['floor']:.3f}, "
                         f"{f['seconds']} s" + (f" (CPU: xpt {f['cpu']['xpt']:.3f}, {f['cpu']['seconds']} s)"
                                                if "cpu" in f else ""))
        if "projection" in f:
            lines.append(f"  probe: s/step {f['sec_per_step']}, projection {f['projection']}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--out", default="out/gpu_check", help="folder for gpu_check.json and the parts' files")
    ap.add_argument("--parts", default="1,2,3,4", help="which parts, e.g. 2,4")
    ap.add_argument("--smoke", action="store_true", help="every part on the CPU at toy sizes (< 60 s)")
    ap.add_argument("--prepare", action="store_true", help="write out/gpu_inputs/ (on the CPU machine)")
    ap.add_argument("--nsmc", default=str(ROOT.parent / "shared" / "data" / "nsmc"), help="for --prepare")
    ap.add_argument("--part", type=int, default=0, help=argparse.SUPPRESS)  # internal: one part's process
    a = ap.parse_args(argv)
    out = Path(a.out)
    device = "cpu" if a.smoke else "cuda"
    if a.part:
        run_part(a.part, device, a.smoke, out)
        return 0
    if a.prepare:
        prepare(a.nsmc)
        return 0
    try:
        parts = sorted({int(x) for x in a.parts.split(",") if x.strip()})
    except ValueError:
        parts = [0]
    if not parts or not set(parts) <= set(PARTS):
        print(f"error: --parts must be a comma-separated subset of {sorted(PARTS)}, got {a.parts!r}", file=sys.stderr)
        return 2
    if not a.smoke and not torch.cuda.is_available():
        print("error: CUDA is not available (torch.cuda.is_available() is False): this check needs a GPU; "
              "--smoke runs it on the CPU at toy sizes", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    res = {"smoke": a.smoke, "environment": environment(device), "tolerances": {
        "fp32_max_abs_hidden": TOL_FP32, "fp32_rel_loss": TOL_FP32_LOSS, "bf16_mean_abs_hidden": TOL_BF16,
        "bf16_rel_loss": TOL_BF16_LOSS, "compile_rel_loss": TOL_COMPILE}, "parts": {}}
    old = out / "gpu_check.json"
    if old.exists() and set(parts) != set(PARTS):  # a rerun of some parts keeps the others' results
        res["parts"] = {int(k): v for k, v in json.loads(old.read_text()).get("parts", {}).items()}
    # one part at a time on the GPU (they would skew each other's timings); two at once in a smoke run on
    # the CPU (one thread each: the test's time)
    jobs, pending, running = (2 if a.smoke else 1), list(parts), {}
    while pending or running:
        while pending and len(running) < jobs:
            n = pending.pop(0)
            cap = PARTS[n][2] if a.smoke else PARTS[n][1]
            (out / f"part{n}.json").unlink(missing_ok=True)
            log = open(out / f"part{n}_output.txt", "w")
            cmd = [sys.executable, str(Path(__file__).resolve()), f"--part={n}", f"--out={out}"] + ["--smoke"] * a.smoke
            print(f"part {n} ({PARTS[n][0]}, cap {cap} s) ...", flush=True)
            running[n] = (subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), log, time.time(), cap)
        time.sleep(0.1)
        for n, (proc, log, t0, cap) in list(running.items()):
            if proc.poll() is None and time.time() - t0 < cap + 10:
                continue
            status = f"exit {proc.returncode}" if proc.poll() is not None else "TIMEOUT"
            if status == "TIMEOUT":
                proc.kill()
                proc.wait()
            log.close()
            del running[n]
            res["parts"][n] = r = finish_part(n, out, status, cap, time.time() - t0)
            res["all_passed"] = all(p_.get("passed") for p_ in res["parts"].values())
            bert.atomic_write(out / "gpu_check.json", json.dumps(res, indent=1).encode())  # after every part
            print(summary_text({**res, "parts": {n: r}}).split("\n", 1)[1], flush=True)
    print("\n" + summary_text(res))
    print(f"\nwrote {out / 'gpu_check.json'}")
    return 0 if res["all_passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
