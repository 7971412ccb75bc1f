"""Benchmark tokenizer.py against Hugging Face `tokenizers`, measured in the same run.

  python bench/bench_tokenizer.py                      # first 4 MB of the English Bible, 8,000 tokens
  python bench/bench_tokenizer.py --mb 1 --vocab-size 4000

For BPE and WordPiece: training time, encoding speed (MB of UTF-8 per second; the cache of chunks is
cleared before each timed run, so the time includes working out every distinct chunk), and compression (bytes per token) on the training
text, ours and HF's, with the ratio ours/HF. HF's encode_batch uses all cores (Rust threads); ours is
one Python thread.
"""
import argparse
import os
import sys
import time

import regex

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tokenizer import BPETokenizer, WordPieceTokenizer  # noqa: E402

DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                            "en", "web_bible.txt")


REPEAT = 3


def timed(fn):
    """(result, best wall time of REPEAT runs): the best run is the least disturbed by other processes
    on a shared machine."""
    best = float("inf")
    for _ in range(REPEAT):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--path", default=DEFAULT_PATH, help="UTF-8 text file (default: %(default)s)")
    parser.add_argument("--mb", type=float, default=4.0, help="megabytes to read from its start")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--repeat", type=int, default=3, help="time each step this many times, keep the best")
    args = parser.parse_args()
    global REPEAT
    REPEAT = args.repeat

    with open(args.path, "rb") as f:
        text = f.read(int(args.mb * 1_000_000)).decode("utf-8", errors="ignore")
    # The Bible file is one 4 MB line. Cut it into sentences after each "." that precedes a space: that
    # is a pre-token boundary for both tokenizers, so every trainer sees exactly the chunks of the
    # whole text, and HF's encode_batch gets many inputs to spread over its threads.
    lines = [piece for piece in regex.split(r"(?<=\.)(?= )", text) if piece]
    assert "".join(lines) == text
    n_bytes = len(text.encode("utf-8"))
    mb = n_bytes / 1e6
    print(f"corpus: {os.path.normpath(args.path)}: {mb:.2f} MB as {len(lines):,} sentences; "
          f"vocab_size={args.vocab_size}; {os.cpu_count()} CPUs")
    from tokenizer import GPT2_SPLIT  # what the BPE trainer really works on: the distinct chunks
    print(f"distinct GPT-2 pre-token chunks: {len(set(regex.findall(GPT2_SPLIT, text))):,}; "
          f"each timing is the best of {REPEAT}")

    import tokenizers
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    rows = []

    # ---- byte-level BPE
    ours, ours_train = timed(lambda: BPETokenizer.train(lines, args.vocab_size))
    ours_ids, ours_enc = timed(lambda: (ours._cache.clear(), ours.encode_batch(lines))[1])
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=args.vocab_size, special_tokens=BPETokenizer.DEFAULT_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    _, hf_train = timed(lambda: hf.train_from_iterator(lines, trainer))
    hf_out, hf_enc = timed(lambda: hf.encode_batch(lines))
    same = "same ids" if {ours.id_to_token(i): i for i in range(len(ours))} == hf.get_vocab() else "differ"
    rows.append(("BPE", ours_train, hf_train, mb / ours_enc, mb / hf_enc,
                 n_bytes / sum(map(len, ours_ids)), n_bytes / sum(len(e.ids) for e in hf_out), same))

    # ---- WordPiece (uncased, as BERT-base-uncased)
    ours, ours_train = timed(lambda: WordPieceTokenizer.train(lines, args.vocab_size, lowercase=True))
    ours_ids, ours_enc = timed(lambda: (ours._cache.clear(), ours.encode_batch(lines))[1])
    hf = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    hf.normalizer = normalizers.BertNormalizer(lowercase=True)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=args.vocab_size, show_progress=False,
                                        special_tokens=WordPieceTokenizer.SPECIAL_TOKENS)
    _, hf_train = timed(lambda: hf.train_from_iterator(lines, trainer))
    hf_out, hf_enc = timed(lambda: hf.encode_batch(lines))
    diff = set(ours.id_to_token(i) for i in range(len(ours))) ^ set(hf.get_vocab())
    same = f"{len(diff)} tokens in only one"
    rows.append(("WordPiece", ours_train, hf_train, mb / ours_enc, mb / hf_enc,
                 n_bytes / sum(map(len, ours_ids)), n_bytes / sum(len(e.ids) for e in hf_out), same))

    print(f"{'':10} {'train s (ours / HF = ratio)':>30} {'encode MB/s (ours / HF = ratio)':>34} "
          f"{'bytes/token (ours / HF = ratio)':>34}  vocabularies")
    for name, t_o, t_h, e_o, e_h, c_o, c_h, same in rows:
        print(f"{name:10} {t_o:10.2f} / {t_h:5.2f} = {t_o / t_h:6.1f}x "
              f"{e_o:11.2f} / {e_h:5.2f} = {e_o / e_h:6.2f}x "
              f"{c_o:11.3f} / {c_h:5.3f} = {c_o / c_h:6.4f}  {same}")
    bpe = rows[0]
    print(f"targets: BPE training < 30 s: {bpe[1]:.2f} s ({'ok' if bpe[1] < 30 else 'MISSED'}); "
          f"encoding >= 1 MB/s: {bpe[3]:.2f} MB/s ({'ok' if bpe[3] >= 1 else 'MISSED'})")


if __name__ == "__main__":
    main()
