"""Open the built book in headless Chromium, offline, and check what a reader sees.

Run after ``jupyter-book build`` (``make browser``). The pages are served from a
local HTTP server and every request to any other host is blocked, so a page
that still depends on a CDN (MathJax, require.js, the widget manager) fails
here exactly as it would for a reader without a network.

Every page is also opened once in a 1,000 px wide window, as on a small laptop, with every
folded block opened: there no display equation may be wider than the column it sits in, no
output may be a stray object representation (``<matplotlib.legend.Legend at 0x...>``), and a
screenshot of the page as the reader first sees it is saved in ``_build/screenshots/``.
"""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = ROOT / "_build" / "screenshot-channels.png"
SCREENSHOTS = ROOT / "_build" / "screenshots"
NARROW = {"width": 1000, "height": 900}

pytestmark = [
    pytest.mark.skipif(not (HTML / "index.html").exists(), reason="build the book first"),
    pytest.mark.skipif(CHROMIUM is None, reason="Debian package 'chromium' is not installed"),
]


def _pages() -> list[str]:
    return sorted(str(p.relative_to(HTML)) for p in (HTML / "book").glob("*.html"))


@pytest.fixture(scope="module")
def server():
    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

    handler = functools.partial(QuietHandler, directory=str(HTML))
    httpd = Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


class PageLog:
    def __init__(self):
        self.errors: list[str] = []
        self.blocked: list[str] = []


def _open(browser, server, rel: str, viewport=None):
    context = browser.new_context(viewport=viewport or {"width": 1280, "height": 900})
    page = context.new_page()
    log = PageLog()
    host = urlparse(server).netloc

    def route(r):
        if urlparse(r.request.url).netloc == host:
            r.continue_()
        else:  # offline: nothing outside the local server
            log.blocked.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("console", lambda m: log.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: log.errors.append(str(e)))
    page.goto(f"{server}/{rel}", wait_until="load")
    page.wait_for_load_state("networkidle")
    return context, page, log


def test_all_pages_offline_without_console_errors(browser, server):
    pages = ["index.html"] + _pages()
    assert len(pages) >= 4
    problems = {}
    for rel in pages:
        context, page, log = _open(browser, server, rel)
        if page.locator(".math").count() or page.locator("span.math, div.math").count():
            page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
            page.evaluate("MathJax.startup.promise")
            page.wait_for_selector("article mjx-container", timeout=20000)
            raw = page.locator("div.math:not(:has(mjx-container))").count()
            if raw:
                problems.setdefault(rel, []).append(f"{raw} display equations not typeset")
            errors = page.locator("mjx-merror").count()
            if errors:
                problems.setdefault(rel, []).append(f"{errors} MathJax errors (unknown macro?)")
        broken = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0))"
            ".map(i => i.src)"
        )
        if broken:
            problems.setdefault(rel, []).append(f"broken images {broken}")
        if log.errors:
            problems.setdefault(rel, []).append(f"console errors {log.errors}")
        if log.blocked:
            problems.setdefault(rel, []).append(f"requests leave the book {log.blocked}")
        context.close()
    assert not problems, problems


def test_chapter_math_figures_widgets_and_folded_solution(browser, server):
    context, page, log = _open(browser, server, "book/channels.html")
    page.wait_for_selector("article mjx-container", timeout=20000)
    assert page.locator("mjx-container").count() > 10

    figures = page.locator("img")
    assert figures.count() >= 2
    assert all(
        page.evaluate("i => i.naturalWidth > 100", figures.nth(i).element_handle())
        for i in range(figures.count())
    )

    # the ipywidgets slider is rendered from the stored widget state
    page.wait_for_selector(".jupyter-widgets .slider, .widget-slider", timeout=20000)

    # solutions are folded until the reader opens them
    solution = page.locator("div.solution").first
    assert solution.count() == 1
    body = solution.locator("section").first
    assert not body.is_visible(), "a solution is visible before it is opened"
    solution.locator(".toggle-button, button, summary, .admonition-title").first.click()
    page.wait_for_timeout(500)
    assert body.is_visible(), "a solution does not open on click"

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=False)
    assert not log.errors, log.errors
    assert not log.blocked, log.blocked
    context.close()


# ---- every page at a 1,000 px window --------------------------------------------------------

#: Text outputs that are the representation of an object a cell returned by accident
#: (``ax.legend()`` as the last line instead of ``ax.legend();``).
STRAY_REPR = re.compile(
    r"<matplotlib\.[\w.]+ (?:at|object at) 0x[0-9a-fA-F]+>"
    r"|<Figure size [\d.]+x[\d.]+ with \d+ Axes>"
    r"|\[<matplotlib\.[\w.]+ object at 0x"
    r"|<[\w.]+ object at 0x[0-9a-fA-F]+>"
    r"|^\[?Text\([-\d.e]+, [-\d.e]+, '.*'\)",  # ax.set_title(...) as a cell's last line
    re.MULTILINE,
)

