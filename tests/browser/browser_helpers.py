"""Shared by the browser tests: Chromium's flags, the hostile string, console capture, chart queries."""

from __future__ import annotations

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


def point_until(page, locate: str, arg, done: str, *, click: bool = True, tries: int = 4) -> None:
    """Click (or hover) the page position ``locate(arg)`` returns until ``done(arg)`` holds.

    The panels around a view may still be settling — loading, growing a line — when the pointer arrives, so that
    it lands beside its target: each try locates the target anew. ``locate`` returns ``{x, y}`` or ``[x, y]``.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    for attempt in range(tries):
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
            return
        except PlaywrightTimeout:
            if attempt == tries - 1:
                raise
