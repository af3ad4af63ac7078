"""charlm's performance benchmark: throughput, the 60 s preset, sampling, start-up and memory, in one run.

    python bench/run.py [--quick] [--json OUT] [--device cpu|cuda] [--only train,sample,...]
    make bench          # the full run (about 10 minutes on a 2-core CPU)
    make bench-quick    # a smaller version of each part (about 2 minutes)

Parts (each prints a table as it finishes; all results go to one JSON file):

- train:   tokens/s of `charlm train` against the bare kernel (embedding-free ``nn.<cell>`` forward
           + backward, nothing else) at the same shape and precision, for each cell type and two
           sizes. The ratio is what the loop, data, loss, optimizer and logging cost.
- cells:   tokens/s of `charlm train` for each cell family (the fused LSTM, GRU; minGRU and minLSTM plain
           and in residual blocks) at about the parameters of a 2x256 LSTM, against the LSTM's.
- preset:  val loss of configs/tinyshakespeare-60s.yaml after its 60 s (tinyshakespeare 90/10).
- sample:  chars/s for 1, 64 and 256 streams, fast path (``charlm.model.fast_step.FastStep``) against one
           ``nn.<cell>`` call per character, and against the machine's fp32 matmul limit.
- startup: `charlm --help`, and time to the first character of `charlm sample`.
- memory:  peak RSS of `charlm train` on a large generated text (1 GB; 200 MB in quick mode),
           token-cache build included.

Training runs in this process one at a time; the machine's cores are not shared with anything
else while a figure is taken, so run nothing else meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import cpu_name, simd  # noqa: E402

TINYSHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"
PARTS = ("train", "cells", "preset", "sample", "startup", "memory")


# ---- machine ---------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    import torch

    from charlm.runtime import resolve_precision

    info = {
        "cpu": cpu_name(), "cpus": os.cpu_count(), "simd": simd(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "auto_precision_cpu": resolve_precision("auto", torch.device("cpu")),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _sync(device: "torch.device") -> None:  # noqa: F821
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# ---- training throughput ------------------------------------------------------------------------

def bare_kernel_tokens_per_s(cell: str, hidden: int, precision: str, batch: int, seq_len: int,
                             steps: int, device: "torch.device") -> float:  # noqa: F821
    """Forward + backward of the fused ``nn.<cell>`` alone (2 layers), carried state detached; no
    embedding, head, loss, optimizer or data."""
    import torch

    from charlm.model.network import CharRNN
    from charlm.runtime import autocast

    torch.manual_seed(0)
    stack = CharRNN.make_stack(cell, dict(input_size=hidden, hidden_size=hidden, num_layers=2,
                                           batch_first=True)).to(device)
    # The input needs its gradient, as it does behind charlm's embedding.
    inputs = torch.randn(batch, seq_len, hidden, device=device, requires_grad=True)
    state = None

    def one_step() -> None:
        nonlocal state
        with autocast(device, precision):
            output, state = stack(inputs, state)
        output.float().square().mean().backward()
        state = tuple(t.detach() for t in state) if isinstance(state, tuple) else state.detach()

    for _ in range(3):
        one_step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        one_step()
    _sync(device)
    return steps * batch * seq_len / (time.perf_counter() - started)


def charlm_tokens_per_s(cell: str, hidden: int, precision: str, text: Path, batch: int, seq_len: int,
                        steps: int, device: str, work: Path, shape: dict[str, Any] | None = None) -> float:
    """`charlm train`'s own measure: tokens/s over the logged windows after the first one."""
    from charlm.config import build_config
    from charlm.train import train
    from charlm.train.logs import read_metrics

    window = max(1, steps // 3)
    overrides = {
        "model.size": "fixed", "model.cell": cell, "model.hidden_size": hidden, "model.num_layers": 2,
        "train.precision": precision, "train.device": device, "train.batch_size": batch,
        "train.seq_len": seq_len, "train.max_steps": window * 4, "train.max_epochs": None,
        "train.log_interval": window, "train.eval_interval": 10**9, "train.checkpoint_interval": 10**9,
        "train.sample_length": 0, "train.warmup_steps": 1, "data.val_fraction": 0.001, **(shape or {}),
    }
    config = build_config(None, list(overrides.items()))
    out = work / f"train-{cell}-{hidden}-{precision}-{len(list(work.glob('train-*')))}"
    train(config, text, out, progress=False)
    windows = [e for e in read_metrics(out / "metrics.jsonl") if e["event"] == "train"][1:]
    seconds = sum(window * batch * seq_len / e["tokens_per_s"] for e in windows)
    return len(windows) * window * batch * seq_len / seconds


def bench_train(args: argparse.Namespace, info: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    import torch

    from charlm.errors import CharlmError
    from charlm.runtime import resolve_device, resolve_precision

    device = resolve_device(args.device)
    cells = ["lstm", "gru", "rnn_tanh"] if not args.quick else ["lstm", "gru"]
    sizes = [256, 512]
    steps = 12 if args.quick else 30
    batch, seq_len = 32, 64
    rows = []
    for precision in ("fp32", "bf16", "fp16") if device.type == "cuda" else ("fp32", "bf16"):
        try:
            resolve_precision(precision, device)
        except CharlmError as exc:
            rows.append({"precision": precision, "skipped": str(exc)})
            print(f"  {precision}: skipped: {exc}", flush=True)
            continue
        for cell in cells:
            for hidden in sizes:
                bare = bare_kernel_tokens_per_s(cell, hidden, precision, batch, seq_len, steps, device)
                ours = charlm_tokens_per_s(cell, hidden, precision, args.text, batch, seq_len, steps,
                                           args.device, work)
                row = {"cell": cell, "size": f"2x{hidden}", "precision": precision, "batch": f"{batch}x{seq_len}",
                       "bare_tokens_per_s": round(bare), "charlm_tokens_per_s": round(ours),
                       "ratio": round(ours / bare, 3)}
                rows.append(row)
                print(f"  {cell:<8} 2x{hidden:<4} {precision:<5} bare {bare:>9,.0f}  charlm {ours:>9,.0f} tok/s"
                      f"  ratio {ours / bare:.2f}", flush=True)
        torch.set_num_threads(info["threads"])  # train() may have changed it
    return rows


# The families bench_cells compares: (cell, layers, block, ffn); the first is the reference.
FAMILIES = (("lstm", 2, "plain", 0), ("gru", 2, "plain", 0), ("mingru", 2, "plain", 0), ("minlstm", 2, "plain", 0),
            ("mingru", 4, "residual", 2), ("minlstm", 4, "residual", 2), ("lstm", 2, "residual", 0))


def width_for(parameters: int, cell: str, layers: int, block: str, ffn: int) -> int:
    """The width (a multiple of 8) whose model has the parameter count nearest ``parameters``."""
    from charlm.train.auto import Shape

    return min(range(8, 2049, 8), key=lambda h: abs(Shape(h, layers, h, cell, block=block, ffn=ffn).parameters(65)
                                                     - parameters))


def bench_cells(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """Each family's training tokens/s at about a 2x256 LSTM's parameters (embedding as wide as the cells)."""
    from charlm.model.cells import describe_shape
    from charlm.runtime import resolve_device, usable_precisions
    from charlm.train.auto import Shape

    device = resolve_device(args.device)
    # Every precision auto may train in here (bf16 where native, fp32 on a CPU), each against the LSTM's in it.
    precisions = ["bf16"] if device.type == "cuda" else usable_precisions(device)
    target = Shape(256, 2, 256).parameters(65)
    steps = 12 if args.quick else 30
    rows = []
    for precision in precisions:
        reference = None
        for cell, layers, block, ffn in FAMILIES[:3] if args.quick else FAMILIES:
            hidden = width_for(target, cell, layers, block, ffn)
            shape = {"model.num_layers": layers, "model.block": block, "model.ffn": ffn}
            rate = charlm_tokens_per_s(cell, hidden, precision, args.text, 32, 64, steps, args.device, work, shape)
            reference = reference or rate
            name = describe_shape(layers, hidden, cell, block, ffn)
            row = {"model": name, "parameters": Shape(hidden, layers, hidden, cell, block=block, ffn=ffn).parameters(65),
                   "precision": precision, "tokens_per_s": round(rate), "vs_lstm": round(rate / reference, 3)}
            rows.append(row)
            print(f"  {name:<28} {row['parameters']:>10,} params {precision:<5} {rate:>9,.0f} tok/s"
                  f"  {rate / reference:.2f}x the LSTM's", flush=True)
    return rows


# ---- the 60 s preset ----------------------------------------------------------------------------

def bench_preset(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    from presets import run_preset

    configs = [ROOT / "configs" / "tinyshakespeare-60s.yaml"]
    if args.with_10m:
        configs.append(ROOT / "configs" / "tinyshakespeare-10m.yaml")
    extra = ["--device", args.device] + (["--set", "train.max_time=15s"] if args.quick else [])
    rows = []
    for config in configs:
        row = run_preset(config, args.text, work / f"preset-{config.stem}", extra)
        if args.quick:
            row["note"] = "quick mode: 15 s instead of the preset's budget"
        rows.append(row)
        print(f"  {row['preset']}: val loss {row['val_loss']:.4f} after {row['train_time_s']:.0f} s"
              f" ({row['steps']} steps, {row['tokens_per_s']:,} tok/s)", flush=True)
    return rows


# ---- sampling -----------------------------------------------------------------------------------

def _per_call_generate(model, length: int, streams: int, generator) -> None:
    """The slow path the fast one replaced: one ``nn.<cell>`` call per character, each id read back
    to the host as the fast path's ``generate`` does."""
    import torch

    tokens = torch.zeros(streams, 1, dtype=torch.long, device=model.head.weight.device)
    logits, state = model(tokens)
    for _ in range(length):
        probs = torch.softmax(logits[:, -1], dim=-1)
        tokens = torch.multinomial(probs, 1, generator=generator)
        tokens.cpu()
        logits, state = model(tokens, state)


def _calls_per_s(call: Callable[[], Any], seconds: float, device: "torch.device") -> float:  # noqa: F821
    for _ in range(5):
        call()
    _sync(device)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            call()
        _sync(device)
        count += 10
    return count / (time.perf_counter() - started)


def _matmul_gflops(device: "torch.device", seconds: float = 1.0) -> float:  # noqa: F821
    """fp32 matmul throughput at the 256-stream sampling shape (the compute limit's yardstick)."""
    import torch

    a, b = torch.randn(256, 1024, device=device), torch.randn(1024, 2048, device=device)
    return 2 * 256 * 1024 * 2048 * _calls_per_s(lambda: torch.mm(a, b), seconds, device) / 1e9


def _matvec_gb_per_s(device: "torch.device", seconds: float = 1.0) -> float:  # noqa: F821
    """Bytes of weights a one-stream step streams through per second (it is memory-bound)."""
    import torch

    weights, vector = torch.randn(2048, 1024, device=device), torch.randn(1024, device=device)
    return weights.numel() * 4 * _calls_per_s(lambda: torch.mv(weights, vector), seconds, device) / 1e9


def _bare_loop_chars_per_s(model, streams: int, layout: str, seconds: float, device) -> float:
    """The step's matrix products alone (layer 0's recurrent one, layer 1's two, the head), in
    ``layout``: the yardstick ``FastStep`` is held to."""
    import torch

    from charlm.model.fast_step import FastStep

    step = FastStep(model, layout=layout)
    x = torch.randn(streams, model.hidden_size, device=device)
    matrices = [step.hidden_weights[0], step.input_weights[1], step.hidden_weights[1], step.head_weight]
    return streams * _calls_per_s(lambda: [torch.mm(x, w) for w in matrices], seconds, device)


def _unpadded_step_chars_per_s(model, seconds: float, device) -> float:
    """``FastStep`` on one row, as it ran before every call was padded to ``ROW_BLOCK`` rows (what
    a stream's text being the same alone and among others costs at one stream)."""
    import torch

    from charlm.model.fast_step import FastStep, choose_layout

    step = FastStep(model, layout=choose_layout(model, 1))
    state, token = step.zero_state(1), torch.zeros(1, dtype=torch.long, device=device)
    return _calls_per_s(lambda: step(token, state), seconds, device)


def bench_sample(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from charlm.generate.sample import generate
    from charlm.generate.streams import StreamSet
    from charlm.model.network import CharRNN
    from charlm.runtime import prepare_device, resolve_device

    device = resolve_device(args.device)
    prepare_device(device)
    seconds = 0.5 if args.quick else 2.0
    gflops = _matmul_gflops(device, seconds)
    bandwidth = _matvec_gb_per_s(device, seconds)
    print(f"  fp32 matmul (256x1024 @ 1024x2048): {gflops:.0f} GFLOP/s; matrix-vector: {bandwidth:.0f} GB/s of weights",
          flush=True)
    rows = []
    for cell, hidden in (("lstm", 256), ("lstm", 512), ("gru", 512)):
        if args.quick and cell == "gru":
            continue
        torch.manual_seed(0)
        model = CharRNN(65, cell, hidden, num_layers=2).to(device).eval()
        gates = 4 * hidden if cell == "lstm" else 3 * hidden
        # Per character: layer 0's recurrent matmul (its input part is a table lookup), layer 1's
        # input and recurrent matmuls, the head.
        flop_per_char = 2 * (hidden * gates + 2 * hidden * gates + hidden * 65)
        bytes_per_step = 4 * (hidden * gates + 2 * hidden * gates + hidden * 65)  # fp32 weights read
        for streams in (1, 64, 256):
            length = (300 if args.quick else 1500) if streams == 1 else (40 if args.quick else 150)
            timings = {}
            for path in ("fast", "per_call"):
                if path == "per_call" and streams > 1 and (args.quick or streams == 64):
                    continue
                runs = []
                for _ in range(1 if args.quick else 2):
                    _sync(device)
                    started = time.perf_counter()
                    with torch.no_grad():
                        if path == "fast":
                            for _ids in generate(model, [0], length, streams, 1.0, seed=0):
                                pass
                        else:
                            _per_call_generate(model, length, streams, torch.Generator(device=device).manual_seed(0))
                    _sync(device)
                    runs.append(length * streams / (time.perf_counter() - started))
                timings[path] = max(runs)
            bare = {layout: _bare_loop_chars_per_s(model, streams, layout, seconds / 2, device)
                    for layout in ("in_out", "out_in")}
            best_bare = max(bare.values())
            # One stream is bound by reading the weights, many streams by the arithmetic.
            limit = bandwidth * 1e9 / bytes_per_step if streams == 1 else gflops * 1e9 / flop_per_char
            row = {"cell": cell, "size": f"2x{hidden}", "streams": streams,
                   "fast_chars_per_s": round(timings["fast"]),
                   "per_call_chars_per_s": round(timings["per_call"]) if "per_call" in timings else None,
                   "speedup": round(timings["fast"] / timings["per_call"], 2) if "per_call" in timings else None,
                   "bare_in_out_chars_per_s": round(bare["in_out"]), "bare_out_in_chars_per_s": round(bare["out_in"]),
                   "fast_vs_bare": round(timings["fast"] / best_bare, 3),
                   "layout": StreamSet(model, capacity=streams).layout,
                   "limit_chars_per_s": round(limit),
                   "share_of_limit": round(timings["fast"] / limit, 3)}
            if streams == 1:
                row["unpadded_step_chars_per_s"] = round(_unpadded_step_chars_per_s(model, seconds / 2, device))
            rows.append(row)
            per_call = f"{row['per_call_chars_per_s']:>9,}" if row["per_call_chars_per_s"] else f"{'-':>9}"
            print(f"  {cell:<5} 2x{hidden:<4} {streams:>3} streams: fast {row['fast_chars_per_s']:>9,}  per-call"
                  f" {per_call}  bare loop in_out {row['bare_in_out_chars_per_s']:>9,} out_in"
                  f" {row['bare_out_in_chars_per_s']:>9,} chars/s  fast/bare {row['fast_vs_bare']:.2f}"
                  f" (layout {row['layout']}; limit {row['limit_chars_per_s']:,})", flush=True)
    return {"matmul_gflops": round(gflops, 1), "matvec_gb_per_s": round(bandwidth, 1), "rows": rows}


# ---- start-up -----------------------------------------------------------------------------------

def _charlm(*args: str) -> list[str]:
    return [sys.executable, "-m", "charlm", *args]


def _best_wall(command: list[str], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        best = min(best, time.perf_counter() - started)
    return best


def _time_to_first_char(command: list[str]) -> tuple[float, float]:
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    first = process.stdout.read(1)
    first_at = time.perf_counter() - started
    process.communicate()
    if process.returncode != 0 or not first:
        raise RuntimeError(f"{' '.join(command)} failed")
    return first_at, time.perf_counter() - started


def bench_startup(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from charlm.config import build_config
    from charlm.train import train

    repeats = 3 if args.quick else 5
    help_s = _best_wall(_charlm("--help"), repeats)
    # A 2x512 LSTM checkpoint (the larger sampling size): its load is part of the wait.
    run = work / "startup-run"
    config = build_config(None, [("model.size", "fixed"), ("model.hidden_size", 512), ("train.max_steps", 2), ("train.max_epochs", None),
                                 ("train.sample_length", 0), ("data.val_fraction", 0.001)])
    train(config, args.text, run, progress=False)
    firsts, totals = [], []
    for _ in range(repeats):
        first, total = _time_to_first_char(_charlm("sample", str(run), "--length", "200", "--seed", "1"))
        firsts.append(first)
        totals.append(total)
    result = {"help_s": round(help_s, 3), "first_char_s": round(min(firsts), 3),
              "sample_200_chars_s": round(min(totals), 3)}
    print(f"  charlm --help {help_s:.2f} s | first sampled character {min(firsts):.2f} s"
          f" | 200 chars {min(totals):.2f} s (2x512 LSTM checkpoint)", flush=True)
    return result


# ---- memory on a large file ---------------------------------------------------------------------

def write_large_text(path: Path, megabytes: int, seed: int = 0) -> None:
    """Pseudo-English from a small word list, written in 1 MB blocks: ours, and as big as asked."""
    from charlm.data.synthetic import pseudo_english

    rng = random.Random(seed)
    blocks = [pseudo_english(1 << 20, seed=s).encode("utf-8") for s in range(16)]
    with open(path, "wb") as out:
        for _ in range(megabytes):
            out.write(rng.choice(blocks))


def bench_memory(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    megabytes = 200 if args.quick else 1024
    text = work / "large.txt"
    started = time.perf_counter()
    write_large_text(text, megabytes)
    written = time.perf_counter() - started
    env = dict(os.environ, XDG_CACHE_HOME=str(work / "cache"))
    command = _charlm("train", str(text), "-o", str(work / "memory-run"), "--no-progress", "--no-sample",
                      "--device", args.device, "--max-steps", "30", "--set", "train.log_interval=10", "--set", "train.eval_interval=30")
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    first_run = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"training on the large text failed:\n{stderr[-2000:]}")
    result = {"text_mb": megabytes, "peak_rss_mb": round(usage.ru_maxrss / 1024), "write_text_s": round(written, 1),
              "first_run_s_with_cache_build": round(first_run, 1)}
    print(f"  {megabytes:,} MB text: peak RSS {result['peak_rss_mb']:,} MB (cache build + 30 steps + eval"
          f" in {first_run:.0f} s)", flush=True)
    return result


# ---- report -------------------------------------------------------------------------------------

def print_summary(results: dict[str, Any]) -> None:
    info = results["machine"]
    print(f"\ncharlm benchmark, {info['date']}: {info['cpu']}, {info['cpus']} CPUs ({', '.join(info['simd']) or '-'}),"
          f" torch {info['torch']}, {info['threads']} threads, precision auto -> {info['auto_precision_cpu']}")
    if "train" in results:
        print("\ntraining tokens/s, batch 32x64, 2 layers")
        print(f"{'cell':<9}{'size':<7}{'prec':<6}{'bare kernel':>12}{'charlm train':>14}{'ratio':>7}")
        for r in results["train"]:
            if "skipped" in r:
                print(f"{'':<16}{r['precision']:<6} skipped: {r['skipped']}")
            else:
                print(f"{r['cell']:<9}{r['size']:<7}{r['precision']:<6}{r['bare_tokens_per_s']:>12,}"
                      f"{r['charlm_tokens_per_s']:>14,}{r['ratio']:>7.2f}")
    if "cells" in results:
        print("\ntraining tokens/s by cell family, about the parameters of a 2x256 LSTM, batch 32x64")
        for r in results["cells"]:
            print(f"{r['model']:<28}{r['parameters']:>11,}  {r['precision']:<5}{r['tokens_per_s']:>9,}"
                  f"{r['vs_lstm']:>7.2f}x")
    if "preset" in results:
        print("\npresets on tinyshakespeare (90/10)")
        for r in results["preset"]:
            print(f"{r['preset']:<32} val loss {r['val_loss']:.4f} after {r['train_time_s']:.0f} s, {r['steps']:,} steps"
                  + (f"  [{r['note']}]" if "note" in r else ""))
    if "sample" in results:
        print(f"\nsampling chars/s; limit: 1 stream = weight bytes at {results['sample']['matvec_gb_per_s']} GB/s,"
              f" 256 streams = FLOPs at {results['sample']['matmul_gflops']} GFLOP/s (fp32)")
        print(f"{'cell':<6}{'size':<7}{'streams':>8}{'fast path':>11}{'per call':>10}{'speedup':>9}"
              f"{'bare loop':>11}{'fast/bare':>10}{'limit':>10}{'share':>7}")
        for r in results["sample"]["rows"]:
            per_call = f"{r['per_call_chars_per_s']:>10,}" if r["per_call_chars_per_s"] else f"{'-':>10}"
            speedup = f"{r['speedup']:>8.1f}x" if r["speedup"] else f"{'-':>9}"
            bare = max(r["bare_in_out_chars_per_s"], r["bare_out_in_chars_per_s"])
            print(f"{r['cell']:<6}{r['size']:<7}{r['streams']:>8}{r['fast_chars_per_s']:>11,}{per_call}{speedup}"
                  f"{bare:>11,}{r['fast_vs_bare']:>10.2f}{r['limit_chars_per_s']:>10,}{r['share_of_limit']:>7.0%}")
    if "startup" in results:
        s = results["startup"]
        print(f"\nstart-up: charlm --help {s['help_s']:.2f} s; first sampled character {s['first_char_s']:.2f} s")
    if "memory" in results:
        m = results["memory"]
        print(f"memory: training on a {m['text_mb']:,} MB text peaks at {m['peak_rss_mb']:,} MB RSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller version of every part (~2 minutes)")
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    parser.add_argument("--text", type=Path, default=TINYSHAKESPEARE, help="training text (tinyshakespeare)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--with-10m", action="store_true", help="also run the 10-minute preset")
    parser.add_argument("--json", type=Path, help="where to write the results [bench/results/bench-DATE.json]")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        sys.exit(f"error: unknown part(s) {', '.join(unknown)}: choose from {', '.join(PARTS)}")
    if not args.text.is_file():
        sys.exit(f"error: {args.text} not found: pass --text FILE (tinyshakespeare: charlm corpus get tinyshakespeare)")

    results: dict[str, Any] = {"machine": machine(), "quick": args.quick, "command": " ".join(["python", *sys.argv])}
    steps: dict[str, Callable[[Path], Any]] = {
        "train": lambda work: bench_train(args, results["machine"], work),
        "cells": lambda work: bench_cells(args, work),
        "preset": lambda work: bench_preset(args, work),
        "sample": lambda work: bench_sample(args),
        "startup": lambda work: bench_startup(args, work),
        "memory": lambda work: bench_memory(args, work),
    }
    with tempfile.TemporaryDirectory(prefix="charlm-bench-") as tmp:
        for part in parts:
            print(f"[{part}]", flush=True)
            started = time.perf_counter()
            results[part] = steps[part](Path(tmp))
            print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    print_summary(results)
    out = args.json or ROOT / "bench" / "results" / f"bench-{'quick-' if args.quick else ''}{time.strftime('%Y%m%d')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