#: Open every folded block (solutions, hidden inputs), so that what a reader can unfold is
#: measured too.
_UNFOLD = """() => {
    document.querySelectorAll('.toggle-hidden').forEach(e => e.classList.remove('toggle-hidden'));
    document.querySelectorAll('details').forEach(d => { d.open = true; });
}"""

#: Every typeset display equation: its label, number and first characters, the width it needs
#: (its typeset math) and the width it has (its container, and the text column).
_DISPLAY_MATH = """() => {
    const column = document.querySelector('article.bd-article') || document.querySelector('main');
    const colRight = column.getBoundingClientRect().right;
    const doc = window.MathJax && MathJax.startup && MathJax.startup.document;
    const out = [];
    for (const c of document.querySelectorAll('mjx-container[display="true"]')) {
        const box = c.closest('div.math') || c.parentElement;
        const math = c.querySelector('mjx-math') || c;
        const r = math.getBoundingClientRect();
        if (r.width === 0) continue;  // not displayed (e.g. inside a hidden cell output)
        let tex = '';
        try { tex = doc.getMathItemsWithin(c)[0].math; } catch (e) { tex = c.textContent; }
        const eqno = box.querySelector('.eqno');
        out.push({
            label: (box.id || '').replace(/^equation-/, ''),
            number: eqno ? eqno.textContent.replace('#', '').trim() : '',
            tex: tex.trim().replace(/\\s+/g, ' ').slice(0, 60),
            needed: Math.ceil(Math.max(r.width, c.scrollWidth)),
            available: Math.floor(Math.min(c.clientWidth, box.clientWidth)),
            beyond_column: Math.round(r.right - colRight),
        });
    }
    return out;
}"""

#: Text outputs of code cells, with the cell's position and the first line of its code.
_CELL_OUTPUTS = """() => Array.from(document.querySelectorAll('div.cell')).map((cell, i) => ({
    cell: i + 1,
    code: ((cell.querySelector('.cell_input pre') || {}).textContent || '').split('\\n')[0],
    text: Array.from(cell.querySelectorAll('.cell_output pre, .cell_output .output'))
        .map(o => o.textContent).join('\\n'),
}))"""


def _typeset(page):
    """Wait until MathJax has typeset the page (if it has math) and its fonts are loaded."""
    if page.evaluate("!!document.querySelector('script[src*=\"mathjax\"]')"):
        page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
        page.evaluate("MathJax.startup.promise")
    page.evaluate("document.fonts.ready.then(() => true)")


