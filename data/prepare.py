"""Build real pretraining corpora (one document per line, UTF-8) for bigger runs than the toy files.

Two sub-commands, both standard library only (tqdm is used for progress bars when it is installed):

  korean   Naver movie-review corpus (NSMC, CC0 / public domain). --nsmc is either
             * a clone of its GitHub repository: ratings_train.txt, ratings_test.txt
               (tab-separated id<TAB>document<TAB>label, one header line), or
             * the prepared layout (e.g. ../shared/data/nsmc): train.tsv, test.tsv (same columns and
               header) and unlabeled.txt (one review per line).
           --sources picks which documents feed the corpus: unlabeled, train, test (default
           "unlabeled,train"; unlabeled is skipped with a note when the folder has none). Unless "test"
           is among the sources, any review whose text also occurs in the test file is kept OUT of the
           corpus, so a model pretrained on it has never seen the fine-tuning test texts.
           --labelled N / --test N also write labelled TSV subsets (header "text<TAB>label") drawn at
           random (seeded) from the train / test files, for fine-tuning and evaluation.

  english  Any plain-text files. Paragraphs (separated by blank lines) become one line each, with the
           line breaks inside a paragraph joined by spaces. A paragraph longer than --max-doc-chars
           (e.g. a whole book on one line) is cut at sentence ends into documents of about that size.
           Documents shorter than --min-chars (headings, "ACT I", verse numbers) are dropped.

Both then do the same thing with the documents:
  normalise  Unicode NFC, every run of whitespace -> one space, strip; empty results are dropped;
  dedup      exact duplicates (after normalising) are dropped, first one kept (--no-dedup to keep);
  shuffle    with --seed (default 0; --no-shuffle keeps the input order);
  budget     documents are taken in that order until the next would push train+valid past
             --max-bytes (UTF-8 bytes, newlines included; 0 = no limit);
  split      the FIRST --valid-lines N (or round(--valid-fraction F * taken)) of the taken documents go
             to valid.txt, the rest to train.txt. With a fixed seed and a fixed count, the held-out set
             does not change when only the budget changes (it is a prefix of the same shuffle).

Outputs, in the folder --out (created if needed):
  train.txt, valid.txt          one document per line, each line ends with "\n"
  labelled.tsv, test.tsv        korean only, when --labelled / --test are given

Usage (from the repository root):
  python data/prepare.py korean --nsmc ../shared/data/nsmc --out out/corpus/ko --max-bytes 1600000 \
      --labelled 20000 --test 5000
  python data/prepare.py english ../shared/data/en/web_bible.txt --out out/corpus/en --max-bytes 4000000

Each run prints, for every file written, its path, lines and bytes. A missing path, an unknown folder
layout or an empty result stops it with "error: ..." and exit status 2.
"""
from __future__ import annotations

import argparse
import random
import re
import sys
import unicodedata
from pathlib import Path
from typing import Iterable, Iterator

try:  # optional progress bars
    from tqdm import tqdm as _tqdm
except ImportError:  # pragma: no cover - tqdm is in requirements.txt, but the script must not need it
    _tqdm = None

KOREAN_SOURCES = ("unlabeled", "train", "test")


class PrepareError(Exception):
    """A problem with the inputs or the result (missing path, unknown layout, nothing left)."""


# --------------------------------------------------------------------------------------------------
# small helpers

def _progress(iterable: Iterable, desc: str) -> Iterable:
    """Wrap in a tqdm bar when tqdm is installed and stderr is a terminal; otherwise return as is."""
    if _tqdm is None or not sys.stderr.isatty():
        return iterable
    return _tqdm(iterable, desc=desc, unit=" lines", leave=False)


