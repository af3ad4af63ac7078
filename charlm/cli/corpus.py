"""``charlm corpus list`` and ``charlm corpus get``."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def corpus() -> None:
    """List and fetch named corpora."""


@corpus.command(name="list")
def corpus_list() -> None:
    """Show the corpora `charlm corpus get` and `--corpus` know."""
    from charlm.corpora import registry

    for name, source in registry().items():
        click.echo(f"{name:<16} {source.description}")


@corpus.command(name="get")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help="Folder to keep it in.")
def corpus_get(name: str, directory: Path | None) -> None:
    """Fetch corpus NAME (verified by sha256) and print its path."""
    from charlm.corpora import get_corpus

    click.echo(str(get_corpus(name, directory)))