@pytest.fixture(scope="module")
def narrow(browser, server):
    """What each page shows at a 1,000 px window: ``{page: {...}}``; saves the screenshots."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    seen = {}
    for rel in _pages():
        context, page, log = _open(browser, server, rel, viewport=NARROW)
        _typeset(page)
        # the whole page as it first appears (the API reference, far longer: its first screen)
        tall = page.evaluate("document.documentElement.scrollHeight") > 40 * NARROW["height"]
        page.screenshot(path=str(SCREENSHOTS / f"{Path(rel).stem}.png"), full_page=not tall)
        page.evaluate(_UNFOLD)
        page.wait_for_timeout(100)
        seen[rel] = {
            "math": page.evaluate(_DISPLAY_MATH),
            "cells": page.evaluate(_CELL_OUTPUTS),
            "title": page.title(),
            "icon": page.evaluate(
                "(() => { const l = document.querySelector('link[rel~=\"icon\"]');"
                " return l ? fetch(l.href).then(r => [l.href, r.status,"
                " r.headers.get('content-type')]) : null; })()"
            ),
            "links": page.evaluate("Array.from(document.querySelectorAll('a[href]'), a => a.href)"),
        }
        context.close()
    return seen


def test_no_display_equation_wider_than_its_column(narrow):
    """At a 1,000 px window every display equation fits its container (nothing clipped or
    scrolled sideways); a long one is split with ``aligned`` or ``split``."""
    assert sum(len(p["math"]) for p in narrow.values()) > 20, "no display equations measured"
    too_wide = [
        f"{rel}: {eq['number'] or '(unnumbered)'} {eq['label'] or ''} needs {eq['needed']} px, "
        f"has {eq['available']} px ({eq['beyond_column']:+d} px past the column): {eq['tex']}"
        for rel, p in narrow.items()
        for eq in p["math"]
        if eq["needed"] > eq["available"] + 1 or eq["beyond_column"] > 1
    ]
    assert not too_wide, "display equations wider than their column:\n" + "\n".join(too_wide)


def test_no_stray_object_representations_in_outputs(narrow):
    """No cell shows ``<matplotlib.legend.Legend at 0x...>``, ``<Figure size ...>`` or
    ``[<matplotlib.lines.Line2D ...>]``: end the plotting line with ``;``."""
    assert sum(len(p["cells"]) for p in narrow.values()) > 50, "no code cells found"
    stray = [
        f"{rel} cell {c['cell']} ({c['code']!r}): {m.group(0)}"
        for rel, p in narrow.items()
        for c in p["cells"]
        for m in STRAY_REPR.finditer(c["text"])
    ]
    assert not stray, "stray object representations:\n" + "\n".join(stray)


def test_page_titles_name_the_book_once_and_show_the_favicon(narrow):
    import yaml

    book = yaml.safe_load((ROOT / "_config.yml").read_text())["title"]
    problems = []
    for rel, p in narrow.items():
        if p["title"].count(book) != 1 or p["title"].strip() == book:
            problems.append(f"{rel}: title {p['title']!r} does not name the page and the book once")
        icon = p["icon"]
        if not icon or icon[1] != 200 or not (icon[2] or "").startswith("image/"):
            problems.append(f"{rel}: favicon {icon}")
    assert not problems, problems


def test_launch_and_repository_buttons_use_the_configured_repository(narrow):
    """Binder, Colab, the repository and issue buttons and the preface's links all name the
    one repository of ``_config.yml`` (``repository.url``)."""
    import yaml

    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"].rstrip("/")
    org_repo = urlparse(url).path.strip("/")
    chapter = narrow["book/channels.html"]["links"]
    binder = [h for h in chapter if "mybinder.org/v2/" in h]
    colab = [h for h in chapter if "colab.research.google.com/" in h]
    assert binder and all(f"/v2/gh/{org_repo}/" in h for h in binder), binder
    assert colab and all(f"/github/{org_repo}/" in h for h in colab), colab
    assert url in chapter, f"no repository button to {url}"
    for rel in ("book/intro.html", "book/building.html", "book/channels.html"):
        github = [h for h in narrow[rel]["links"] if urlparse(h).netloc == "github.com"]
        others = [h for h in github if not h.startswith(url)]
        assert github and not others, f"{rel}: links to another repository {others}"


def test_bibliography_labels_are_the_author_year_citations(browser, server):
    """A citation "(Schynol and Pesavento, 2026)" leads to the entry labelled
    "Schynol and Pesavento, 2026" on the bibliography page, not to "[31]"."""
    context, page, log = _open(browser, server, "book/bibliography.html")
    labels = page.evaluate(
        "Object.fromEntries(Array.from(document.querySelectorAll('.citation[id]'), c =>"
        " [c.id, c.querySelector('.label').textContent.replace(/^\\[|\\]$/g, '').trim()]))"
    )
    context.close()
    assert len(labels) >= 10, labels
    cited, wrong = 0, {}
    for rel in _pages():
        html = (HTML / rel).read_text()
        for target, text in re.findall(
            r'<a class="reference internal" href="bibliography\.html#(id\d+)"[^>]*>(.*?)</a>', html
        ):
            text = re.sub(r"<[^>]+>", "", text).replace("\xa0", " ").strip()
            if not re.search(r", \d{4}[a-z]?$", text):
                continue  # a textual citation "Pellaco et al. [2020]" links its parts
            cited += 1
            if labels.get(target) != text:
                wrong.setdefault(f"({text}) -> [{labels.get(target)}]", rel)
    assert cited >= 10, "no author-year citations found"
    assert not wrong, "citations whose entry has another label:\n" + "\n".join(
        f"{pair} (first in {rel})" for pair, rel in sorted(wrong.items())
    )


#: One page per part with a static slider (issue of the book's design: at least one per part).
SLIDER_PAGES = [
    "book/sparse_recovery.html",
    "book/unfolded_wmmse.html",
    "book/hybrid_arrays_codebooks.html",
]


def test_every_part_has_a_static_slider():
    with_slider = {rel for rel in _pages() if 'class="frame-slider"' in (HTML / rel).read_text()}
    assert set(SLIDER_PAGES) <= with_slider, sorted(with_slider)


@pytest.mark.parametrize("rel", SLIDER_PAGES)
def test_static_frame_slider_changes_the_figure(browser, server, rel):
    """The precomputed-frames sliders (``lib.core.frame_slider``) work offline, without a
    kernel: moving one changes the image and the value shown next to it."""
    context, page, log = _open(browser, server, rel)
    sliders = page.locator(".frame-slider")
    assert sliders.count() >= 1
    for i in range(sliders.count()):
        slider = sliders.nth(i)
        img, value = slider.locator("img"), slider.locator(".frame-value")
        rng = slider.locator("input[type=range]")
        before = (img.get_attribute("src"), value.inner_text())
        target = "0" if rng.input_value() != "0" else rng.get_attribute("max")
        rng.evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", target)
        after = (img.get_attribute("src"), value.inner_text())
        assert after[0] != before[0] and after[1] != before[1], (rel, i, before[1], after[1])
    assert not log.errors and not log.blocked
    context.close()
