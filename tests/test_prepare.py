"""Fast tests of data/prepare.py on tiny fake inputs (both NSMC layouts and plain English text)."""
from pathlib import Path

import pytest

from conftest import load_script

prepare = load_script("data/prepare.py")

HEADER = "id\tdocument\tlabel\n"


def _nsmc_rows(prefix, n, start=0):
    """n rows id<TAB>document<TAB>label with distinct documents; one empty and one duplicate extra."""
    rows = [f"{i}\t{prefix} 리뷰 {i}번   정말 좋아요\t{i % 2}\n" for i in range(start, start + n)]
    rows.append(f"{start + n}\t\t1\n")  # empty document: dropped
    rows.append(rows[0])  # exact duplicate: dropped by dedup
    return rows


@pytest.fixture
def prepared(tmp_path):
    """Prepared layout: train.tsv, test.tsv, unlabeled.txt."""
    d = tmp_path / "nsmc"
    d.mkdir()
    (d / "train.tsv").write_text(HEADER + "".join(_nsmc_rows("학습", 40)), encoding="utf-8")
    test_rows = _nsmc_rows("시험", 20, start=1000)
    test_rows.append("2000\t겹치는 문장\t0\n")
    (d / "test.tsv").write_text(HEADER + "".join(test_rows), encoding="utf-8")
    unlabeled = [f"라벨 없는 리뷰 {i}\n" for i in range(30)] + ["\n", "   \n", "라벨 없는 리뷰 0\n",
                                                                 "겹치는   문장\n"]
    (d / "unlabeled.txt").write_text("".join(unlabeled), encoding="utf-8")
    return d


@pytest.fixture
def repo(tmp_path):
    """Layout of a clone of the NSMC GitHub repository: ratings_train.txt, ratings_test.txt."""
    d = tmp_path / "nsmc_repo"
    d.mkdir()
    (d / "ratings_train.txt").write_text(HEADER + "".join(_nsmc_rows("학습", 25)), encoding="utf-8")
    (d / "ratings_test.txt").write_text(HEADER + "".join(_nsmc_rows("시험", 10, 500)), encoding="utf-8")
    return d


def _lines(path):
    text = Path(path).read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert all(line.strip() and line == line.strip() for line in lines)  # no empty / padded lines
    return lines


def test_normalize():
    assert prepare.normalize("  a\t b\u00a0\n c  ") == "a b c"
    assert prepare.normalize("\u1100\u1161") == "\uac00"  # NFD jamo -> NFC syllable


def test_korean_prepared_layout(prepared, tmp_path):
    out = tmp_path / "out"
    written = prepare.build_korean(prepared, out, valid_lines=5, labelled=10, test=8, log=lambda *_: None)
    train, valid = _lines(out / "train.txt"), _lines(out / "valid.txt")
    assert len(valid) == 5
    docs = train + valid
    assert len(docs) == len(set(docs)) == 30 + 40  # unlabeled + train, dups and empties gone
    assert "학습 리뷰 3번 정말 좋아요" in docs  # whitespace normalised
    assert "겹치는 문장" not in docs  # also in test.tsv: kept out of the corpus
    assert not any(d.startswith("시험") for d in docs)  # test is not a default source
    assert written[str(out / "train.txt")] == (len(train), (out / "train.txt").stat().st_size)
    for name, n in (("labelled.tsv", 10), ("test.tsv", 8)):
        rows = (out / name).read_text(encoding="utf-8").splitlines()
        assert rows[0] == "text\tlabel" and len(rows) == n + 1
        assert all(len(r.split("\t")) == 2 and r.split("\t")[1] in {"0", "1"} for r in rows[1:])
    test_texts = {r.split("\t")[0] for r in (out / "test.tsv").read_text(encoding="utf-8").splitlines()}
    assert all(t.startswith("시험") or t == "겹치는 문장" or t == "text" for t in test_texts)


