"""Train it more: a wsd run given a longer budget on --resume against one given that budget from the start.

    python bench/extend.py [--text tinyshakespeare] [--budget 10m] [--threads 2] [--json OUT]

One after the other, with nothing else running and the model fixed (so that every run trains the same
network; by default what model.size auto chose for tinyshakespeare at ten minutes on AMD EPYC with
avx512_bf16: a 2x512 LSTM in bf16, lr 0.0052, dropout 0.25):

- ``whole``: ``lr_schedule wsd`` for the whole budget;
- ``extended``: wsd for half the budget, then ``charlm train --resume RUN --max-time BUDGET``, which
  goes on from stable.pt (the run before its cool-down);
- ``cosine``: the cosine schedule for the whole budget (charlm's default), for reference.

Each is ``charlm eval``'d on its last.pt (the final weights), as bench/versus.py does.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe  # noqa: E402
from versus import run_charlm, seconds_of, text_path  # noqa: E402

FIXED = ["--set", "model.size=fixed", "--cell", "lstm", "--hidden-size", "512", "--num-layers", "2", "--lr", "0.0052",
         "--dropout", "0.25", "--precision", "bf16"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", default="tinyshakespeare")
    parser.add_argument("--budget", default="10m")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fixed", default=" ".join(FIXED), help="the flags that fix the model")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    text, seconds, fixed = text_path(args.text), seconds_of(args.budget), args.fixed.split()
    wsd = [*fixed, "--set", "train.lr_schedule=wsd"]
    machine = describe(args.device)
    print(f"train it more, val loss (nats/char), {machine}, {time.strftime('%Y-%m-%d')}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="charlm-extend-") as tmp:
        work = Path(tmp)
        results["whole"] = run_charlm(text, seconds, args.threads, args.device, work / "whole", wsd)
        print(f"  wsd, {args.budget} from the start: {results['whole']['val_loss']:.4f}", flush=True)
        run_charlm(text, seconds / 2, args.threads, args.device, work / "extended", wsd)
        results["extended"] = run_charlm(text, seconds, args.threads, args.device, work / "extended",
                                         ["--resume", str(work / "extended")])
        print(f"  wsd, half of it, then --resume --max-time {args.budget}:"
              f" {results['extended']['val_loss']:.4f}", flush=True)
        results["cosine"] = run_charlm(text, seconds, args.threads, args.device, work / "cosine", fixed)
        print(f"  cosine, {args.budget}: {results['cosine']['val_loss']:.4f}", flush=True)
    difference = results["extended"]["val_loss"] - results["whole"]["val_loss"]
    print(f"extended minus whole: {difference:+.4f}", flush=True)
    out = args.json or ROOT / "bench" / "results" / f"extend-{time.strftime('%Y%m%d')}.json"
    out.write_text(json.dumps({"machine": f"{machine}, {time.strftime('%Y-%m-%d')}",
                               "command": " ".join(["python", *sys.argv]),
                               "text": args.text, "budget": args.budget, "threads": args.threads, "fixed": fixed,
                               "results": results, "extended_minus_whole": round(difference, 4)}, indent=1) + "\n")


if __name__ == "__main__":
    main()