def normalize(text: str) -> str:
    """NFC, collapse every run of whitespace (tabs, newlines, NBSP, ...) to one space, strip."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def nbytes(line: str) -> int:
    """Size of `line` as written: UTF-8 bytes plus the newline."""
    return len(line.encode("utf-8")) + 1


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise PrepareError(f"no such file: {path}")
    return path


# --------------------------------------------------------------------------------------------------
# Korean: NSMC

def find_nsmc(nsmc_dir: str | Path) -> dict[str, Path]:
    """Locate the NSMC files in `nsmc_dir`, in either layout.

    Returns {"train": path, "test": path} plus "unlabeled" when the prepared layout has it.
    """
    root = Path(nsmc_dir)
    if not root.exists():
        raise PrepareError(f"NSMC path does not exist: {root}")
    if not root.is_dir():
        raise PrepareError(f"NSMC path is not a folder: {root}")
    if (root / "train.tsv").is_file():  # prepared layout
        files = {"train": root / "train.tsv", "test": _require_file(root / "test.tsv")}
        if (root / "unlabeled.txt").is_file():
            files["unlabeled"] = root / "unlabeled.txt"
        return files
    if (root / "ratings_train.txt").is_file():  # clone of the GitHub repository
        return {"train": root / "ratings_train.txt", "test": _require_file(root / "ratings_test.txt")}
    raise PrepareError(f"{root} has neither train.tsv/test.tsv (prepared layout) "
                       "nor ratings_train.txt/ratings_test.txt (NSMC repository)")


def read_nsmc_rows(path: str | Path) -> Iterator[tuple[str, str]]:
    """Yield (normalised document, label) from an NSMC file: id<TAB>document<TAB>label, header first.

    The files are not CSV-quoted (a review may contain a bare quote), so lines are split on tabs by
    hand. Rows without exactly three fields or with an empty document are skipped.
    """
    with open(_require_file(Path(path)), encoding="utf-8-sig") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        if header[:2] != ["id", "document"]:
            raise PrepareError(f"{path}: expected a header 'id<TAB>document<TAB>label', got {header!r}")
        for line in _progress(f, Path(path).name):
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) != 3:
                continue
            doc = normalize(parts[1])
            if doc:
                yield doc, parts[2].strip()


def read_lines(path: str | Path) -> Iterator[str]:
    """Yield the normalised non-empty lines of a one-document-per-line file."""
    with open(_require_file(Path(path)), encoding="utf-8-sig") as f:
        for line in _progress(f, Path(path).name):
            doc = normalize(line)
            if doc:
                yield doc


def korean_documents(files: dict[str, Path], sources: Iterable[str]) -> Iterator[str]:
    """Documents from the chosen NSMC sources, in the order given (labels are ignored)."""
    for source in sources:
        if source == "unlabeled":
            yield from read_lines(files["unlabeled"])
        else:
            yield from (doc for doc, _ in read_nsmc_rows(files[source]))


def sample_labelled(path: str | Path, n: int, seed: int) -> list[tuple[str, str]]:
    """`n` random (text, label) rows of an NSMC file, duplicates of a text dropped, seeded."""
    rows, seen = [], set()
    for doc, label in read_nsmc_rows(path):
        if doc not in seen:
            seen.add(doc)
            rows.append((doc, label))
    random.Random(seed).shuffle(rows)
    return rows[:n]


# --------------------------------------------------------------------------------------------------
# English: plain text files

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


def split_long(text: str, max_chars: int) -> list[str]:
    """Cut `text` into pieces of at most about `max_chars`, at sentence ends where possible
    (a single sentence longer than that is cut at spaces)."""
    if max_chars <= 0 or len(text) <= max_chars:
        return [text]
    pieces: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(text):
        while len(sentence) > max_chars:  # an overlong "sentence": cut at the last space that fits
            cut = sentence.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            if current:
                pieces.append(current)
                current = ""
            pieces.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        if current and len(current) + 1 + len(sentence) > max_chars:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        pieces.append(current)
    return [p for p in pieces if p]


def english_documents(paths: Iterable[str | Path], min_chars: int = 40,
                      max_doc_chars: int = 2000) -> Iterator[str]:
    """Paragraphs of the given text files, one normalised document each (long ones split)."""
    for path in paths:
        text = _require_file(Path(path)).read_text(encoding="utf-8-sig", errors="replace")
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        for paragraph in _PARAGRAPH_BREAK.split(text):
            paragraph = normalize(paragraph)
            for doc in split_long(paragraph, max_doc_chars):
                if len(doc) >= min_chars:
                    yield doc


# --------------------------------------------------------------------------------------------------
# shared: select, split, write

def select(docs: Iterable[str], *, max_bytes: int = 0, dedup: bool = True, shuffle: bool = True,
           seed: int = 0, min_chars: int = 1, exclude: set[str] | None = None
           ) -> tuple[list[str], dict[str, int]]:
    """Filter, dedup, shuffle and cut `docs` to the byte budget. Returns (documents, counts)."""
    stats = {"read": 0, "short": 0, "duplicate": 0, "excluded": 0, "over_budget": 0}
    pool: list[str] = []
    seen: set[str] = set()
    for doc in docs:
        stats["read"] += 1
        doc = normalize(doc)
        if len(doc) < max(min_chars, 1):
            stats["short"] += 1
        elif exclude and doc in exclude:
            stats["excluded"] += 1
        elif dedup and doc in seen:
            stats["duplicate"] += 1
        else:
            seen.add(doc)
            pool.append(doc)
    if shuffle:
        random.Random(seed).shuffle(pool)
    taken, used = [], 0
    for doc in pool:
        size = nbytes(doc)
        if max_bytes and used + size > max_bytes:
            break  # stop at the first that does not fit, so the result is a prefix of the shuffle
        taken.append(doc)
        used += size
    stats["over_budget"] = len(pool) - len(taken)
    return taken, stats


def split_valid(docs: list[str], valid_lines: int | None = None,
                valid_fraction: float | None = None) -> tuple[list[str], list[str]]:
    """(train, valid): valid is the first `valid_lines` documents (or that fraction, rounded)."""
    if valid_lines is None:
        valid_lines = round((valid_fraction or 0.0) * len(docs))
    if valid_lines < 0:
        raise PrepareError("the held-out size must not be negative")
    if valid_lines >= len(docs) and docs:
        raise PrepareError(f"held-out split of {valid_lines} lines leaves nothing to train on "
                           f"({len(docs)} documents in the budget)")
    return docs[valid_lines:], docs[:valid_lines]


def write_lines(path: Path, lines: Iterable[str]) -> tuple[int, int]:
    """Write one line per item (each ends with a newline). Returns (lines, bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")
            n += 1
    return n, path.stat().st_size


def write_tsv(path: Path, rows: Iterable[tuple[str, str]]) -> tuple[int, int]:
    """Write a text<TAB>label file with a header line. Returns (rows without the header, bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("text\tlabel\n")
        for text, label in rows:
            f.write(f"{normalize(text)}\t{label}\n")  # normalize() removes any tab inside the text
            n += 1
    return n, path.stat().st_size


def _write_corpus(docs: list[str], out: Path, valid_lines: int | None,
                  valid_fraction: float | None) -> dict[str, tuple[int, int]]:
    if not docs:
        raise PrepareError("no documents left after filtering (empty input, or --max-bytes too small)")
    train, valid = split_valid(docs, valid_lines, valid_fraction)
    return {str(out / "train.txt"): write_lines(out / "train.txt", train),
            str(out / "valid.txt"): write_lines(out / "valid.txt", valid)}


# --------------------------------------------------------------------------------------------------
# the two builds (also what the tests call)

def build_korean(nsmc: str | Path, out: str | Path, *, sources: Iterable[str] = ("unlabeled", "train"),
                 max_bytes: int = 0, dedup: bool = True, shuffle: bool = True, seed: int = 0,
                 min_chars: int = 1, valid_lines: int | None = None, valid_fraction: float | None = 0.05,
                 labelled: int = 0, test: int = 0, log=print) -> dict[str, tuple[int, int]]:
    """Write train.txt / valid.txt (and labelled.tsv / test.tsv) under `out`. Returns
    {path: (lines, bytes)} for every file written."""
    files = find_nsmc(nsmc)
    out = Path(out)
    sources = list(dict.fromkeys(sources))
    unknown = [s for s in sources if s not in KOREAN_SOURCES]
    if unknown or not sources:
        raise PrepareError(f"unknown or no sources {unknown or sources}; choose from {KOREAN_SOURCES}")
    if "unlabeled" in sources and "unlabeled" not in files:
        log(f"note: {nsmc} has no unlabeled.txt (repository layout); using {[s for s in sources if s != 'unlabeled']}")
        sources = [s for s in sources if s != "unlabeled"]
        if not sources:
            raise PrepareError("no sources left: the only one asked for, unlabeled, is missing")
    exclude = None
    if "test" not in sources:  # keep fine-tuning test reviews out of the pretraining text
        exclude = {doc for doc, _ in read_nsmc_rows(files["test"])}
    docs, stats = select(korean_documents(files, sources), max_bytes=max_bytes, dedup=dedup,
                         shuffle=shuffle, seed=seed, min_chars=min_chars, exclude=exclude)
    log(f"korean: sources {','.join(sources)}: read {stats['read']}, dropped {stats['short']} short, "
        f"{stats['excluded']} also in the test file, {stats['duplicate']} duplicates; "
        f"{stats['over_budget']} over the budget")
    written = _write_corpus(docs, out, valid_lines, valid_fraction)
    if labelled:
        rows = sample_labelled(files["train"], labelled, seed)
        written[str(out / "labelled.tsv")] = write_tsv(out / "labelled.tsv", rows)
    if test:
        rows = sample_labelled(files["test"], test, seed)
        written[str(out / "test.tsv")] = write_tsv(out / "test.tsv", rows)
    return written


def build_english(paths: Iterable[str | Path], out: str | Path, *, max_bytes: int = 0,
                  dedup: bool = True, shuffle: bool = True, seed: int = 0, min_chars: int = 40,
                  max_doc_chars: int = 2000, valid_lines: int | None = None,
                  valid_fraction: float | None = 0.05, log=print) -> dict[str, tuple[int, int]]:
    """Write train.txt / valid.txt under `out` from plain-text files. Returns {path: (lines, bytes)}."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise PrepareError("no input files given")
    for p in paths:
        _require_file(p)
    docs, stats = select(english_documents(paths, min_chars, max_doc_chars), max_bytes=max_bytes,
                         dedup=dedup, shuffle=shuffle, seed=seed, min_chars=min_chars)
    log(f"english: {len(paths)} file(s): {stats['read']} paragraphs/pieces, {stats['duplicate']} "
        f"duplicates dropped; {stats['over_budget']} over the budget")
    return _write_corpus(docs, Path(out), valid_lines, valid_fraction)


# --------------------------------------------------------------------------------------------------
# command line

def _add_common(p: argparse.ArgumentParser, min_chars: int) -> None:
    p.add_argument("--out", required=True, help="output folder (train.txt, valid.txt, ...)")
    p.add_argument("--max-bytes", type=int, default=0,
                   help="budget for train.txt + valid.txt in UTF-8 bytes, newlines included (0 = all)")
    held = p.add_mutually_exclusive_group()
    held.add_argument("--valid-lines", type=int, default=None, metavar="N",
                      help="held-out documents written to valid.txt")
    held.add_argument("--valid-fraction", type=float, default=0.05, metavar="F",
                      help="held-out share when --valid-lines is not given (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="shuffling / sampling seed (default 0)")
    p.add_argument("--no-shuffle", dest="shuffle", action="store_false", help="keep the input order")
    p.add_argument("--no-dedup", dest="dedup", action="store_false", help="keep exact duplicates")
    p.add_argument("--min-chars", type=int, default=min_chars,
                   help=f"drop documents shorter than this many characters (default {min_chars})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    ko = sub.add_parser("korean", help="NSMC movie reviews -> Korean corpus (+ labelled TSVs)")
    ko.add_argument("--nsmc", required=True,
                    help="NSMC folder: prepared layout (train.tsv, test.tsv, unlabeled.txt) "
                         "or a clone of the GitHub repository (ratings_train.txt, ratings_test.txt)")
    ko.add_argument("--sources", default="unlabeled,train",
                    help="comma-separated, from unlabeled,train,test (default unlabeled,train; "
                         "without test, reviews found in the test file are excluded)")
    ko.add_argument("--labelled", type=int, default=0, metavar="N",
                    help="also write labelled.tsv: N random rows of the train file (text<TAB>label)")
    ko.add_argument("--test", type=int, default=0, metavar="N",
                    help="also write test.tsv: N random rows of the test file (text<TAB>label)")
    _add_common(ko, min_chars=1)

    en = sub.add_parser("english", help="plain-text files -> English corpus")
    en.add_argument("files", nargs="+", help="UTF-8 text files; blank lines separate paragraphs")
    en.add_argument("--max-doc-chars", type=int, default=2000,
                    help="split longer paragraphs at sentence ends (default 2000; 0 = never)")
    _add_common(en, min_chars=40)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    common = dict(max_bytes=args.max_bytes, dedup=args.dedup, shuffle=args.shuffle, seed=args.seed,
                  min_chars=args.min_chars, valid_lines=args.valid_lines,
                  valid_fraction=args.valid_fraction)
    try:
        if args.command == "korean":
            sources = [s.strip() for s in args.sources.split(",") if s.strip()]
            written = build_korean(args.nsmc, args.out, sources=sources, labelled=args.labelled,
                                   test=args.test, **common)
        else:
            written = build_english(args.files, args.out, max_doc_chars=args.max_doc_chars, **common)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    width = max(len(p) for p in written)
    for path, (lines, size) in written.items():
        unit = "rows + header" if path.endswith(".tsv") else "lines"
        print(f"wrote {path:<{width}}  {lines:>8} {unit:<13}  {size:>11,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
