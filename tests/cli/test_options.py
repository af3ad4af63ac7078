import typing

import click
from click.testing import CliRunner

from charlm.cli.options import SHORTCUTS, Shortcut, config_shortcuts, decode_escapes
from charlm.config import Config, section_fields


def test_every_shortcut_is_a_config_key_of_its_type():
    fields = section_fields(Config())
    for shortcut in SHORTCUTS:
        section, name = shortcut.key.split(".")
        assert name in fields[section], shortcut.key
        hint = typing.get_type_hints(type(getattr(Config(), section)))[name]
        accepted = set(typing.get_args(hint)) or {hint}
        assert shortcut.type in accepted or shortcut.type is str, (shortcut.key, hint)  # durations come as text
    assert len({s.flag for s in SHORTCUTS}) == len({s.key for s in SHORTCUTS}) == len(SHORTCUTS)


def test_a_command_gets_the_shortcuts_given_as_config_assignments():
    seen = {}

    @click.command()
    @click.option("--other")
    @config_shortcuts
    def command(other, shortcuts):
        seen.update(other=other, shortcuts=shortcuts)

    result = CliRunner().invoke(command, ["--lr", "0.01", "--max-time", "10m", "--other", "x", "--encoding", "null"],
                            catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen == {"other": "x", "shortcuts": [("train.lr", 0.01), ("train.max_time", "10m"),
                                                 ("data.encoding", "null")]}
    assert "--hidden-size INTEGER" in CliRunner().invoke(command, ["--help"]).output


def test_values_are_read_as_set_reads_them():
    assert Shortcut("--max-time", "train.max_time").value("90") == 90
    assert Shortcut("--encoding", "data.encoding", literal=True).value("none") == "none"
    assert decode_escapes("a\\nb\\tc\\\\n") == "a\nb\tc\\n"


def _planned(monkeypatch, *args):
    """The config keys `charlm train ARGS` asks for (caught before anything is read)."""
    import charlm.train
    from charlm.cli import cli

    asked = {}

    def plan(config_file, overrides, *rest, **options):
        asked.update(overrides)
        raise SystemExit(0)

    monkeypatch.setattr(charlm.train, "plan", plan)
    CliRunner().invoke(cli, ["train", *args], catch_exceptions=False)
    return asked


def test_globs_never_drop_the_corpus_or_the_paths(monkeypatch):
    asked = _planned(monkeypatch, "--corpus", "python-files", "--exclude", "tests/**", "--include", "*.py")
    assert asked["data.corpus"] == "python-files" and asked["data.path"] is None
    assert asked["data.exclude"] == ["tests/**"] and asked["data.include"] == ["*.py"]
    asked = _planned(monkeypatch, "src", "docs", "--exclude", "*.md")
    assert asked["data.path"] == ["src", "docs"] and asked["data.corpus"] is None and asked["data.exclude"] == ["*.md"]
