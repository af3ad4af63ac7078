"""A plain character-level LSTM: the script a user writes in an afternoon, and charlm's yardstick.

    python bench/baseline.py TEXT --max-time 60 [--hidden 256 --layers 2 --dropout 0 --seq-len 64]
                             [--batch 32 --lr 2e-3 --threads N --precision auto|fp32|bf16 --device cpu|cuda]
                             [--json OUT]

Nothing from charlm: the text's sorted characters are the vocabulary; the first 90 % trains and the
last 10 % is the validation split (nanoGPT's split, the one charlm's val_fraction 0.1 gives);
``batch`` contiguous streams are read in ``seq_len`` windows with the hidden state carried from one
window to the next (truncated BPTT) and reset when the streams wrap around; an embedding as wide as
the hidden layer, a fused ``nn.LSTM``, a linear head; AdamW, a cosine learning rate from ``lr`` down
to a tenth of it over the time budget, gradient clipping at norm 5; bf16 autocast where the CPU (or
GPU) has native bf16. The clock counts training steps only; at the end the whole val split is read once (state
carried, windows of 512, in fp32 as `charlm eval` reads it) and the mean loss per character printed,
as one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WARM_STEPS = 25  # steady_tokens_per_s leaves these out, as charlm's first logged window does


class CharLSTM(nn.Module):
    def __init__(self, vocab: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.lstm = nn.LSTM(hidden, hidden, layers, dropout=dropout if layers > 1 else 0.0, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x, state=None):
        out, state = self.lstm(self.embed(x), state)
        return self.head(self.drop(out)), state


def native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def load(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    lookup = np.zeros(max(map(ord, chars)) + 1, dtype=np.int64)
    lookup[[ord(c) for c in chars]] = np.arange(len(chars))
    ids = lookup[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
    split = int(0.9 * len(ids))
    return ids[:split], ids[split:], len(chars)


def streams(ids: np.ndarray, batch: int, device: torch.device) -> torch.Tensor:
    length = len(ids) // batch
    return torch.from_numpy(ids[: batch * length].reshape(batch, length)).to(device)


@torch.no_grad()
def evaluate(model: nn.Module, val: np.ndarray, device: torch.device, window: int = 512, batch: int = 32) -> float:
    model.eval()
    data = streams(val, min(batch, max(1, (len(val) - 1) // window)), device)
    state, total, count = None, 0.0, 0
    for start in range(0, data.shape[1] - 1, window):
        x, y = data[:, start:start + window], data[:, start + 1:start + window + 1]
        x = x[:, :y.shape[1]]
        logits, state = model(x, state)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    train_ids, val_ids, vocab = load(args.text)
    device = torch.device(args.device)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and native_bf16(device))
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    model = CharLSTM(vocab, args.hidden, args.layers, args.dropout).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, fused=True)
    data = streams(train_ids, args.batch, device)
    windows = (data.shape[1] - 1) // args.seq_len
    state, step, started = None, 0, time.perf_counter()
    warm = None
    while (elapsed := time.perf_counter() - started) < args.max_time:
        window = step % windows
        if window == 0:
            state = None  # the streams wrap around: the old state belongs to other text
        lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * elapsed / args.max_time)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = data[:, window * args.seq_len:(window + 1) * args.seq_len]
        y = data[:, window * args.seq_len + 1:(window + 1) * args.seq_len + 1]
        with autocast():
            logits, state = model(x, state)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        state = tuple(s.detach() for s in state)
        step += 1
        if step == WARM_STEPS:
            warm = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.synchronize()  # the GPU may still be running queued steps
    train_time = time.perf_counter() - started
    tokens = step * args.batch * args.seq_len
    steady = (step - WARM_STEPS) * args.batch * args.seq_len / (started + train_time - warm) if warm else None
    return {"script": "baseline", "val_loss": evaluate(model, val_ids, device), "steps": step, "tokens": tokens,
            "train_time_s": round(train_time, 1), "tokens_per_s": round(tokens / train_time),
            "steady_tokens_per_s": round(steady) if steady else None,
            "precision": "bf16" if bf16 else "fp32", "threads": torch.get_num_threads(),
            "shape": f"{args.layers}x{args.hidden} lstm, dropout {args.dropout}, batch {args.batch}x{args.seq_len}",
            "parameters": sum(p.numel() for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text", type=Path)
    parser.add_argument("--max-time", type=float, default=60.0, help="seconds of training")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's choice")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = train(args)
    print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
