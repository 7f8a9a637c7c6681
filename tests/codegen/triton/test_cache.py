"""Kernel sources are cached by content hash and imported as modules."""
from __future__ import annotations

from graphopt.codegen.triton import cache
from graphopt.codegen.triton.cache import KernelSource


def test_write_and_load(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(tmp_path))
    ks = KernelSource("pointwise", "import triton\nCONFIGS = [{}]\nX = 41 + 1\n")
    assert len(ks.key) == 16 and ks.name == f"pointwise_{ks.key}"
    path = cache.write(ks)
    assert path == tmp_path / "kernels" / f"{ks.name}.py" and path.read_text() == ks.source
    mod = cache.load(ks, interpret=True)
    assert mod.X == 42 and cache.load(ks, interpret=True) is mod
    other = KernelSource("pointwise", ks.source + "# changed\n")
    assert other.key != ks.key


def test_bad_source_names_the_file(tmp_path, monkeypatch) -> None:
    import pytest

    from graphopt.errors import GraphOptError

    monkeypatch.setenv("GRAPHOPT_CACHE_DIR", str(tmp_path))
    with pytest.raises(GraphOptError, match="does not import"):
        cache.load(KernelSource("matmul", "def broken(:\n"), interpret=True)


def test_interpreter_mode_mismatch_is_an_error() -> None:
    import pytest

    from graphopt.errors import GraphOptError

    with pytest.raises(GraphOptError, match="interpret=True"):
        cache.import_triton(interpret=False)
