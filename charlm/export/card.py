"""What an exported file says of its model (its card): enough for a program to use it with nothing
else. The ONNX graph keeps it in its metadata, the page in its script."""

from __future__ import annotations

from typing import Any


def model_card(lm: Any, direction: str) -> dict[str, Any]:
    """The card of ``lm`` (a ``charlm.api.LanguageModel``) exported in ``direction``."""
    summary = lm.checkpoint.summary()
    vocab = lm.vocab
    return {
        "format": "charlm-step-1", "charlm_version": summary["charlm_version"], "direction": direction,
        "cell": lm.model.cell, "num_layers": lm.model.num_layers, "hidden_size": lm.model.hidden_size,
        "block": lm.model.block, "norm": lm.model.norm,
        "embedding_size": lm.model.embedding.embedding_dim, "vocab": list(vocab.chars),
        "line_marker": vocab.marker, "document_marker": vocab.document, "mode": summary["mode"],
        "input_conv": lm.model.input_conv, "state": state_names(lm.model),
        "parameters": summary["parameters"], "step": summary["step"], "best_val_loss": summary["best_val_loss"],
        "sample": summary["config"]["sample"],
        "text": summary["data"]["path"],
    }


def state_names(model: Any) -> list[str]:
    """The step's state inputs: ``h``, then ``c`` (an LSTM) or ``x1`` … (a min cell's last inputs)."""
    return ["h", "c"] if model.cell == "lstm" else ["h", *(f"x{k}" for k in range(1, model.state_size))]
