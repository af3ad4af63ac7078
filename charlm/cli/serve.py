"""``charlm serve``."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import click

from charlm.errors import CharlmError


@click.command()
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port; 0 picks a free one (printed).")
@click.option("--api-key", envvar="CHARLM_API_KEY", help="Require 'Authorization: Bearer KEY' [env: CHARLM_API_KEY].")
@click.option("--device", default="cpu", show_default=True, help="cpu | cuda | mps | auto")
@click.option("--threads", type=int, help="Threads for the model [default: the CPU's cores less one, left to HTTP].")
@click.option("--max-streams", type=int, default=64, show_default=True, help="Streams generated at once, per model.")
@click.option("--max-queue", type=int, help="Streams that may wait for room before 503 [default: 4 x --max-streams].")
@click.option("--max-length", type=int, default=2000, show_default=True, help="Largest max_tokens a request may ask.")
@click.option("--max-prompt", type=int, default=4096, show_default=True, help="Longest prompt, in characters.")
@click.option("--max-score", type=int, default=100_000, show_default=True, help="Longest text /v1/score reads.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds a request may run.")
@click.option("--cors-origin", "cors_origins", multiple=True, help="Allow browser pages from this origin (repeatable).")
def serve(checkpoints: tuple[Path, ...], host: str, port: int, api_key: str | None, device: str, threads: int | None,
          max_streams: int,
          max_queue: int | None, max_length: int, max_prompt: int, max_score: int, timeout: float,
          cors_origins: tuple[str, ...]) -> None:
    """Serve CHECKPOINTS (run directories or .pt files): a playground at / and an
    OpenAI-compatible API at /v1 (completions, streaming, scores).

    \b
    Example:
      charlm serve runs/shakespeare
      curl localhost:8000/v1/completions -d '{"prompt": "ROMEO:", "max_tokens": 200}'
    """
    for name, value in (("--max-streams", max_streams), ("--max-length", max_length), ("--max-prompt", max_prompt),
                        ("--max-score", max_score)):
        if value < 1:
            raise CharlmError(f"{name} must be >= 1, got {value}")
    if threads is not None and threads < 1:
        raise CharlmError(f"--threads must be >= 1, got {threads}")
    if not 0 <= port <= 65535:
        raise CharlmError(f"--port must be from 0 to 65535, got {port}")
    if timeout <= 0:
        raise CharlmError(f"--timeout must be > 0 seconds, got {timeout}")
    if not _loopback(host) and not api_key:
        click.echo(f"warning: serving on {host} without an API key: anyone who can reach this machine can use"
                   " it (set --api-key or CHARLM_API_KEY)", err=True)
    from charlm.serve.run import run
    from charlm.train.checkpoint import resolve_checkpoint

    for checkpoint in checkpoints:  # a wrong path fails before anything listens or loads
        resolve_checkpoint(checkpoint)

    run([str(c) for c in checkpoints], host=host, port=port, api_key=api_key, device=device,
        threads=threads or max(1, (os.cpu_count() or 2) - 1), max_streams=max_streams,
        max_queue=max_queue or 4 * max_streams, max_length=max_length, max_prompt=max_prompt, max_score=max_score,
        timeout=timeout, cors_origins=cors_origins)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
