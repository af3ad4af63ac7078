"""The pictures the README shows: `make screenshots` (docs/images/playground.png, docs/images/writer.png).

    python bench/screenshots.py [RUN] [-o PNG]

Serves RUN (default: trains configs/tinyshakespeare-60s.yaml into runs/screenshot first, 60 s) on
127.0.0.1, opens the playground in headless Chromium (Debian's, driven by Playwright), writes a
seeded text, scores a line of it, and saves the page; then exports RUN as one HTML page
(`charlm export --format html`), lets it write a seeded text from a file:// URL, and saves that.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, default=ROOT / "runs" / "screenshot")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "images" / "playground.png")
    args = parser.parse_args()
    if not args.run.exists():
        subprocess.run([sys.executable, "-m", "charlm", "train", "-c", "configs/tinyshakespeare-60s.yaml",
                        "-o", str(args.run), "--no-progress"], cwd=ROOT, check=True)
    from tests.browser import browser_or_skip  # the tests' launcher: Debian's Chromium, the same flags

    from charlm.serve import ServerSettings, create_app, load_models
    from charlm.serve.run import serve_in_thread

    with serve_in_thread(create_app(load_models([str(args.run)], "cpu", 8, 32), ServerSettings())) as url, \
            browser_or_skip() as browser:
        page = browser.new_page(viewport={"width": 1200, "height": 860})
        page.goto(url + "/")
        page.wait_for_function("document.getElementById('status').textContent === 'ready'")
        page.fill("#prompt", "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n")
        page.click("#score")
        page.wait_for_function("document.getElementById('status').textContent.includes('characters scored')")
        page.fill("#length", "400")
        page.fill("#seed", "3")
        page.click("#generate")
        page.wait_for_function("document.getElementById('status').textContent.includes('characters (')")
        args.output.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.output), full_page=True)
        print(f"wrote {args.output}")
        writer_png = args.output.with_name("writer.png")
        with tempfile.TemporaryDirectory() as tmp:
            from charlm.export import export

            html = export(args.run, "html", Path(tmp) / "writer.html")
            # The page forbids eval in its CSP; Playwright's waits need it, so the automation bypasses it.
            page = browser.new_context(viewport={"width": 900, "height": 700}, bypass_csp=True).new_page()
            page.goto(html.as_uri())
            page.fill("#prompt", "ROMEO:\n")
            page.fill("#length", "300")
            page.fill("#seed", "7")
            page.click("#write")
            page.wait_for_function("!document.getElementById('write').disabled")
            page.screenshot(path=str(writer_png), full_page=True)
        print(f"wrote {writer_png}")


if __name__ == "__main__":
    main()
