"""The command line end to end, as a user runs it: through its entry point in this process, and in a
real process where only one shows what is tested (the exit path, signals)."""

import json
import os
import subprocess
import sys

import pytest

from charlm.errors import CharlmError
from tests.conftest import charlm_cli

SMALL = ["--set", "model.size=fixed", "--hidden-size", "32", "--num-layers", "1", "--batch-size", "8", "--seq-len", "16",
         "--threads", "1", "--precision", "fp32", "--set", "train.eval_interval=20",
         "--set", "train.sample_length=10"]


def charlm(*args, cwd=None, check=True):
    result = charlm_cli(*args, cwd=cwd)
    if check and result.returncode != 0:
        raise AssertionError(f"charlm {args} failed ({result.returncode}):\n{result.stderr}")
    return result


def real_charlm(*args):
    """`charlm ARGS` in a process of its own."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "charlm", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=300)


def _train_small(tmp, *extra):
    from tests.conftest import make_text

    text = tmp / "text.txt"
    text.write_text(make_text(30_000))
    run = tmp / "run"
    result = charlm("train", text, "-o", run, "--max-steps", "40", "--no-progress", *extra, *SMALL)
    return run, text, result


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    return _train_small(tmp_path_factory.mktemp("cli"))


def test_train_writes_a_run_and_prints_a_sample(trained_run):
    run, _, result = trained_run
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file() and (run / "config.yaml").is_file()
    assert "stopped (max_steps) at step 40" in result.stderr
    assert "--- sample from" in result.stderr
    assert len(result.stdout) > 100


def test_sample_is_deterministic_with_seed_and_streams_prime(trained_run):
    run = trained_run[0]
    first = charlm("sample", run, "--length", "80", "--seed", "3", "--prime", "The cat\\n").stdout
    second = charlm("sample", run, "--length", "80", "--seed", "3", "--prime", "The cat\\n").stdout
    assert first == second and first.startswith("The cat\n")
    assert len(first) == len("The cat\n") + 80 + 1


def test_sample_options(trained_run, tmp_path):
    run = trained_run[0]
    many = charlm("sample", run / "best.pt", "-n", "3", "--length", "30", "--seed", "1", "--top-k", "5",
                  "--top-p", "0.9", "--output", tmp_path / "out.txt").stdout
    assert many.count("==> sample") == 3
    assert (tmp_path / "out.txt").read_text() == many
    greedy = charlm("sample", run, "--greedy", "--length", "40", "--prime", "The").stdout
    assert greedy == charlm("sample", run, "--greedy", "--length", "40", "--prime", "The").stdout
    stopped = charlm("sample", run, "--length", "500", "--seed", "2", "--stop", " ").stdout
    assert stopped.endswith(" \n") and stopped.count(" ") == 1


def test_eval_json_on_own_split_and_on_a_file(trained_run, tmp_path):
    run, text, _ = trained_run
    report = json.loads(charlm("eval", run, "--json").stdout)
    assert {"loss", "bpc", "perplexity", "chars"} <= set(report)
    assert report["chars"] > 2000 and 0 < report["loss"] < 4.5
    other = tmp_path / "other.txt"
    other.write_text("The cat sat on the mat. Zebras! ✨")
    report = json.loads(charlm("eval", run, other, "--json").stdout)
    assert report["unknown_chars"] == 2  # 'Z' and '✨' are not in the vocabulary
    assert report["chars"] == len("The cat sat on the mat. ebras! ") - 1


def test_info(trained_run):
    run = trained_run[0]
    report = json.loads(charlm("info", run, "--json").stdout)
    assert report["step"] > 0 and report["parameters"] > 0 and report["config"]["model"]["hidden_size"] == 32
    assert "parameters" in charlm("info", run).stdout


def test_resume_continues(trained_run, tmp_path):
    run, text, _ = trained_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    result = charlm("train", "--resume", copy, "--max-steps", "60", "--no-progress", "--no-sample")
    assert "stopped (max_steps) at step 60" in result.stderr
    bad = charlm("train", "--resume", copy, "--hidden-size", "64", check=False)
    assert bad.returncode == 2 and "cannot change when resuming" in bad.stderr


def test_init_from_with_new_characters(trained_run, tmp_path):
    run, _, _ = trained_run
    new_text = tmp_path / "new.txt"
    from tests.conftest import make_text

    new_text.write_text(make_text(10_000, seed=5).replace("cat", "ca~") + "Ünïcode")
    refused = charlm("train", new_text, "--init-from", run, "-o", tmp_path / "ft", *SMALL, check=False)
    assert refused.returncode == 2 and "--extend-vocab" in refused.stderr and "'~'" in refused.stderr
    charlm("train", new_text, "--init-from", run / "best.pt", "--extend-vocab", "-o", tmp_path / "ft",
           "--max-steps", "5", "--no-progress", "--no-sample", *SMALL)
    info = json.loads(charlm("info", tmp_path / "ft" / "last.pt", "--json").stdout)
    assert "~" in info["vocab"] and "Ü" in info["vocab"]


def test_help_and_version():
    assert "train" in charlm("--help").stdout
    assert charlm("--version").stdout.startswith("charlm")


def _one_line_error(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    return lines[0]


def test_bad_inputs_give_one_line_errors(trained_run, tmp_path):
    # The full catalogue is in test_errors.py; these are the command's other ways in.
    run, text, _ = trained_run
    cases = [
        (["train", text, "--max-time", "soon"], "not a duration"),
        (["train"], "no text to train on"),
        (["train", text, "--bogus-flag"], "No such option"),
        (["sample", run, "--temperature", "0"], "temperature must be > 0"),
        (["eval", tmp_path / "nope"], "not found"),
    ]
    for args, expected in cases:
        line = _one_line_error(charlm(*args, check=False))
        assert expected in line, (args, line)


@pytest.mark.slow
def test_a_real_process_exits_with_one_line_too(tmp_path):
    for args, code, expected in ((["train", tmp_path / "missing.txt"], 2, "no such file"),
                                 (["train", "--bogus-flag"], 2, "No such option")):
        result = real_charlm(*args)
        assert result.returncode == code and expected in _one_line_error(result)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(CharlmError, match="no such file"):  # not one line: the exception itself
        charlm_cli("--debug", "train", tmp_path / "missing.txt")


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM"])
@pytest.mark.slow
def test_ctrl_c_or_sigterm_saves_last_and_says_how_to_resume(tmp_path, signal_name):
    import signal
    import time

    from tests.conftest import make_text

    text = tmp_path / "text.txt"
    text.write_text(make_text(60_000))
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "charlm", "train", str(text), "-o", str(run), "--max-time", "5m", "--no-progress",
         *SMALL[:-4]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() or '"event": "train"' not in (run / "metrics.jsonl").read_text():
        assert time.time() < deadline and process.poll() is None, process.stderr.read() if process.poll() else ""
        time.sleep(0.2)
    process.send_signal(getattr(signal, signal_name))
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"{signal_name}: stopping after this step and saving last.pt" in stderr
    assert f"resume with: charlm train --resume {run}" in stderr
    info = json.loads(charlm("info", run / "last.pt", "--json").stdout)
    assert info["step"] > 0


@pytest.fixture(scope="module")
def bidirectional_run(tmp_path_factory):
    return _train_small(tmp_path_factory.mktemp("bidi"), "--no-sample", "--set", "model.bidirectional=true")[0]


def test_reverse_sampling_ends_with_the_prime_and_is_deterministic(bidirectional_run, trained_run):
    first = charlm("sample", bidirectional_run, "--reverse", "--prime", "the mat.", "--length", "60",
                   "--seed", "4").stdout
    again = charlm("sample", bidirectional_run, "--reverse", "--prime", "the mat.", "--length", "60",
                   "--seed", "4").stdout
    assert first == again
    assert first.endswith("the mat.\n") and len(first) == 60 + len("the mat.") + 1
    stopped = charlm("sample", bidirectional_run, "--reverse", "--prime", "mat.", "--stop", " ",
                     "--length", "300", "--seed", "1").stdout
    assert stopped.startswith(" ") and stopped.count(" ") == 1
    forward = charlm("sample", bidirectional_run, "--prime", "The", "--length", "20", "--seed", "4").stdout
    assert forward.startswith("The")
    refused = charlm("sample", trained_run[0], "--reverse", check=False)
    assert _one_line_error(refused) and "no backward direction" in refused.stderr


def test_eval_and_info_of_a_bidirectional_run(bidirectional_run):
    report = json.loads(charlm("eval", bidirectional_run, "--json").stdout)
    assert {"loss", "bpc", "loss_backward", "bpc_backward"} <= set(report)
    info = json.loads(charlm("info", bidirectional_run, "--json").stdout)
    assert info["bidirectional"] is True
    assert "bidirectional" in charlm("info", bidirectional_run).stdout


@pytest.mark.parametrize("cell, block, conv", [("minlstm", "residual", 1), ("mingru", "plain", 1), ("mingru", "residual", 2)])
def test_a_min_cell_trains_resumes_samples_and_evaluates_from_the_command_line(tmp_path, cell, block, conv):
    extra = ["--cell", cell, "--block", block, *(["--set", "model.ffn=2"] if block == "residual" else []),
             "--set", f"model.input_conv={conv}"]
    run, text, trained = _train_small(tmp_path, *extra)
    assert f"1x32 {cell}{f' conv {conv}' if conv > 1 else ''}" in trained.stderr
    resumed = charlm("train", "--resume", run, "--max-steps", "50", "--no-progress", "--no-sample")
    assert "stopped (max_steps) at step 50" in resumed.stderr
    assert charlm("train", "--resume", run, "--block", "plain" if block == "residual" else "residual",
                  check=False).returncode == 2  # the block is the model: it cannot change on a resume
    sampled = charlm("sample", run, "--length", "40", "--seed", "3", "--prime", "the ")
    assert sampled.stdout.startswith("the ") and sampled.stdout == charlm("sample", run, "--length", "40", "--seed", "3",
                                                                          "--prime", "the ").stdout
    loss = json.loads(charlm("eval", run, "--json").stdout)["loss"]
    assert 0 < loss < 5
    info = json.loads(charlm("info", run, "--json").stdout)
    assert info["config"]["model"]["cell"] == cell and info["config"]["model"]["block"] == block
    assert info["config"]["model"]["input_conv"] == conv
    assert f"1x32 {cell}{f' conv {conv}' if conv > 1 else ''}{' residual ffn 2' if block == 'residual' else ''}," in (
        charlm("info", run).stdout)  # the whole model, as the run's start line named it


@pytest.mark.parametrize("flags, says", [(["--cell", "lstm"], "is for the min cells"),
                                         (["--cell", "mingru", "--set", "model.embedding_size=16"], "unset embedding_size"),
                                         (["--cell", "mingru", "--set", "model.input_conv=9"], "must be 1 to 4")])
def test_input_conv_refuses_what_it_cannot_do_in_one_line(tmp_path, flags, says):
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 100)
    conv = [] if "model.input_conv=9" in flags else ["--set", "model.input_conv=2"]
    result = charlm("train", text, *flags, *conv, check=False)
    assert result.returncode == 2 and says in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_min_cells_refuse_weight_dropout_in_one_line(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 100)
    result = charlm("train", text, "--cell", "mingru", "--set", "model.weight_dropout=0.2", check=False)
    assert result.returncode == 2 and "has none" in result.stderr and "Traceback" not in result.stderr
