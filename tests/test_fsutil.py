import errno
import hashlib
import os
import stat

import pytest

from charlm.errors import CharlmError
from charlm.fsutil import atomic_open, atomic_write_bytes, atomic_write_text, describe_os_error, sha256_of


def test_a_write_replaces_the_file_whole_with_the_usual_mode(tmp_path):
    path = tmp_path / "notes.txt"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new ✓")
    assert path.read_text(encoding="utf-8") == "new ✓"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0o600
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_a_write_that_fails_midway_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(path) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("the process dies here")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    with pytest.raises(CharlmError, match="No space left on device \\(free some disk space"), atomic_open(path) as handle:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_bytes() == b"old"


def test_a_folder_that_is_not_there_is_one_line(tmp_path):
    with pytest.raises(CharlmError, match="cannot write .*nowhere/x.txt: No such file or directory"):
        atomic_write_text(tmp_path / "nowhere" / "x.txt", "x")


@pytest.mark.parametrize("code, hint", [
    (errno.ENOSPC, "free some disk space or write elsewhere with -o/--out"),
    (errno.EFBIG, "file-size limit (ulimit -f)"),
    (errno.EACCES, "check its permissions"),
    (errno.ENOENT, "check the path"),
])
def test_os_errors_say_what_to_do(code, hint):
    message = describe_os_error(OSError(code, os.strerror(code)), "/runs/x/last.pt", "write")
    assert message.startswith(f"cannot write /runs/x/last.pt: {os.strerror(code)} (") and hint in message


def test_sha256_of_files_is_that_of_their_bytes_one_after_the_other(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_bytes(b"x" * (3 << 20) + b"end")  # more than one read of a megabyte
    second.write_bytes(b"\x00second")
    assert sha256_of(first) == hashlib.sha256(first.read_bytes()).hexdigest()
    assert sha256_of(first, second) == hashlib.sha256(first.read_bytes() + second.read_bytes()).hexdigest()
