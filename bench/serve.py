"""charlm serve under load: streaming clients against the offline batched sampler, in one run.

    python bench/serve.py [--quick] [--json OUT]
    make bench-serve

A 2x512 LSTM (its weights as one training step left them: speed does not depend on what a model
learned) is served by `charlm serve` in a process of its own on 127.0.0.1; this process is the load
generator: 1, 8, 64 and 256 clients, each streaming one completion at once. For each it prints the
aggregate characters/s, the time to the first character and between characters (p50, p99), and,
with the server idle, the offline batched sampler (``charlm.generate.sample.generate``, what `charlm sample
-n N` runs) at the same number of streams, and `charlm sample`'s own time to its first character.
The load generator shares the machine's cores with the server, as a client on the same host would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe  # noqa: E402


def make_run(work: Path, hidden: int = 512) -> Path:
    """A 2-layer LSTM run of ``hidden`` units (the embedding as wide, the default) after one training step."""
    from charlm.config import build_config
    from charlm.data.synthetic import pseudo_english
    from charlm.train import train

    text = work / "text.txt"
    text.write_text(pseudo_english(50_000, 0))
    config = build_config(None, [("model.size", "fixed"), ("model.cell", "lstm"), ("model.hidden_size", hidden),
                                 ("model.num_layers", 2), ("train.max_steps", 1), ("train.sample_length", 0),
                                 ("data.val_fraction", 0.01)])
    train(config, text, work / f"run{hidden}", progress=False)
    return work / f"run{hidden}"


def start_server(run: Path, max_streams: int, threads: int | None = None) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "charlm", "serve", str(run), "--port", "0",
                                "--max-streams", str(max_streams), "--max-length", "5000",
                                *(["--threads", str(threads)] if threads else [])],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT)
    line = process.stdout.readline()
    if not line.startswith("playground: "):
        process.kill()
        raise SystemExit(f"charlm serve did not start: {line!r}")
    return process, line.split()[-1].rstrip("/")


async def one_client(host: str, port: int, length: int, seed: int) -> dict[str, Any]:
    """One streaming completion over a raw HTTP/1.1 connection: the lightest client Python has, so
    that the load generator takes as little as it can of the cores it shares with the server."""
    body = json.dumps({"prompt": "the ", "max_tokens": length, "seed": seed, "stream": True,
                       "temperature": 1.0}).encode()
    reader, writer = await asyncio.open_connection(host, port)
    sent = time.perf_counter()
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body))
    first, last, gaps, chars, buffer = None, None, [], 0, b""
    await reader.readuntil(b"\r\n\r\n")  # the status line and headers (chunked transfer encoding)
    while True:
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            break
        buffer += (await reader.readexactly(size + 2))[:-2]
        *events, buffer = buffer.split(b"\n\n")
        now = time.perf_counter()
        for event in events:
            if not event.startswith(b"data: {"):
                continue
            text = json.loads(event[6:])["choices"][0]["text"]
            if not text:
                continue
            if first is None:
                first = now - sent
            else:
                gaps += [(now - last) / len(text)] * len(text)
            last, chars = now, chars + len(text)
    writer.close()
    return {"first": first, "gaps": gaps, "chars": chars}


async def load(url: str, clients: int, length: int) -> dict[str, Any]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    await one_client(host, int(port), 5, 0)  # the engine warmed
    started = time.perf_counter()
    results = await asyncio.gather(*(one_client(host, int(port), length, i) for i in range(clients)))
    wall = time.perf_counter() - started
    firsts = sorted(r["first"] for r in results)
    gaps = sorted(g for r in results for g in r["gaps"])
    return {"clients": clients, "length": length, "chars": sum(r["chars"] for r in results),
            "aggregate_chars_per_s": round(sum(r["chars"] for r in results) / wall),
            "first_char_p50_ms": round(1000 * _quantile(firsts, 0.5), 1),
            "first_char_p99_ms": round(1000 * _quantile(firsts, 0.99), 1),
            "between_chars_p50_ms": round(1000 * _quantile(gaps, 0.5), 2),
            "between_chars_p99_ms": round(1000 * _quantile(gaps, 0.99), 2)}


def _quantile(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[max(0, min(98, round(q * 100) - 1))]


def offline(run: Path, streams: int, length: int, threads: int) -> float:
    """chars/s of the batched sampler at ``streams`` streams on ``threads`` threads, best of two."""
    import torch

    import charlm
    from charlm.generate.sample import generate

    torch.set_num_threads(threads)
    model = charlm.load(run).model
    best = 0.0
    for _ in range(2):
        started = time.perf_counter()
        for _ids in generate(model, [0], length, streams, 1.0, seed=0):
            pass
        best = max(best, streams * length / (time.perf_counter() - started))
    return best


def sample_first_char(run: Path) -> float:
    """Seconds from starting `charlm sample RUN` to its first character on stdout."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "charlm", "sample", str(run), "--length", "50", "--seed", "1"],
                               stdout=subprocess.PIPE, cwd=ROOT)
    process.stdout.read(1)
    elapsed = time.perf_counter() - started
    process.communicate()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter completions: a check, not figures")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / f"serve-{time.strftime('%Y%m%d')}.json")
    args = parser.parse_args()
    import torch

    machine = f"{describe()}, {time.strftime('%Y-%m-%d')}"
    server_threads = max(1, (os.cpu_count() or 2) - 1)  # charlm serve's default
    software = f"torch {torch.__version__}; the server on {server_threads} thread(s), its default"
    print(f"charlm serve benchmark: {machine}; {software}", flush=True)
    lengths = {1: 300, 8: 200, 64: 100, 256: 40} if not args.quick else {1: 60, 8: 40, 64: 20, 256: 10}
    with tempfile.TemporaryDirectory() as tmp:
        run = make_run(Path(tmp))
        rows = []
        process, url = start_server(run, max_streams=256)
        try:
            for clients, length in lengths.items():
                row = asyncio.run(load(url, clients, length))
                rows.append(row)
                print(f"  {clients:>3} clients: {row['aggregate_chars_per_s']:>7,} chars/s; first character p50"
                      f" {row['first_char_p50_ms']} ms, p99 {row['first_char_p99_ms']} ms; between characters p50"
                      f" {row['between_chars_p50_ms']} ms, p99 {row['between_chars_p99_ms']} ms", flush=True)
        finally:
            process.terminate()
            process.wait(timeout=30)
        for row in rows:  # the server gone: the sampler alone on the cores, on all of them and on the server's
            row["offline_chars_per_s"] = round(offline(run, row["clients"], row["length"], os.cpu_count() or 1))
            row["offline_server_threads_chars_per_s"] = round(offline(run, row["clients"], row["length"],
                                                                      server_threads))
            row["served_vs_offline"] = round(row["aggregate_chars_per_s"] / row["offline_chars_per_s"], 3)
            print(f"  offline sampler, {row['clients']:>3} streams: {row['offline_chars_per_s']:>7,} chars/s"
                  f" ({row['offline_server_threads_chars_per_s']:,} on {server_threads} thread(s));"
                  f" served/offline {row['served_vs_offline']:.2f}", flush=True)
        first = min(sample_first_char(run) for _ in range(2 if args.quick else 3))
    result = {"machine": machine, "software": software, "command": "python bench/serve.py", "quick": args.quick,
              "model": "lstm 2x512",
              "rows": rows, "sample_first_char_s": round(first, 3)}
    print(f"  charlm sample: first character after {first:.2f} s (process start, load, prime)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
