"""The Python examples in the README and in docs/ run as written."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
DOC_BLOCKS = [
    (f"{path.relative_to(ROOT)}[{i}]", block)
    for path in sorted((ROOT / "docs").glob("*.md"))
    for i, block in enumerate(re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S))
]


def _skip_without_extras(block: str) -> None:
    if "twiddle.torch" in block:
        pytest.importorskip("torch")  # the torch extra is optional
    if "jax" in block and importlib.util.find_spec("numpyro") is None:
        pytest.skip("the nuts extra (NumPyro) is not installed")
    if "distributed" in block:
        pytest.importorskip("distributed")  # the dask extra is optional


def _run(block: str, name: str) -> None:
    if "jax" in block or "__main__" in block:
        # JAX starts threads on import, and a process with them must not fork (some
        # executor tests fork on purpose); a script guarded by __name__ == "__main__"
        # (for Dask's worker processes) must run as one: both in a fresh interpreter
        proc = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True)
        assert proc.returncode == 0, f"{name}:\n{proc.stderr[-3000:]}"
        return
    exec(compile(block, name, "exec"), {})


def test_readme_has_python_examples():
    assert len(BLOCKS) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch):
    _skip_without_extras(BLOCKS[index])
    monkeypatch.chdir(tmp_path)
    _run(BLOCKS[index], f"README.md[python block {index}]")


@pytest.mark.slow
@pytest.mark.parametrize(("name", "block"), DOC_BLOCKS, ids=[n for n, _ in DOC_BLOCKS])
def test_docs_example_runs(name, block, tmp_path, monkeypatch):
    _skip_without_extras(block)
    monkeypatch.chdir(tmp_path)
    _run(block, name)
