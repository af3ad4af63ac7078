"""The bad-input catalogue: every case exits non-zero with one line on stderr that names the problem
and the fix, and no traceback. Run in-process through the same entry point as the `charlm` command."""

from __future__ import annotations

import os

import pytest
import torch

from charlm.cli import main
from charlm.config import build_config
from charlm.train import train


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace: a good text, a trained run, and one file for each way a file can be wrong."""
    from tests.conftest import make_text

    root = tmp_path_factory.mktemp("catalogue")
    files = {
        "text": make_text(20_000),
        "empty": "",
        "blank": " \n\t\n   \n",
        "short": "a tiny text",
        "latin": None,
        "binary": None,
        "bad_yaml": "model: [1,\n",
        "typed_yaml": "train:\n  lr: fast\n",
        "unknown_key_yaml": "model:\n  hiden_size: 3\n",
    }
    paths = {}
    for name, content in files.items():
        paths[name] = root / (f"{name}.yaml" if name.endswith("yaml") else f"{name}.txt")
        if content is not None:
            paths[name].write_text(content, encoding="utf-8")
    paths["latin"].write_bytes("café crème, déjà vu\n".encode("latin-1") * 50)
    paths["binary"].write_bytes(bytes(range(256)) * 40)
    paths["foreign_pt"] = root / "foreign.pt"
    torch.save({"weight": torch.zeros(3)}, paths["foreign_pt"])  # a plain state dict, not a charlm checkpoint
    paths["no_text"] = root / "no_text"
    paths["no_text"].mkdir()
    (paths["no_text"] / "image.bin").write_bytes(bytes(range(256)) * 4)
    paths["blocker"] = root / "blocker"
    paths["blocker"].write_text("a file where a directory should be")
    config = build_config(None, [("model.size", "fixed"), ("model.hidden_size", 16), ("model.num_layers", 1), ("train.batch_size", 4),
                                 ("train.seq_len", 8), ("train.max_steps", 3), ("train.threads", 1),
                                 ("train.device", "cpu"), ("train.sample_length", 0)])
    paths["run"] = root / "run"
    train(config, paths["text"], paths["run"], progress=False)
    paths["root"] = root
    return paths


# (id, arguments with {placeholders} from the workspace, what the line must say: the problem, the fix)
CASES = [
    ("missing-file", ["train", "{root}/missing.txt"], ["no such file", "give the path of a text file"]),
    ("folder-without-text", ["train", "{no_text}"], ["holds no usable text (skipped 1 binary file)",
                                                     "give text files, or check --include/--exclude"]),
    ("glob-without-match", ["train", "{root}/*.nothing"], ["matches no file", "check the pattern"]),
    ("empty-file", ["train", "{empty}"], ["is empty", "give a file with some text"]),
    ("whitespace-only", ["train", "{blank}"], ["only whitespace", "give a file with some text"]),
    ("shorter-than-a-batch", ["train", "{short}"], ["too few for batch_size 32 x seq_len 64", "lower --batch-size or --seq-len"]),
    ("binary-file", ["train", "{binary}"], ["looks like a binary file", "give a text file"]),
    ("not-utf8", ["train", "{latin}"], ["not valid utf-8: bad byte 0xe9 at offset 3", "convert it to UTF-8 or pass --encoding"]),
    ("unknown-config-key", ["train", "{text}", "--set", "model.hiden_size=3"],
     ["unknown config key 'model.hiden_size'", "did you mean 'model.hidden_size'"]),
    ("unknown-key-in-yaml", ["train", "{text}", "-c", "{unknown_key_yaml}"],
     ["unknown config key 'model.hiden_size'", "did you mean 'model.hidden_size'"]),
    ("wrong-type", ["train", "{text}", "--set", "train.batch_size=many"], ["train.batch_size must be a whole number", "got 'many'"]),
    ("wrong-type-in-yaml", ["train", "{text}", "-c", "{typed_yaml}"], ["train.lr must be a number", "got 'fast'"]),
    ("out-of-range", ["train", "{text}", "--dropout", "1.5"], ["model.dropout must be in [0, 1)", "got 1.5"]),
    ("malformed-yaml", ["train", "{text}", "-c", "{bad_yaml}"], ["malformed YAML", "line"]),
    ("unknown-cell", ["train", "{text}", "--cell", "lstn"], ["model.cell", "did you mean 'lstm'"]),
    ("batch-of-0", ["train", "{text}", "--batch-size", "0"], ["train.batch_size must be >= 1", "got 0"]),
    ("sequence-of-0", ["train", "{text}", "--seq-len", "0"], ["train.seq_len must be >= 1", "got 0"]),
    ("prime-unknown-characters", ["sample", "{run}", "--prime", "Q#~"], ["prime has characters the model never saw: '#', '~'", "remove them"]),
    ("temperature-0", ["sample", "{run}", "--temperature", "0"], ["temperature must be > 0", "--greedy"]),
    ("temperature-negative", ["sample", "{run}", "--temperature", "-1"], ["temperature must be > 0", "--greedy"]),
    ("top-p-0", ["sample", "{run}", "--top-p", "0"], ["top_p must be in (0, 1]", "got 0"]),
    ("top-p-above-1", ["sample", "{run}", "--top-p", "1.5"], ["top_p must be in (0, 1]", "got 1.5"]),
    ("top-k-0", ["sample", "{run}", "--top-k", "0"], ["--top-k must be >= 1", "leave it out"]),
    ("length-negative", ["sample", "{run}", "--length", "-5"], ["length must be >= 0", "got -5"]),
    ("missing-checkpoint", ["sample", "{root}/nope.pt"], ["not found", "give a .pt file or a run directory"]),
    ("wrong-kind-of-checkpoint", ["sample", "{foreign_pt}"], ["not a charlm checkpoint", "charlm train"]),
    ("text-as-checkpoint", ["sample", "{text}"], ["not a readable charlm checkpoint", "truncated or corrupt"]),
    ("unwritable-output-dir", ["train", "{text}", "-o", "{blocker}/run"],
     ["cannot create the run directory", "check the path"]),
    ("unknown-corpus", ["train", "--corpus", "nosuchcorpus"], ["unknown corpus", "charlm corpus list"]),
    ("path-and-corpus", ["train", "{text}", "--corpus", "tinyshakespeare"], ["give PATH or --corpus tinyshakespeare,"
                                                                              " not both", "drop one"]),
]


@pytest.mark.parametrize("args, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_clear_line(ws, capfd, args, expected):
    argv = [arg.format(**ws) for arg in args]
    if argv[0] == "train":
        argv += ["--no-progress", "-o", str(ws["root"] / "out")] if "-o" not in argv else ["--no-progress"]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    _, err = capfd.readouterr()
    assert exit_info.value.code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    for fragment in expected:
        assert fragment in lines[0], (fragment, lines[0])
    assert not (ws["root"] / "out").exists()  # a failed start leaves no run directory behind


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write anywhere")
def test_read_only_output_directory(ws, capfd, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(SystemExit):
        main(["train", str(ws["text"]), "-o", str(locked / "run"), "--no-progress"])
    err = capfd.readouterr().err.strip()
    assert err.startswith("error: cannot create the run directory") and "Permission denied" in err


def test_out_of_memory_is_one_line_saying_what_to_lower(ws, capfd, tmp_path):
    """A model too large for the machine's RAM (here 600 GB of weights): not an 'internal error'."""
    run = tmp_path / "huge"
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(ws["text"]), "-o", str(run), "--hidden-size", "200000", "--set", "model.size=fixed",
              "--max-steps", "2", "--device", "cpu", "--no-progress"])
    err = capfd.readouterr().err.strip().splitlines()[-1]
    assert exit_info.value.code == 1
    assert err.startswith("error: out of memory") and "--hidden-size" in err and "internal error" not in err
    assert not run.exists()  # nothing half-made is left behind
