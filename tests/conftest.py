"""Shared fixtures: small generated texts, an isolated cache, the shared corpora folder, and the
command line run in this process."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from charlm.data.synthetic import pseudo_english

SHARED_CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own cache folder, so no test sees another's token cache."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def make_text(chars: int = 20_000, seed: int = 0) -> str:
    """Pseudo-English made of a small word list: learnable, and ours, not anyone's corpus."""
    return pseudo_english(chars, seed)


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "text.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


@pytest.fixture
def tinyshakespeare() -> Path:
    path = SHARED_CORPORA / "tinyshakespeare.txt"
    if not path.exists():
        pytest.skip("../shared/corpora/tinyshakespeare.txt is not present")
    return path


@dataclass
class Finished:
    """What a command did: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def charlm_cli(*args, cwd=None) -> Finished:
    """`charlm ARGS` through the command's own entry point (``charlm.cli.main``), in this process: the
    same parsing, errors and exit codes as the installed command, without starting Python and torch
    again. (A real process is for what only one can show: signals, kill -9, resource limits, start-up.)"""
    import torch

    from charlm.cli import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    here, threads = os.getcwd(), torch.get_num_threads()
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(arg) for arg in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os.chdir(here)
        torch.set_num_threads(threads)  # --threads sets them for the whole process
    return Finished(code, out.getvalue(), err.getvalue())


def pytest_configure(config):
    # Keep torch from oversubscribing the cores: two threads for one pytest process, one for each of
    # pytest-xdist's (make test runs two, one a core).
    os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


# Fuzzing (hypothesis): reproducible by default, so CI sees the same examples every run;
# HYPOTHESIS_PROFILE=explore searches far wider with fresh random examples.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("default", max_examples=200, derandomize=True, database=None)
_hypothesis_settings.register_profile("explore", max_examples=5000)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def tiny_checkpoint(step: int = 0, model=None, vocab=None, mode: str = "stream", **state):
    """A real, small ``Checkpoint`` at ``step``, without training: of ``model`` (a ``CharRNN``) and
    ``vocab``, or by default an untrained 1x8 LSTM over "ab"."""
    import torch

    from charlm.config import Config
    from charlm.data.vocab import Vocab
    from charlm.model.network import CharRNN
    from charlm.train.checkpoint import Checkpoint, TextRecord
    from charlm.train.distributed import Distributed
    from charlm.train.state import RandomState, TrainState

    config = Config()
    if model is None:
        config.model.hidden_size, config.model.num_layers = 8, 1
        model, vocab = CharRNN.from_config(config.model, 2), Vocab(["a", "b"])
    else:
        config.model.cell, config.model.hidden_size = model.cell, model.hidden_size
        config.model.num_layers, config.model.embedding_size = model.num_layers, model.embedding.embedding_dim
        config.model.block, config.model.ffn, config.model.norm = model.block, model.ffn, model.norm
        config.model.input_conv = model.input_conv
    config.data.mode = mode
    parts = {"model": model.state_dict(), "average": None,
             "optimizer": torch.optim.AdamW(model.parameters()).state_dict(), "scaler": {},
             "state": TrainState(step=step, **state).state_dict(), "streams": {"forward": None},
             "log_window": {}, "rng": RandomState(Distributed()).state_dict()}
    return Checkpoint(config=config, vocab=vocab, parameters=model.num_parameters(), precision="fp32",
                      text=TextRecord("text.txt", "0" * 64), parts=parts)
