"""What the training loop costs on top of the model: tokens/s of train.train_loop against the bare model
step (forward + backward + AdamW on a ready batch), same model, same batch size.

    python bench/bench_train.py              # CPU: vocab 8000, hidden 256, 4 layers, batch 16 x 128
    python bench/bench_train.py --steps 30

The loop adds, per step: picking the batch's rows (a fixed permutation per epoch), masking them
(mask_tokens: 80/10/10), the learning-rate schedule, gradient clipping, the non-finite check and logging.
The issue's bar: data loading and masking under 10% of the step time. We report it two ways: the
directly timed data + masking work per step, and the difference between a loop step and a bare step.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bert  # noqa: E402
import train  # noqa: E402

CONFIG = dict(vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
              intermediate_size=1024, max_position_embeddings=512)
SPECIAL = [0, 1, 2, 3, 4]  # <s> <pad> </s> <unk> <mask>


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=128)
    args = ap.parse_args()
    B, T, V = args.batch, args.seq, CONFIG["vocab_size"]
    g = torch.Generator().manual_seed(0)
    rows = torch.randint(5, V, (2000, T), generator=g)
    rows[:, 0], rows[:, -1] = 0, 2
    data = {"input_ids": rows, "attention_mask": torch.ones_like(rows)}
    info = {"mask_id": 4, "vocab_size": V, "special_ids": SPECIAL, "word_starts": None}
    s = train.parse_args([f"--batch_size={B}", f"--max_len={T}", "--eval_every=0", "--ckpt_every=0",
                          "--log_every=1000000"])

    # 1. data + masking alone, per step
    times = []
    for step in range(args.steps):
        t = time.perf_counter()
        idx = train.batch_indices(len(rows), step, B, s.seed)
        batch = {k: v[idx] for k, v in data.items()}
        train.mask_tokens(batch["input_ids"], mask_id=4, vocab_size=V, special_ids=SPECIAL,
                          generator=torch.Generator().manual_seed(step))
        times.append(time.perf_counter() - t)
    data_s = statistics.median(times)

    # 2. the bare step: a fixed masked batch, forward + backward + AdamW
    torch.manual_seed(0)
    model = bert.BertForMaskedLM(bert.BertConfig(**CONFIG))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
    inputs, labels = train.mask_tokens(rows[:B], mask_id=4, vocab_size=V, special_ids=SPECIAL, generator=g)
    bare = []
    for i in range(args.steps + 2):
        t = time.perf_counter()
        model(inputs, attention_mask=torch.ones_like(inputs), labels=labels).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            bare.append(time.perf_counter() - t)
    bare_s = statistics.median(bare)

    # 3. the whole loop (warm-up steps included in the mean, so this slightly favours the bare step)
    torch.manual_seed(0)
    model = bert.BertForMaskedLM(bert.BertConfig(**CONFIG))
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        train.train_loop(model, data, {k: v[:B] for k, v in data.items()}, out_dir=d, steps=args.steps + 2,
                         tok_info=info, s=s, desc="loop")
        loop_total = time.perf_counter() - t
    # not subtracted: the one final evaluation (a forward pass on B rows) and the final save, so the
    # overhead printed below is an upper bound
    loop_s = loop_total / (args.steps + 2)

    tok = B * T
    print(f"\nconfig: {CONFIG}, batch {B} x {T}, {torch.get_num_threads()} threads")
    print(f"data + masking per step : {data_s * 1e3:8.2f} ms  ({data_s / bare_s:.1%} of a bare step)")
    print(f"bare model step         : {bare_s * 1e3:8.1f} ms  {tok / bare_s:10,.0f} tokens/s")
    print(f"whole loop, per step    : {loop_s * 1e3:8.1f} ms  {tok / loop_s:10,.0f} tokens/s")
    print(f"loop overhead           : {(loop_s - bare_s) / loop_s:+.1%} of a loop step "
          f"(includes warm-up, one evaluation and the final save)")


if __name__ == "__main__":
    main()
