"""The exported files' sizes, and the page's speed in headless Chromium against `charlm sample`'s one stream.

    python bench/export.py [--json OUT]

For a 2x256 and a 2x512 LSTM (one training step: size and speed do not depend on what it learned):
the ONNX graph's and the HTML page's size (float32 and float16), characters/s of the page's own
writer (``window.charlm.write``, 500 characters, in Debian's Chromium driven by Playwright) and of
onnxruntime's one stream (``examples/onnx_sample.py``), beside ``charlm.generate.sample.generate`` at one
stream, what `charlm sample` runs, on the same machine in the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from machine import describe  # noqa: E402
from serve import make_run  # noqa: E402  (the same runs bench/serve.py serves)


def sample_speed(path: Path, length: int = 500) -> float:
    import charlm
    from charlm.generate.sample import generate

    model = charlm.load(path).model
    best = 0.0
    for _ in range(2):
        started = time.perf_counter()
        for _ids in generate(model, [0], length, 1, 1.0, seed=0):
            pass
        best = max(best, length / (time.perf_counter() - started))
    return best


def onnx_speed(path: Path, length: int = 300) -> float:
    spec = importlib.util.spec_from_file_location("onnx_sample", ROOT / "examples" / "onnx_sample.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    model = example.Model(str(path))
    started = time.perf_counter()
    text = example.write(model, "", length, 1.0, 0, 1.0, 0)
    return len(text) / (time.perf_counter() - started)


def page_speed(browser, path: Path, length: int = 500) -> float:
    page = browser.new_context(bypass_csp=True).new_page()
    page.goto(path.as_uri())
    seconds = page.evaluate(f"() => {{ const t = performance.now(); window.charlm.write('', {length}, 1.0, 0);"
                            " return (performance.now() - t) / 1000; }")
    page.context.close()
    return length / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / f"export-{time.strftime('%Y%m%d')}.json")
    args = parser.parse_args()
    import torch
    from tests.browser import browser_or_skip

    from charlm.export import export

    machine = f"{describe()}, {time.strftime('%Y-%m-%d')}"
    print(f"charlm export benchmark: {machine}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp, browser_or_skip() as browser:
        for hidden in (256, 512):
            ckpt = make_run(Path(tmp), hidden)
            files = {name: export(ckpt, fmt, Path(tmp) / f"lstm{hidden}{suffix}", float16=half)
                     for name, fmt, suffix, half in (("onnx", "onnx", ".onnx", False), ("html", "html", ".html", False),
                                                     ("html16", "html", "-16.html", True))}
            row = {"model": f"lstm 2x{hidden}", **{f"{name}_mb": round(p.stat().st_size / 1e6, 2) for name, p in files.items()},
                   "page_chars_per_s": round(page_speed(browser, files["html"])),
                   "page16_chars_per_s": round(page_speed(browser, files["html16"])),
                   "onnxruntime_chars_per_s": round(onnx_speed(files["onnx"])),
                   "charlm_sample_chars_per_s": round(sample_speed(ckpt))}
            rows.append(row)
            print(f"  {row['model']}: onnx {row['onnx_mb']} MB, page {row['html_mb']} MB (float16 {row['html16_mb']} MB);"
                  f" page {row['page_chars_per_s']:,} chars/s (float16 {row['page16_chars_per_s']:,}), onnxruntime"
                  f" {row['onnxruntime_chars_per_s']:,}, charlm sample {row['charlm_sample_chars_per_s']:,}", flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "command": "python bench/export.py", "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
