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
from typing import TYPE_CHECKING
from urllib.parse import urldefrag, urljoin, urlparse

if TYPE_CHECKING:
    from playwright.sync_api import Page

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


class _Crawl:
    """A breadth-first walk of the site from ``index.html`` in one page, noting what a reader trips on.

    After :meth:`run`, ``problems`` holds each page's problems in the order the pages were opened, then the
    links whose ``#fragment`` names no element of the page they lead to; ``seen`` holds every URL opened.
    """

    def __init__(self, page: Page, base: str) -> None:
        self.page, self.base = page, base
        self.problems: list[str] = []
        self.seen: set[str] = set()
        self.failed: list[str] = []  # what the open page's requests and scripts reported
        self.ids: dict[str, set[str]] = {}
        self.fragments: list[tuple[str, str, str]] = []  # (from page, to page, fragment)
        page.on("pageerror", lambda exc: self.failed.append(f"JavaScript error: {exc}"))
        page.on(
            "requestfailed",
            lambda r: (
                self.failed.append(f"request failed: {r.url} ({r.failure})")
                if r.url.startswith(base)
                else None
            ),
        )
        page.on(
            "response",
            lambda r: (
                self.failed.append(f"HTTP {r.status}: {r.url}")
                if r.url.startswith(base) and r.status >= 400
                else None
            ),
        )

    def run(self) -> None:
        queue = [self.base + "index.html"]
        while queue:
            url = queue.pop(0)
            if url in self.seen:
                continue
            self.seen.add(url)
            queue += self._visit(url)
        for source, target, fragment in self.fragments:
            if target in self.ids and fragment not in self.ids[target]:
                self.problems.append(f"{source}: link to {target}#{fragment}: no such anchor")

    def _visit(self, url: str) -> list[str]:
        """Open one page and note its problems; the pages it links to that are not opened yet."""
        self.failed.clear()
        response = self.page.goto(url, wait_until="load")
        rel = url[len(self.base) :]
        if response is None or response.status >= 400:
            self.problems.append(f"{rel}: missing page (HTTP {response.status if response else '?'})")
            return []
        self.page.wait_for_load_state("networkidle")
        self.problems += [f"{rel}: {f}" for f in self.failed]
        self.problems += [
            f"{rel}: image does not load: {i['src'][:120]}"
            for i in self.page.evaluate(IMAGES_JS)
            if not i["ok"]
        ]
        self.ids[rel] = set(self.page.evaluate(IDS_JS))
        targets = (self._follow(url, rel, href) for href in self.page.evaluate(LINKS_JS))
        return [t for t in targets if t is not None and t not in self.seen]

    def _follow(self, url: str, rel: str, href: str) -> str | None:
        """The site page a link leads to; a link to another file of the site is fetched and checked here."""
        target, fragment = urldefrag(urljoin(url, href))
        if not target.startswith(self.base) or urlparse(target).path.startswith("/_sources/"):
            return None
        if target.endswith("/"):
            target += "index.html"
        if fragment:
            self.fragments.append((rel, target[len(self.base) :], fragment))
        if target.endswith(".html"):
            return target
        status = self.page.request.get(target).status
        if status >= 400:
            self.problems.append(f"{rel}: broken link to {target[len(self.base) :]} (HTTP {status})")
        return None


def coverage(site: Path, reached: set[str]) -> list[str]:
    """Required pages not reached (or not built), and built pages no link reaches."""
    problems = [
        f"required page missing: {r}" for r in REQUIRED if r not in reached or not (site / r).exists()
    ]
    built = {str(p.relative_to(site)) for p in site.rglob("*.html") if "_static" not in p.parts}
    orphans = sorted(built - reached - UNLINKED_OK - {p for p in built if p.startswith("_")})
    return problems + [f"page not linked from the site: {o}" for o in orphans]


def take_screenshots(page: Page, base: str, site: Path, screenshots: Path) -> None:
    screenshots.mkdir(parents=True, exist_ok=True)
    for name, rel in [("landing", "index.html"), ("recipe", "recipes/lora-tied-head.html")]:
        if (site / rel).exists():
            page.goto(base + rel, wait_until="networkidle")
            page.screenshot(path=str(screenshots / f"{name}.png"), full_page=False)
            print(f"check_site: screenshot {screenshots / (name + '.png')}")


def check(site: Path, screenshots: Path | None) -> list[str]:
    from playwright.sync_api import sync_playwright

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
            crawl = _Crawl(page, base)
            crawl.run()
            reached = {u[len(base) :] for u in crawl.seen}
            problems = crawl.problems + coverage(site, reached)
            print(f"check_site: {len(reached)} pages opened in {chromium()}", flush=True)
            if screenshots:
                take_screenshots(page, base, site, screenshots)
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