def test_korean_budget_seed_and_fixed_valid(prepared, tmp_path):
    quiet = dict(log=lambda *_: None, valid_lines=4, seed=3)
    prepare.build_korean(prepared, tmp_path / "a", max_bytes=600, **quiet)
    prepare.build_korean(prepared, tmp_path / "b", max_bytes=1500, **quiet)
    prepare.build_korean(prepared, tmp_path / "c", max_bytes=1500, **quiet)
    for name in "abc":
        size = sum((tmp_path / name / f).stat().st_size for f in ("train.txt", "valid.txt"))
        assert size <= (600 if name == "a" else 1500)
        assert size > (600 if name == "a" else 1500) - 60  # filled up to within one document
    # same seed -> identical output; a different budget keeps the same held-out lines
    assert _lines(tmp_path / "b" / "train.txt") == _lines(tmp_path / "c" / "train.txt")
    assert _lines(tmp_path / "a" / "valid.txt") == _lines(tmp_path / "b" / "valid.txt")


def test_korean_sources_and_no_dedup(prepared, tmp_path):
    out = tmp_path / "out"
    prepare.build_korean(prepared, out, sources=["test"], dedup=False, shuffle=False,
                         valid_fraction=0.25, log=lambda *_: None)
    docs = _lines(out / "train.txt") + _lines(out / "valid.txt")
    assert len(docs) == 22  # 20 + duplicate + "겹치는 문장"; empty one dropped
    assert len(_lines(out / "valid.txt")) == round(0.25 * 22)
    assert _lines(out / "valid.txt")[0] == "시험 리뷰 1000번 정말 좋아요"  # input order kept


def test_korean_repo_layout(repo, tmp_path):
    notes = []
    out = tmp_path / "out"
    prepare.build_korean(repo, out, valid_lines=2, labelled=5, test=5, log=notes.append)
    assert any("unlabeled" in n for n in notes)  # the missing unlabeled source is reported
    docs = _lines(out / "train.txt") + _lines(out / "valid.txt")
    assert len(docs) == 25 and all(d.startswith("학습") for d in docs)
    assert len((out / "test.tsv").read_text(encoding="utf-8").splitlines()) == 6


def test_english(tmp_path):
    text = ("Title\n\nThe first paragraph has two lines\nthat are joined into one document.\n\n"
            "   \n\nThe first paragraph has two lines that are joined into one document.\n\n"
            + " ".join(f"Sentence number {i} is here." for i in range(100)) + "\n")
    src = tmp_path / "book.txt"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / "en"
    prepare.build_english([src], out, max_doc_chars=300, valid_lines=1, shuffle=False,
                          log=lambda *_: None)
    docs = _lines(out / "valid.txt") + _lines(out / "train.txt")
    assert docs[0] == "The first paragraph has two lines that are joined into one document."
    assert "Title" not in docs and docs.count(docs[0]) == 1  # short line dropped, duplicate dropped
    long_pieces = docs[1:]
    assert len(long_pieces) > 5 and all(len(d) <= 300 and d.endswith(".") for d in long_pieces)
    assert " ".join(long_pieces) == " ".join(f"Sentence number {i} is here." for i in range(100))


def test_split_long_hard_cut():
    pieces = prepare.split_long("word " * 200, 50)
    assert all(len(p) <= 50 for p in pieces) and " ".join(pieces) == ("word " * 200).strip()


def test_errors(tmp_path, prepared):
    with pytest.raises(prepare.PrepareError, match="does not exist"):
        prepare.build_korean(tmp_path / "missing", tmp_path / "o")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(prepare.PrepareError, match="neither"):
        prepare.build_korean(tmp_path / "empty_dir", tmp_path / "o")
    with pytest.raises(prepare.PrepareError, match="no such file"):
        prepare.build_english([tmp_path / "missing.txt"], tmp_path / "o")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\nshort\n\n", encoding="utf-8")
    with pytest.raises(prepare.PrepareError, match="no documents"):
        prepare.build_english([empty], tmp_path / "o", log=lambda *_: None)
    with pytest.raises(prepare.PrepareError, match="no documents"):  # budget below one document
        prepare.build_korean(prepared, tmp_path / "o", max_bytes=5, log=lambda *_: None)
    with pytest.raises(prepare.PrepareError, match="unknown"):
        prepare.build_korean(prepared, tmp_path / "o", sources=["bogus"])


def test_cli(prepared, tmp_path, capsys):
    out = tmp_path / "cli"
    assert prepare.main(["korean", "--nsmc", str(prepared), "--out", str(out),
                         "--max-bytes", "2000", "--valid-lines", "3", "--labelled", "4"]) == 0
    printed = capsys.readouterr().out
    assert "train.txt" in printed and "valid.txt" in printed and "labelled.tsv" in printed
    assert prepare.main(["korean", "--nsmc", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
