"""What reading a tree of files costs: time and peak memory of listing, checking and encoding
every file into the token cache (cold: an empty cache), and of a second read (warm: the cache
is reused, every file is still checksummed).

    python bench/read_tree.py                      # the running Python's standard library (*.py)
    python bench/read_tree.py PATH... [--include GLOB] [--exclude GLOB]

Each read runs in a fresh process, so its peak RSS is the reading's own (no torch loaded).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STDLIB_INCLUDE = ["*.py"]
STDLIB_EXCLUDE = ["site-packages/**", "**/test/**", "**/tests/**"]

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
from charlm.config import DataConfig
from charlm.data import read_data
started = time.perf_counter()
data = read_data({source!r}, DataConfig(path={source!r}, include={include!r}, exclude={exclude!r},
                 cache_dir={cache!r}))
seconds = time.perf_counter() - started
docs = data.tokens
print(json.dumps({{"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "splits": docs.counts(), "skipped": docs.skipped.summary(), "symbols": len(data.vocab),
                  "bytes": docs.size}}))
"""


def read_once(source: list[str], include: list[str], exclude: list[str], cache: Path) -> dict:
    code = CHILD.format(root=str(ROOT), source=source, include=include, exclude=exclude, cache=str(cache))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(done.stderr.strip().splitlines()[-1])
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="*", help="files, folders, globs [the standard library]")
    parser.add_argument("--include", action="append", default=None)
    parser.add_argument("--exclude", action="append", default=None)
    args = parser.parse_args()
    stdlib = not args.paths
    source = args.paths or [sysconfig.get_paths()["stdlib"]]
    include = args.include if args.include is not None else (STDLIB_INCLUDE if stdlib else [])
    exclude = args.exclude if args.exclude is not None else (STDLIB_EXCLUDE if stdlib else [])
    with tempfile.TemporaryDirectory(prefix="charlm-read-") as cache:
        cold = read_once(source, include, exclude, Path(cache))
        warm = read_once(source, include, exclude, Path(cache))
    splits = cold["splits"]
    files = sum(s["files"] for s in splits.values())
    print(f"{', '.join(source)} (include {include or 'all'}, exclude {exclude or 'none'}):"
          f" {files:,} files, {cold['bytes'] / 1e6:.1f} MB, {cold['symbols']} symbols; {cold['skipped'] or 'nothing skipped'}")
    for name, count in splits.items():
        if count["files"]:
            print(f"  {name:<5} {count['files']:>6,} files {count['chars']:>12,} chars")
    print(f"cold read (cache built): {cold['seconds']:.1f} s, peak RSS {cold['peak_rss_mb']:.0f} MB")
    print(f"warm read (cache reused): {warm['seconds']:.1f} s, peak RSS {warm['peak_rss_mb']:.0f} MB")
    print(f"({time.strftime('%Y-%m-%d')}, Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
