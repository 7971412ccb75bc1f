"""Training-step speed of bert.BertForMaskedLM against Hugging Face's BertForMaskedLM (SDPA attention).

    python bench/bench_bert.py            # CPU comparison; adds the GPU run when CUDA is available
    python bench/bench_bert.py --steps 10 # more timed steps

One step = forward + backward + AdamW update, same config, same weights, same batch, 15% of positions
labelled (the rest -100), dropout on (training mode) in both. Steps of the two models are interleaved so
that drifts in machine load hit both equally; the best step time is used (median shown too).

Model FLOPs utilisation (MFU, Chowdhery et al. 2022, arXiv:2204.02311, app. B) = the FLOPs the model
needs per step / step time / peak FLOP/s. FLOPs per step = 3 x forward FLOPs (the backward pass costs
about twice the forward), counting 2 FLOPs per multiply-add in the matrix products:
  per token and layer:  2 (4 H^2 + 2 H I)   Q, K, V, output projections and the MLP
                        + 4 T H              attention scores q k^T and the weighted sum of v
  per predicted token:  2 (H E + E V)        MLM transform and the vocabulary projection
Ours predicts only at the labelled positions, HF at all of them, so each side is credited with the FLOPs
its own algorithm needs. Peak on CPU: there is no reliable datasheet number for a cloud vCPU, so we
MEASURE the FLOP/s of a large fp32 matmul on the same threads and use that as the reference peak (so
"MFU" here means "fraction of the best matmul rate this machine reaches"). On GPU: the datasheet dense
bf16 peak when the device is known, else a measured bf16 matmul.
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bert  # noqa: E402

CPU_CONFIG = dict(vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                  intermediate_size=1024, max_position_embeddings=512)
GPU_CONFIG = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, max_position_embeddings=512)  # BERT-base
GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12,
                 "L40": 181e12, "4090": 165e12, "V100": 125e12}  # dense, no sparsity


def step_flops(c: dict, B: int, T: int, n_predicted: int) -> float:
    H, I, V, L = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
    per_token_layer = 2 * (4 * H * H + 2 * H * I) + 4 * T * H
    forward = B * T * L * per_token_layer + n_predicted * 2 * (H * H + H * V)
    return 3.0 * forward


def measured_matmul_flops(device: str, dtype: torch.dtype, n: int, reps: int) -> float:
    """Best FLOP/s of `reps` timed n x n x n matmuls (best, not mean: other load only slows it down)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def make_models(c: dict, device: str):
    """Build HF's model, and ours with exactly its weights (HF save -> our from_pretrained)."""
    import tempfile
    import warnings

    import transformers
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(transformers.BertConfig(**c, attn_implementation="sdpa"))
    assert hf.config._attn_implementation == "sdpa"
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = bert.BertForMaskedLM.from_pretrained(d)
    return ours.to(device).train(), hf.to(device).train()


def make_batch(c, B, T, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, c["vocab_size"], (B, T), generator=g)
    labels = torch.where(torch.rand(B, T, generator=g) < 0.15, ids, torch.full_like(ids, -100))
    return ids.to(device), torch.ones(B, T, dtype=torch.long, device=device), labels.to(device)


def bench(c, B, T, device, steps, warmup, autocast_dtype=None):
    ours, hf = make_models(c, device)
    ids, mask, labels = make_batch(c, B, T, device)
    n_pred = int((labels != -100).sum())
    fused = device == "cuda"
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=fused) for name, m in (("ours", ours), ("hf", hf))}

    def one_step(name):
        m, opt = (ours if name == "ours" else hf), opts[name]
        sync(device)
        t = time.perf_counter()
        with torch.autocast(device, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            if name == "ours":
                loss = m(ids, attention_mask=mask, labels=labels).loss
            else:
                loss = m(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        return time.perf_counter() - t

    times = {"ours": [], "hf": []}
    peak = 0.0  # the matmul reference is sampled between steps too, so it sees the same machine load
    for i in range(warmup + steps):
        for name in (("ours", "hf") if i % 2 == 0 else ("hf", "ours")):
            dt = one_step(name)
            if i >= warmup:
                times[name].append(dt)
        if device == "cpu":
            peak = max(peak, measured_matmul_flops("cpu", torch.float32, 2048, 2))
    # best-of (like timeit): other load on the machine only ever adds time, so the fastest step is the
    # most faithful estimate of each model's own cost; the median is printed next to it.
    return {k: min(v) for k, v in times.items()}, {k: statistics.median(v) for k, v in times.items()}, n_pred, peak


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown CPU"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per model")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU comparison")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads ({cpu_name()})")

    if not args.no_cpu:
        B, T = 16, 128
        c = CPU_CONFIG
        print(f"\nCPU, fp32: vocab {c['vocab_size']}, hidden {c['hidden_size']}, {c['num_hidden_layers']} layers, "
              f"{c['num_attention_heads']} heads, intermediate {c['intermediate_size']}, batch {B} x {T}, 15% labelled")
        peak = measured_matmul_flops("cpu", torch.float32, 2048, 8)
        t, med, n_pred, peak_during = bench(c, B, T, "cpu", args.steps, args.warmup)
        peak = max(peak, peak_during, measured_matmul_flops("cpu", torch.float32, 2048, 8))  # best seen
        print(f"reference peak = best measured fp32 2048^3 matmul: {peak / 1e9:.1f} GFLOP/s (not a datasheet number)")
        f_ours, f_hf = step_flops(c, B, T, n_pred), step_flops(c, B, T, B * T)
        for name, f in (("ours", f_ours), ("hf  ", f_hf)):
            dt = t[name.strip()]
            print(f"  {name}: {dt * 1e3:8.1f} ms/step (median {med[name.strip()] * 1e3:7.1f})  {B * T / dt:6.0f} tokens/s  "
                  f"{f / 1e9:5.1f} GFLOP/step  MFU {f / dt / peak:5.1%}")
        print(f"  speed ratio (HF time / our time): {t['hf'] / t['ours']:.2f}x")
        if f_ours / t["ours"] > peak:
            print("  (MFU > 100%: the matmul reference was slowed by other load on this machine; rerun when idle)")

    if torch.cuda.is_available():
        B, T = 32, 512
        c = GPU_CONFIG
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in GPU_PEAK_BF16.items() if k in name), None)
        how = "datasheet dense bf16"
        if peak is None:
            peak, how = measured_matmul_flops("cuda", torch.bfloat16, 8192, 10), "measured bf16 8192^3 matmul"
        print(f"\nGPU {name}, bf16 autocast: BERT-base (vocab 30522, hidden 768, 12 layers), batch {B} x {T}, "
              f"15% labelled; peak {peak / 1e12:.0f} TFLOP/s ({how})")
        t, med, n_pred, _ = bench(c, B, T, "cuda", args.steps, args.warmup, torch.bfloat16)
        f_ours, f_hf = step_flops(c, B, T, n_pred), step_flops(c, B, T, B * T)
        for nm, f in (("ours", f_ours), ("hf  ", f_hf)):
            dt = t[nm.strip()]
            print(f"  {nm}: {dt * 1e3:8.1f} ms/step (median {med[nm.strip()] * 1e3:7.1f})  {B * T / dt:9.0f} tokens/s  "
                  f"MFU {f / dt / peak:5.1%}")
        print(f"  speed ratio (HF time / our time): {t['hf'] / t['ours']:.2f}x")
    else:
        print("\n(no CUDA device: GPU benchmark skipped)")


if __name__ == "__main__":
    main()
