"""The models ``charlm inspect`` looks at: trained checkpoints, or fresh models built from configs."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from charlm.data import read_data
from charlm.data.vocab import Vocab
from charlm.errors import CharlmError
from charlm.model.network import CharRNN

CONFIG_SUFFIXES = (".yaml", ".yml")


@dataclass
class Subject:
    """One model to inspect, with the tokens of the text to measure it on (as it reads them)."""

    label: str
    model: CharRNN
    vocab: Vocab
    tokens: np.ndarray


def is_model_source(path: Path) -> bool:
    """A run directory, a checkpoint or a config file (anything else is taken as a text)."""
    return path.is_dir() or path.suffix in (".pt", *CONFIG_SUFFIXES)


def load_subjects(sources: list[Path], text: Path | None, cells: list[str], seed: int,
                  device: str = "cpu") -> list[Subject]:
    """One ``Subject`` per checkpoint, and per config (times each of ``cells``, when given).

    The text measured on is ``text`` when given, else each source's own val split.
    """
    configs = [s for s in sources if s.suffix in CONFIG_SUFFIXES]
    if cells and sources and not configs:
        raise CharlmError("--cells builds fresh models from configs, and a trained checkpoint has its own cell: drop"
                          " --cells, or add a config file (e.g. configs/default.yaml)")
    subjects = []
    for source in sources:
        if source in configs:
            subjects.extend(_fresh_models(source, text, cells, seed, device))
        else:
            subjects.append(_trained(source, text, device))
    if not subjects:  # no source: fresh models of the default config
        subjects.extend(_fresh_models(None, text, cells, seed, device))
    return subjects


def _trained(source: Path, text: Path | None, device: str) -> Subject:
    import charlm

    model = charlm.load(source, device=device)
    part = model.file_data(text)[0] if text is not None else model.own_data("val")
    name = source.name if source.is_dir() else f"{source.parent.name}/{source.name}"
    m = model.config.model
    return Subject(label=f"{m.cell} {m.num_layers}x{m.hidden_size} (trained {model.checkpoint.step:,} steps, {name})",
                   model=model.model, vocab=model.vocab, tokens=part.as_stream())


def _fresh_models(source: Path | None, text: Path | None, cells: list[str], seed: int,
                  device: str) -> list[Subject]:
    from charlm.config import build_config, set_key, validate
    from charlm.corpora import text_of
    from charlm.runtime import resolve_device

    config = build_config(str(source) if source else None)
    name = source.stem if source else "default config"
    if text is None:
        text = text_of(config, f"{name} names no text (data.path or data.corpus): give a text FILE to measure on")
    data = read_data(text, config.data)
    tokens = data.val.as_stream()
    subjects = []
    for cell in cells or [config.model.cell]:
        cell_config = copy.deepcopy(config)
        set_key(cell_config, "model.cell", cell, "--cells")
        validate(cell_config)
        torch.manual_seed(seed)
        model = CharRNN.from_config(cell_config.model, len(data.vocab)).to(resolve_device(device))
        m = cell_config.model
        subjects.append(Subject(label=f"{cell} {m.num_layers}x{m.hidden_size} (fresh, {name})", model=model.eval(),
                                vocab=data.vocab, tokens=tokens))
    return subjects
