"""Shared by the browser tests: Chromium's flags, the hostile string, console capture, chart queries."""

from __future__ import annotations

import json

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
XSS = "<img src=x onerror=window.__pwned=1>"
LONG_STEPS = 5000  # more than the 1,000 buckets a chart asks for: downsampled
SHORT_STEPS = 300  # fewer: every point is its own bucket


class Console:
    """Errors the page reported: console errors, uncaught exceptions, failed requests."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("requestfailed", self._failed)

    def _console(self, m) -> None:
        if m.type != "error":
            return
        # "Failed to load resource: … 404": which resource, so that a test can tell an answer it expects
        where = m.location.get("url") if m.text.startswith("Failed to load resource") else None
        self.errors.append(f"console.{m.type}: {m.text}" + (f" ({where})" if where else ""))

    def take(self, url_part: str) -> list[str]:
        """Remove and return the errors that name `url_part`: failed loads a test expects (a 404 it asked for)."""
        taken = [e for e in self.errors if url_part in e]
        self.errors[:] = [e for e in self.errors if url_part not in e]
        return taken

    def _failed(self, request) -> None:
        # The live stream is cut when the page closes or navigates, and the app cancels requests whose answer is no
        # longer wanted (a superseded activation matrix, say): neither is an error of the app.
        if "/api/live" not in request.url and request.failure != "net::ERR_ABORTED":
            self.errors.append(f"requestfailed: {request.url} {request.failure}")


def charts(page) -> dict:
    """What every chart holds: ``{key: {run_id: {points, firstX, lastX, lastStep, lastY, exact, zoomed}}}``."""
    return page.evaluate("() => JSON.parse(JSON.stringify(window.__deepscope.charts))")


def wait_for(page, predicate: str, arg=None, timeout: float = 10_000) -> None:
    page.wait_for_function(predicate, arg=arg, timeout=timeout, polling=20)


def found(page, locate: str, arg, timeout: float = 10_000) -> None:
    """Once ``locate(arg)`` finds its target: a view being drawn anew may be without it for a moment."""
    wait_for(page, f"(arg) => ({locate})(arg) != null", arg, timeout=timeout)


def point_until(page, locate: str, arg, done: str, *, click: bool = True, tries: int = 4) -> tuple[float, float]:
    """Click (or hover) the page position ``locate(arg)`` returns until ``done(arg)`` holds; that position.

    The panels around a view may still be settling — loading, growing a line — when the pointer arrives, so that
    it lands beside its target: each try locates the target anew. ``locate`` returns ``{x, y}`` or ``[x, y]``.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        found(page, locate, arg)
        at = page.evaluate(locate, arg)
        assert at is not None, f"{locate} found nothing for {arg!r}"
        x, y = (at["x"], at["y"]) if isinstance(at, dict) else at
        if click:
            page.mouse.click(x, y)
        else:
            page.mouse.move(0, 0)  # away first, so that arriving is a move even at the same spot
            page.mouse.move(x, y)
        try:
            wait_for(page, done, arg, timeout=3_000)
            return x, y
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise


# The page position at fractions (fx, fy) of the first element matching a selector, plus (dx, dy) pixels:
# ``[selector, fx, fy]`` or ``[selector, fx, fy, dx, dy]``, for ``point_until``.
ELEMENT_AT = """([sel, fx, fy, dx, dy]) => { const e = document.querySelector(sel); if (!e) return null;
    const r = e.getBoundingClientRect(); if (!r.width || !r.height) return null;
    return [r.left + r.width * fx + (dx ?? 0), r.top + r.height * fy + (dy ?? 0)]; }"""


def showing(selector: str, text: str = "") -> str:
    """A predicate for ``wait_for`` and ``point_until``: an element ``selector`` matches is shown, holding ``text``."""
    return f"() => (document.querySelector({json.dumps(selector)})?.textContent ?? null)?.includes({json.dumps(text)})"


def point_at(page, selector: str, fx: float, fy: float, done: str, *, dx: float = 0, dy: float = 0,
             click: bool = True) -> tuple[float, float]:  # fmt: skip
    """``point_until`` at fractions (fx, fy) of ``selector``'s box, plus (dx, dy) pixels, until ``done()`` holds."""
    return point_until(page, ELEMENT_AT, [selector, fx, fy, dx, dy], done, click=click)


def settled(page, *selectors: str, still_ms: float = 300, timeout: float = 15_000) -> None:
    """Once the boxes of ``selectors`` have not moved for ``still_ms`` (views above them may still be growing)."""
    wait_for(
        page,
        """([sels, ms]) => { const now = performance.now();
            const key = JSON.stringify(sels.map((s) => { const e = document.querySelector(s); if (!e) return null;
                const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }));
            const held = (window.__settled ??= {}), id = sels.join('|');
            if (held[id]?.key !== key) { held[id] = { key, since: now }; return false; }
            return now - held[id].since >= ms; }""",
        [list(selectors), still_ms],
        timeout=timeout,
    )


# The page position of neuron ``n``'s column of the neuron matrix (``cols`` columns wide), ``dy`` below its top.
NEURON_AT = """([n, cols, dy]) => { const e = document.querySelector('[data-testid=neuron-matrix]');
    if (!e) return null;
    const r = e.getBoundingClientRect(); return [r.left + (n + 0.5) * r.width / cols, r.top + dy]; }"""


def eventually(check, timeout: float = 10.0, every: float = 0.2):
    """``check()``'s value once it raises no AssertionError: for what a test sees only in pixels, drawn in a frame
    of its own after the state it waited for. Its last AssertionError past ``timeout`` seconds."""
    import time

    end = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > end:
                raise
            time.sleep(every)


def drag_until(page, locate: str, arg, done: str, *, steps: int = 4, tries: int = 4) -> None:
    """Drag the mouse along the page positions ``locate(arg)`` returns (``[[x, y], …]``) until ``done(arg)`` holds.

    As ``point_until``: each try locates the path anew, the panels around it having perhaps moved it."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
        found(page, locate, arg)
        path = page.evaluate(locate, arg)
        assert path, f"{locate} found nothing for {arg!r}"
        page.mouse.move(*path[0])
        page.mouse.down()
        for x, y in path[1:]:
            page.mouse.move(x, y, steps=steps)
        page.mouse.up()
        try:
            wait_for(page, done, arg, timeout=3_000)
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise
