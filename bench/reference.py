"""Reference trainings, before against after: do two checkouts of charlm train exactly the same runs?

    python bench/reference.py --before ../before          # that checkout's charlm, then this one's
    python bench/reference.py --before ../before --json OUT

Each reference run is a real `charlm train` (a subprocess, one thread, fp32 on the CPU) on text this
script generates, run once with each checkout's code. For every run it compares the final
checkpoints (last.pt and best.pt: the published and raw weights, the optimizer's state, the carried
states, the counters) and every logged number in metrics.jsonl (all but wall-clock times and
speeds). A refactoring that changes none of the arithmetic shows "same" in every column.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from charlm.data.synthetic import pseudo_english  # noqa: E402
from machine import describe  # noqa: E402

COMMON = ["--no-progress", "--no-sample", "--set", "model.size=fixed", "--threads", "1", "--precision", "fp32",
          "--device", "cpu", "--batch-size", "8", "--seq-len", "32", "--set", "train.eval_interval=20",
          "--set", "train.log_interval=5", "--set", "train.checkpoint_interval=25", "--set", "train.sample_length=40"]
# Logged values that are wall-clock readings: they differ between any two runs.
VOLATILE = {"time", "tokens_per_s", "seconds", "timings", "charlm_version"}


def names_text(count: int, seed: int) -> str:
    """Made-up names, one a line: syllables of our own."""
    rng = random.Random(seed)
    syllables = ["an", "ba", "el", "ka", "li", "mo", "na", "ri", "sa", "to", "vi", "ze", "qu", "or"]
    return "\n".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(count)) + "\n"


def write_texts(work: Path) -> dict[str, Path]:
    texts = {"prose": work / "prose.txt", "more": work / "more.txt", "names": work / "names.txt",
             "files": work / "files"}
    texts["prose"].write_text(pseudo_english(60_000, seed=1), encoding="utf-8")
    texts["more"].write_text(pseudo_english(20_000, seed=2) + "Zebra; quartz (xylophone) #42\n", encoding="utf-8")
    texts["names"].write_text(names_text(3000, seed=3), encoding="utf-8")
    texts["files"].mkdir()
    for i in range(12):
        (texts["files"] / f"part{i:02d}.txt").write_text(pseudo_english(3000 + 500 * i, seed=10 + i), encoding="utf-8")
    return texts


def runs(texts: dict[str, Path]) -> list[tuple[str, list[list[str]]]]:
    """Each reference run: its name and the `charlm train` commands (after `charlm train`) it takes;
    {out} and {runs} stand for its run directory and the folder of all runs."""
    lstm = ["--cell", "lstm", "--hidden-size", "48", "--num-layers", "2", "--dropout", "0.2"]
    return [
        ("lstm-dropout", [[str(texts["prose"]), *lstm, "--max-steps", "60", "-o", "{out}"]]),
        ("bigru-weight-dropout", [[str(texts["prose"]), "--cell", "gru", "--hidden-size", "40", "--num-layers", "2",
                                   "--set", "model.bidirectional=true", "--set", "model.weight_dropout=0.3",
                                   "--set", "model.embedding_dropout=0.1", "--max-steps", "50", "-o", "{out}"]]),
        ("lines", [[str(texts["names"]), "--set", "data.mode=lines", "--cell", "lstm", "--hidden-size", "32",
                    "--num-layers", "2", "--set", "data.holdout_cap=200", "--max-steps", "60", "-o", "{out}"]]),
        ("ema-clip-value-layer-grads", [[str(texts["prose"]), *lstm, "--set", "train.ema_decay=0.95",
                                         "--set", "train.clip_value=0.02", "--set", "train.log_layer_grads=true",
                                         "--set", "train.optimizer=rmsprop", "--lr", "0.003", "--max-steps", "50",
                                         "-o", "{out}"]]),
        ("paused-and-resumed", [[str(texts["prose"]), *lstm, "--max-steps", "30", "-o", "{out}"],
                                ["--resume", "{out}", "--max-steps", "55"]]),
        ("init-from-extend-vocab", [[str(texts["prose"]), *lstm, "--max-steps", "20", "-o", "{runs}/init-source"],
                                    [str(texts["more"]), "--init-from", "{runs}/init-source/last.pt", "--extend-vocab",
                                     "--max-steps", "40", "-o", "{out}"]]),
        ("set-of-files", [[str(texts["files"]), "--cell", "gru", "--hidden-size", "40", "--num-layers", "1",
                           "--max-steps", "50", "-o", "{out}"]]),
    ]


def train(checkout: Path, args: list[str], cache: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(checkout), "XDG_CACHE_HOME": str(cache), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "charlm", "train", *args, *COMMON], env=env, cwd=checkout,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"`charlm train {' '.join(args)}` failed in {checkout}:\n{result.stderr[-2000:]}")


def tensor_digest(value: Any) -> str:
    """The sha256 of every tensor and number inside ``value`` (dicts by sorted key)."""
    import torch

    digest = hashlib.sha256()

    def walk(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            digest.update(str((item.dtype, tuple(item.shape))).encode())
            digest.update(item.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        elif isinstance(item, dict):
            for key in sorted(item, key=str):
                digest.update(str(key).encode())
                walk(item[key])
        elif isinstance(item, (list, tuple)):
            for part in item:
                walk(part)
        else:
            digest.update(repr(item).encode())

    walk(value)
    return digest.hexdigest()[:16]


def checkpoint_parts(path: Path) -> dict[str, str]:
    """Digests of what a checkpoint holds, by part, whichever file format holds it (2 or 3)."""
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload["format_version"] == 2:
        state = dict(payload["state"])
        carried, window = state.pop("carried"), state.pop("log_window")
        parts = {"published": payload["model"], "raw": payload.get("raw_model"), "carried": carried,
                 "log_window": {"good_steps": window.get("good_steps", 0), **window["sums"]},
                 "counters": {"overflow_steps": 0, **state}, "rng": payload["rng_ranks"] or [payload["rng"]]}
    else:
        average = payload["average"]
        parts = {"published": average["model"] if average else payload["model"],
                 "raw": payload["model"] if average else None, "carried": payload["streams"],
                 "log_window": payload["log_window"], "counters": dict(payload["state"]), "rng": payload["rng"]}
    parts["counters"].pop("train_time")
    parts.update(optimizer=payload["optimizer"], vocab=payload["vocab"])
    return {name: tensor_digest(value) for name, value in parts.items()}


def logged(run: Path) -> str:
    """The digest of every logged number but wall-clock readings."""
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    kept = [{key: value for key, value in event.items() if key not in VOLATILE} for event in events]
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def outcome(run: Path) -> dict[str, str]:
    parts = {"metrics": logged(run)}
    for name in ("last.pt", "best.pt"):
        for part, digest in checkpoint_parts(run / name).items():
            parts[f"{name}:{part}"] = digest
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="the other checkout (e.g. a git worktree)")
    parser.add_argument("--json", type=Path, help="also write the digests here")
    args = parser.parse_args()
    checkouts = {"before": args.before.resolve(), "after": ROOT}
    results: dict[str, dict[str, dict[str, str]]] = {}
    with tempfile.TemporaryDirectory(prefix="charlm-reference-") as tmp:
        work = Path(tmp)
        texts = write_texts(work)
        for name, commands in runs(texts):
            for label, checkout in checkouts.items():  # interleaved: each run before, then after
                folder = work / label
                out = folder / name
                for command in commands:
                    train(checkout, [c.format(out=out, runs=folder) for c in command], work / f"cache-{label}")
                results.setdefault(name, {})[label] = outcome(out)
            before, after = results[name]["before"], results[name]["after"]
            differing = sorted(key for key in before if before[key] != after.get(key))
            print(f"{name:<28} {'same' if not differing else 'DIFFERS: ' + ', '.join(differing)}", flush=True)
    if args.json:
        import time

        args.json.write_text(json.dumps({"machine": f"{describe()}, {time.strftime('%Y-%m-%d')}",
                                         "command": " ".join(["python", *sys.argv]), "runs": results}, indent=1) + "\n")
    if any(r["before"] != r["after"] for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
