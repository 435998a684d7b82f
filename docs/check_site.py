"""Open the built documentation site in headless Chromium and fail on what a reader would trip on.

Usage: ``python docs/check_site.py docs/_build/html [--screenshots DIR]`` (``python3 dev.py site``).

The site is served on 127.0.0.1 by a local HTTP server and crawled from ``index.html`` by a real browser
(Debian's ``chromium``, driven through Playwright with the system binary; no browser is downloaded).
It fails when:

- a page the site must have (:data:`REQUIRED`) is missing, or a built page cannot be reached by links;
- an internal link leads to a missing page, or its ``#fragment`` names no element of that page;
- an image (``<img>``, including notebook outputs and SVG files) does not load or has no size;
- a same-site request fails or answers 4xx/5xx, or a page throws a JavaScript error.

Screenshots of the landing page and of one recipe are written with ``--screenshots``.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

#: Pages the site must have (paths relative to the site root).
REQUIRED = [
    "index.html",
    "getting-started.html",
    "concepts.html",
    "recipes/index.html",
    "findings.html",
    "before-you-ship.html",
    "api/generated/cli.html",
    "api/generated/index.html",
    "api/generated/tiegraph.html",
    "survey.html",
    "benchmarks.html",
    "changelog.html",
]
#: Sphinx's own pages that need not be linked from the content.
UNLINKED_OK = {"genindex.html", "search.html", "py-modindex.html"}

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise SystemExit("check_site: no chromium on PATH (Debian: apt-get install chromium)")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


IMAGES_JS = """() => Array.from(document.images).map(i => ({
    src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0 && i.naturalHeight > 0}))"""
LINKS_JS = """() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"""
IDS_JS = """() => Array.from(document.querySelectorAll('[id]')).map(e => e.id)
    .concat(Array.from(document.querySelectorAll('a[name]')).map(e => e.name))"""


def check(site: Path, screenshots: Path | None) -> list[str]:
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    server, base = serve(site)
    user_data = tempfile.mkdtemp(prefix="tiegraph-chromium-")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                user_data,
                executable_path=chromium(),
                headless=True,
                args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 900},
            )
            page = context.new_page()
            failed: list[str] = []
            page.on("pageerror", lambda exc: failed.append(f"JavaScript error: {exc}"))
            page.on(
                "requestfailed",
                lambda r: (
                    failed.append(f"request failed: {r.url} ({r.failure})")
                    if r.url.startswith(base)
                    else None
                ),
            )
            page.on(
                "response",
                lambda r: (
                    failed.append(f"HTTP {r.status}: {r.url}")
                    if r.url.startswith(base) and r.status >= 400
                    else None
                ),
            )
            ids: dict[str, set[str]] = {}
            fragments: list[tuple[str, str, str]] = []  # (from page, to page, fragment)
            queue, seen = [base + "index.html"], set()
            while queue:
                url = queue.pop(0)
                if url in seen:
                    continue
                seen.add(url)
                failed.clear()
                response = page.goto(url, wait_until="load")
                rel = url[len(base) :]
                if response is None or response.status >= 400:
                    problems.append(f"{rel}: missing page (HTTP {response.status if response else '?'})")
                    continue
                page.wait_for_load_state("networkidle")
                problems += [f"{rel}: {f}" for f in failed]
                problems += [
                    f"{rel}: image does not load: {i['src'][:120]}"
                    for i in page.evaluate(IMAGES_JS)
                    if not i["ok"]
                ]
                ids[rel] = set(page.evaluate(IDS_JS))
                for href in page.evaluate(LINKS_JS):
                    target, fragment = urldefrag(urljoin(url, href))
                    if not target.startswith(base) or urlparse(target).path.startswith("/_sources/"):
                        continue
                    if target.endswith("/"):
                        target += "index.html"
                    if fragment:
                        fragments.append((rel, target[len(base) :], fragment))
                    if target.endswith(".html") and target not in seen:
                        queue.append(target)
                    elif not target.endswith(".html"):
                        status = page.request.get(target).status
                        if status >= 400:
                            problems.append(f"{rel}: broken link to {target[len(base) :]} (HTTP {status})")
            for source, target, fragment in fragments:
                if target in ids and fragment not in ids[target]:
                    problems.append(f"{source}: link to {target}#{fragment}: no such anchor")
            reached = {u[len(base) :] for u in seen}
            problems += [
                f"required page missing: {r}" for r in REQUIRED if r not in reached or not (site / r).exists()
            ]
            built = {str(p.relative_to(site)) for p in site.rglob("*.html") if "_static" not in p.parts}
            orphans = sorted(built - reached - UNLINKED_OK - {p for p in built if p.startswith("_")})
            problems += [f"page not linked from the site: {o}" for o in orphans]
            print(f"check_site: {len(reached)} pages opened in {chromium()}", flush=True)
            if screenshots:
                screenshots.mkdir(parents=True, exist_ok=True)
                for name, rel in [("landing", "index.html"), ("recipe", "recipes/lora-tied-head.html")]:
                    if (site / rel).exists():
                        page.goto(base + rel, wait_until="networkidle")
                        page.screenshot(path=str(screenshots / f"{name}.png"), full_page=False)
                        print(f"check_site: screenshot {screenshots / (name + '.png')}")
            context.close()
    finally:
        server.shutdown()
        shutil.rmtree(user_data, ignore_errors=True)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("site", type=Path, help="the built HTML site (docs/_build/html)")
    parser.add_argument("--screenshots", type=Path, help="write landing.png and recipe.png here")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").exists():
        print(
            f"check_site: {args.site}/index.html does not exist: run `python3 dev.py docs` first",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    problems = check(args.site, args.screenshots)
    for problem in problems:
        print(f"check_site: {problem}", file=sys.stderr)
    print(f"check_site: {'FAILED, ' + str(len(problems)) + ' problems' if problems else 'ok'}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
