"""Run the app on uvicorn: load every model first, then listen, print where, and shut down cleanly.

On SIGTERM or Ctrl-C uvicorn stops accepting connections; the engines end their open streams at
once (finish reason "shutdown"), so the open responses complete and the process exits 0.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import uvicorn

from charlm.errors import CharlmError
from charlm.serve.app import ServerSettings, create_app
from charlm.serve.models import load_models
from charlm.serve.protocol import Limits


def run(paths: list[str], host: str, port: int, api_key: str | None, device: str, threads: int, max_streams: int,
        max_queue: int, max_length: int, max_prompt: int, max_score: int, timeout: float,
        cors_origins: tuple[str, ...]) -> None:
    listener = _listen(host, port)  # before the models load: a taken port fails in a second, not after
    torch.set_num_threads(threads)  # a stream's text does not depend on it (tests/generate/test_streams.py)
    limits = Limits(max_length=max_length, max_prompt=max_prompt, max_score=max_score,
                    max_n=min(16, max_streams), time_limit=timeout)
    models = load_models(paths, device, max_streams, max_queue)
    app = create_app(models, ServerSettings(api_key=api_key, cors_origins=cors_origins, limits=limits))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5, lifespan="on")
    server = _Server(config, on_exit=app.state.server.close)
    bound_host, bound_port = listener.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}"
    for name, served in models.items():
        print(f"model {name}: {served.lm.checkpoint.parameters:,} parameters, {served.lm.device},"
              f" {len(served.lm.vocab)} characters", file=sys.stderr)
    print(f"playground: {url}/\napi: {url}/v1 (POST /v1/completions, /v1/score; GET /v1/models)", flush=True)
    server.run(sockets=[listener])


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = "pick another with --port, or --port 0 for any free one" if port else "check --host"
        raise CharlmError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): {hint}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _Server(uvicorn.Server):
    """uvicorn's server, with the engines told first when a signal asks it to stop."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]):
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)
        self._captured_signals.clear()  # a shutdown asked for is a clean exit (0), not death by signal


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` on uvicorn in a background thread on a free port of ``host``; yields its URL
    (for benchmarks, tests and notebooks: the process keeps its own signal handling)."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="charlm-http", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise CharlmError("the server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
