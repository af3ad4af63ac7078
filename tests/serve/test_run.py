"""`charlm serve` as a user starts it: a real process, its printed URL, its flags' errors, and a clean
exit on SIGTERM with a stream still open."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import charlm_cli, make_text
from tests.train.test_loop import small_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from charlm.train import train

    root = tmp_path_factory.mktemp("serve-run")
    text = root / "text.txt"
    text.write_text(make_text(10_000))
    train(small_config(**{"train.max_steps": 5}), text, root / "run", progress=False)
    return root / "run"


def test_wrong_flags_and_paths_are_one_line_each(run_dir, tmp_path):
    for args, words in ((["serve", tmp_path / "missing"], "not found"),
                        (["serve", run_dir, "--max-streams", "0"], "--max-streams must be >= 1"),
                        (["serve", run_dir, "--port", "70000"], "--port must be from 0 to 65535"),
                        (["serve", run_dir, "--timeout", "0"], "--timeout must be > 0")):
        result = charlm_cli(*args)
        assert result.returncode == 2 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_every_interface_without_a_key_is_warned_about(tmp_path):
    result = charlm_cli("serve", tmp_path / "missing", "--host", "0.0.0.0")  # fails before it listens
    assert "warning: serving on 0.0.0.0 without an API key" in result.stderr


def test_a_taken_port_is_one_line(run_dir):
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        result = charlm_cli("serve", run_dir, "--port", taken.getsockname()[1])
        assert result.returncode == 2 and "cannot listen on 127.0.0.1" in result.stderr and "--port 0" in result.stderr
    finally:
        taken.close()


@pytest.mark.slow
def test_serve_prints_its_url_and_sigterm_ends_open_streams_cleanly(run_dir):
    process = subprocess.Popen([sys.executable, "-m", "charlm", "serve", str(run_dir), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = process.stdout.readline()
        assert line.startswith("playground: http://127.0.0.1:")
        url = line.split()[-1].rstrip("/")
        assert process.stdout.readline().startswith(f"api: {url}/v1")
        assert httpx.get(url + "/health").status_code == 200
        body = {"prompt": "a", "max_tokens": 2000, "stream": True, "temperature": 1.0}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as response:
            reasons = []
            for event in response.iter_lines():
                if event.startswith("data: {"):
                    if not reasons:
                        process.send_signal(signal.SIGTERM)
                        reasons.append(None)
                    reason = json.loads(event[6:])["choices"][0]["finish_reason"]
                    if reason:
                        reasons.append(reason)
                elif event == "data: [DONE]":
                    reasons.append("[DONE]")
        assert reasons[-2:] == ["shutdown", "[DONE]"]
        started = time.monotonic()
        assert process.wait(timeout=20) == 0 and time.monotonic() - started < 20
    finally:
        process.kill()
        process.wait()
