from __future__ import annotations

import os

import pytest

import deepscope

# deepscope's warnings inside a training loop are printed, not raised, under an "error" filter; here they raise,
# so that an unexpected one fails its test (pyproject.toml: filterwarnings = error)
os.environ["DEEPSCOPE_RAISE_NOTICES"] = "1"


@pytest.fixture
def root(tmp_path):
    """An empty runs directory."""
    d = tmp_path / "runs"
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def _finish_leftover_runs():
    yield
    from deepscope import run as run_mod

    for r in list(run_mod._live_runs):
        r.finish()


def reopen(root, run_id):
    """A fresh reader (no cached state) of one run."""
    return deepscope.open(root).run(run_id)


def new_dir(path):
    """``path``, made (a directory for ``deepscope.analyze(..., run=path)``, which must exist)."""
    path.mkdir(parents=True, exist_ok=True)
    return path
