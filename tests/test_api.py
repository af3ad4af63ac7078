"""The Python API: charlm.load, sampling (charlm.generate.sample.Sampler) and evaluation on a trained run."""

import pytest

import charlm
from charlm.errors import CharlmError
from tests.data.test_lines import WORDS
from tests.train.test_loop import small_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from charlm.train import train
    from tests.conftest import make_text

    root = tmp_path_factory.mktemp("api")
    text = root / "text.txt"
    text.write_text(make_text(20_000))
    train(small_config(**{"train.max_steps": 30, "model.bidirectional": True}), text, root / "run", progress=False)
    return root / "run", text


@pytest.fixture(scope="module")
def lines_run(tmp_path_factory):
    from charlm.train import train

    root = tmp_path_factory.mktemp("api-lines")
    path = root / "list.txt"
    path.write_text("\n".join(WORDS * 8) + "\n")
    config = small_config(**{"data.mode": "lines", "train.max_steps": 40, "train.max_epochs": None,
                             "train.lr": 1e-2})
    train(config, path, root / "run", progress=False)
    return root / "run", path


def test_load_sample_and_evaluate(run):
    model = charlm.load(str(run[0]))
    text = model.sample("The ", length=40, temperature=0.5, seed=1)
    assert text.startswith("The ") and len(text) == 44
    assert text == model.sample("The ", length=40, temperature=0.5, seed=1)
    report = model.evaluate("The cat sat on the mat. Zz")
    assert report["unknown_chars"] == 2 and report["chars"] == 23 and report["loss"] > 0  # no z in the text
    assert model.checkpoint.step == 30 and model.path.name == "best.pt"


def test_samples_stop_at_a_string_and_run_backwards(run):
    model = charlm.load(run[0])
    texts = model.texts("The", 300, num_samples=4, stop=" ", seed=2)
    assert all(t.startswith("The") and t.count(" ") == 1 and t.endswith(" ") for t in texts)
    seen = []
    whole = model.texts("The", 20, seed=3, on_text=seen.append)[0]
    assert "".join(seen) == whole and seen[0] == "The"  # the prime, then each character as it is made
    backwards = model.texts("mat.", 30, num_samples=2, stop=" ", reverse=True, seed=4)
    assert all(t.endswith("mat.") and t.startswith(" ") and t.count(" ") == 1 for t in backwards)
    with pytest.raises(CharlmError, match="never saw: '#'"):
        model.sample("#")


def test_own_data_is_refused_when_the_text_moved_or_changed(run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run[0], copy)
    model = charlm.load(copy)
    assert len(model.own_data("val")) > 0
    text = run[1]
    original = text.read_text()
    try:
        text.write_text(original + "more")
        with pytest.raises(CharlmError, match="changed since .* was trained: pass the file to use as FILE"):
            model.own_data("val")
        text.unlink()
        with pytest.raises(CharlmError, match="cannot be read .*no such file.*: pass the file to use as FILE"):
            model.own_data("val")
    finally:
        text.write_text(original)


def test_lines_models_give_whole_lines_and_filter_them(lines_run):
    model = charlm.load(lines_run[0])
    assert model.kind.unit == "lines" and "\n" not in model.sample(seed=0)
    known = model.training_lines()
    draw = model.new_lines(12, novel=True, unique=True, seed=1, temperature=1.5)
    assert len(draw.lines) == 12 and not set(draw.lines) & known and len(set(draw.lines)) == 12
    assert draw.made >= 12 and draw.novel <= draw.made
    greedy = model.new_lines(3, greedy=True)
    assert greedy.made == 3 and len(set(greedy.lines)) == 1  # greedy lines are all the same: one round


def test_a_file_is_read_as_the_model_reads_it(lines_run, tmp_path):
    model = charlm.load(lines_run[0])
    other = tmp_path / "other.txt"
    other.write_text("apple\nkiwi!\n")
    lines, unknown = model.file_data(other)
    assert lines.texts(model.vocab) == ["apple", "kiwi"] and unknown == 1
    assert model.evaluate_part(lines)["chars"] == len("apple") + len("kiwi") + 2
    assert model.evaluate("apple\nkiwi!\n")["chars"] == len("apple") + len("kiwi") + 2  # a string as a file


def test_a_run_finds_the_text_it_read_from_anywhere(tmp_path, monkeypatch):
    """The checkpoint records what it read, as absolute paths: its own splits come back from another
    working folder, and a corpus run's without the folder the corpus was found in being named again."""
    from charlm.train import train
    from tests.conftest import SHARED_CORPORA, make_text

    monkeypatch.chdir(tmp_path)
    (tmp_path / "text.txt").write_text(make_text(6_000))
    train(small_config(**{"train.max_steps": 3}), "text.txt", tmp_path / "run", progress=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert charlm.load(tmp_path / "run").own_data("val").predicted > 0
    if not (SHARED_CORPORA / "names.txt").exists():
        pytest.skip("../shared/corpora/names.txt is not present")
    monkeypatch.setenv("CHARLM_CORPUS_DIR", str(SHARED_CORPORA))
    config = small_config(**{"data.corpus": "names", "data.mode": "lines", "train.max_steps": 3})
    from charlm.corpora import text_of

    train(config, text_of(config, ""), tmp_path / "names", progress=False)
    monkeypatch.delenv("CHARLM_CORPUS_DIR")
    assert len(charlm.load(tmp_path / "names").own_data("val")) > 0  # read where it was read, not fetched
