"""The built web app, served at ``/`` with a single-page-app fallback to ``index.html``.

Files are indexed by their relative path when the build changes, so a request path is looked up in that
index and never joined onto the filesystem.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.responses import FileResponse, HTMLResponse, Response

STATIC_DIR = Path(__file__).parent / "static"

NOT_BUILT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>deepscope</title><link rel="icon" href="data:,"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 4em auto">
<h1>deepscope</h1>
<p>The web app is not built. Run <code>make web</code> in the repository, then reload this page.</p>
<p>The HTTP API answers at <a href="api/runs">/api/runs</a>.</p>
</body></html>
"""


class StaticSite:
    """Serves ``directory`` (a Vite build); re-indexes it whenever ``index.html`` changes."""

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self.directory = directory
        self._stamp: int | None = None
        self._files: dict[str, Path] = {}

    def _index(self) -> dict[str, Path] | None:
        try:
            stamp = (self.directory / "index.html").stat().st_mtime_ns
        except OSError:
            return None
        if stamp != self._stamp:
            files = {}
            for folder, _, names in os.walk(self.directory):
                for name in names:
                    path = Path(folder) / name
                    files[path.relative_to(self.directory).as_posix()] = path
            self._files, self._stamp = files, stamp
        return self._files

    def response(self, path: str) -> Response:
        files = self._index()
        if files is None:
            return HTMLResponse(NOT_BUILT)
        found = files.get(path.lstrip("/"))
        if found is None or found.name == "index.html":
            # Client-side routes (and `/`) all get the app's shell; it must not be cached across builds.
            return FileResponse(files["index.html"], headers={"cache-control": "no-cache"})
        return FileResponse(found)
