"""Start the server: bind a socket (127.0.0.1:6150 or the next free port), pick a token, run uvicorn.

``serve`` blocks until Ctrl-C; ``BackgroundServer`` runs in a thread beside a training loop (the demo).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
import time
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import uvicorn

from ..run import default_dir
from .app import create_app
from .live import LiveHub
from .security import check_token, new_token

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6150
PORT_TRIES = 10  # 6150…6159, then any free port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def choose_token(host: str, token: str | None) -> str | None:
    """The given token; a new one when ``host`` is reachable from other machines; else none."""
    if token is not None:
        return check_token(token)
    return None if is_loopback(host) else new_token()


def bind(host: str, port: int | None) -> socket.socket:
    """A listening socket on ``host``: ``port``, or with ``None`` the first free of 6150…6159, or any."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    candidates = [port] if port is not None else [*range(DEFAULT_PORT, DEFAULT_PORT + PORT_TRIES), 0]
    for i, candidate in enumerate(candidates):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host.strip("[]"), candidate))
            sock.listen(128)
            return sock
        except OSError as e:
            sock.close()
            if e.errno != errno.EADDRINUSE or i == len(candidates) - 1:
                raise OSError(e.errno, f"cannot listen on {host}:{candidate}: {e.strerror}") from None
    raise AssertionError("unreachable")


def urls(host: str, port: int, token: str | None) -> list[str]:
    """Where to open the dashboard; for a wildcard host, by this machine's name and by loopback."""
    query = f"?token={quote(token)}" if token else ""
    if host in ("0.0.0.0", "::", "[::]", ""):
        names = [socket.gethostname(), "127.0.0.1"]
    else:
        names = [f"[{host.strip('[]')}]" if ":" in host else host]
    return [f"http://{name}:{port}/{query}" for name in names]


class _Server(uvicorn.Server):
    # uvicorn waits for open responses before it shuts the app down; end the live streams first.
    def __init__(self, config: uvicorn.Config, hub: LiveHub) -> None:
        super().__init__(config)
        self.hub = hub

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.hub.close()
        await super().shutdown(sockets)


@dataclass
class Prepared:
    server: _Server
    sock: socket.socket
    urls: list[str]
    token: str | None
    root: Path  # the runs directory served


def prepare(root: str | os.PathLike[str] | None, host: str, port: int | None, token: str | None) -> Prepared:
    """Everything short of running: the runs directory (created if missing), token, socket, app, URLs."""
    root = (Path(root) if root is not None else default_dir()).resolve()
    if (root / "run.json").is_file():  # one run's directory: its runs directory is the one above it
        print(f"deepscope: {root} is the directory of run {root.name!r}; serving the runs directory that holds it, "
              f"{root.parent}", flush=True)  # fmt: skip
        root = root.parent
    if not root.exists():
        print(f"deepscope: {root} does not exist yet; created it (runs written there will appear)", flush=True)
    root.mkdir(parents=True, exist_ok=True)
    token = choose_token(host, token)
    sock = bind(host, port)
    app = create_app(root, token=token)
    config = uvicorn.Config(
        app, log_config=None, log_level="warning", access_log=False, ws="none", timeout_graceful_shutdown=3
    )
    bound_port = sock.getsockname()[1]
    return Prepared(_Server(config, app.state.live), sock, urls(host, bound_port, token), token, root)


def serve(
    root: str | os.PathLike[str] | None = None,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    token: str | None = None,
    open_browser: bool = False,
) -> None:
    """Serve the dashboard for the runs in ``root`` until Ctrl-C (see ``deepscope.serve``)."""
    prepared = prepare(root, host, port, token)
    print(f"deepscope: serving {prepared.root}", flush=True)
    for url in prepared.urls:
        print(f"deepscope: open {url}", flush=True)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(prepared.urls[-1],)).start()
    try:
        prepared.server.run(sockets=[prepared.sock])
    except KeyboardInterrupt:
        pass
    finally:
        prepared.sock.close()


class BackgroundServer:
    """The server in a daemon thread, for a process that does something else (training) meanwhile.

    >>> with BackgroundServer("deepscope-runs") as server:
    ...     print(server.url)
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        token: str | None = None,
    ) -> None:
        self._prepared = prepare(root, host, port, token)
        self.urls = self._prepared.urls
        self.url = self.urls[-1]
        self.token = self._prepared.token
        self._thread = threading.Thread(target=self._run, name="deepscope-server", daemon=True)

    def _run(self) -> None:
        try:
            self._prepared.server.run(sockets=[self._prepared.sock])
        except SystemExit:  # uvicorn exits when the app fails to start; start() reports it
            pass

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._prepared.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("deepscope: the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._prepared.server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._prepared.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
