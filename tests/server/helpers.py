"""Shared by the server tests: the test client, a live server in a thread, an SSE reader."""

from __future__ import annotations

import socket
import time
import warnings

with warnings.catch_warnings():
    # starlette warns at import when its test client runs on httpx rather than httpx2; both work.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

LOCAL = "http://127.0.0.1"  # without a token the server answers only loopback Host headers
STEPS = 2500


def make_client(app, **kwargs) -> TestClient:
    return TestClient(app, base_url=kwargs.pop("base_url", LOCAL), **kwargs)


def raw_get(port: int, target: str, host: str = "127.0.0.1", timeout: float = 5.0) -> tuple[int, bytes]:
    """Send ``GET target`` byte for byte (no client-side normalisation of ``..``); return status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body
