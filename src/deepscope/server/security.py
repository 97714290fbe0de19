"""Safe-by-default middleware: token auth, loopback-only Host without a token, same-origin writes, a body limit.

Pure ASGI middleware (not ``BaseHTTPMiddleware``) so that streamed answers such as ``/api/live`` pass
through untouched.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import secrets
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_COOKIE = "deepscope_token"  # the cookie's name begins so: see ``token_cookie``
MAX_BODY_BYTES = 1 << 20  # 1 MiB
_TOKEN = re.compile(r"[A-Za-z0-9._~-]{1,256}")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def check_token(token: str) -> str:
    """Tokens travel in URLs, headers and cookies: keep them to URL-safe characters."""
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise ValueError("deepscope: a token is 1-256 characters of A-Z a-z 0-9 . _ ~ -")
    return token


def token_cookie(token: str) -> str:
    """The name of the cookie that carries ``token``: ``deepscope_token_`` and 12 hex digits of its SHA-256.

    Browsers keep cookies per host, not per port: with one name for every server, opening a second token server on
    the same host replaced the first one's cookie (its page got 401). One name per token keeps them apart, as Jupyter
    does."""
    return f"{TOKEN_COOKIE}_{hashlib.sha256(token.encode()).hexdigest()[:12]}"


async def _send_json(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class TokenAuth:
    """Every request carries the token: ``Authorization: Bearer``, the cookie, or ``?token=`` (→ 401).

    A request authenticated by ``?token=`` gets the cookie back, so the page's own requests need nothing.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = check_token(token).encode()
        self.cookie = token_cookie(token)

    def _matches(self, presented: str | None) -> bool:
        return presented is not None and secrets.compare_digest(presented.encode("utf-8", "replace"), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        auth = conn.headers.get("authorization", "")
        bearer = auth[7:].strip() if auth[:7].lower() == "bearer " else None
        if self._matches(bearer) or self._matches(conn.cookies.get(self.cookie)):
            await self.app(scope, receive, send)
        elif self._matches(conn.query_params.get("token")):
            await self.app(scope, receive, self._setting_cookie(send))
        else:
            await _send_json(send, 401, "a token is required", [(b"www-authenticate", b"Bearer")])

    def _setting_cookie(self, send: Send) -> Send:
        cookie = f"{self.cookie}={self.token.decode()}; Path=/; HttpOnly; SameSite=Strict".encode()

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        return wrapped


_HOST = re.compile(r"\[(?P<v6>[0-9a-f:.]+)\](?::\d{1,5})?|(?P<name>[a-z0-9.-]+)(?::\d{1,5})?|(?P<bare>[0-9a-f:.]+)")


def is_loopback_host(host_header: str) -> bool:
    """``localhost``, ``127.0.0.1:6150``, ``[::1]:6150`` → True; any other name or address → False."""
    m = _HOST.fullmatch(host_header.strip().lower())  # anything else (userinfo, a path, a bad port) is refused
    if m is None:
        return False
    host = m["v6"] or m["name"] or m["bare"]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LoopbackHostOnly:
    """Without a token, answer only requests addressed to a loopback name (blocks DNS rebinding → 400)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = HTTPConnection(scope).headers.get("host")
            if host is not None and not is_loopback_host(host):
                await _send_json(send, 400, "this server answers only requests to a loopback address")
                return
        await self.app(scope, receive, send)


_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def is_same_origin(headers: Headers) -> bool:
    """Whether a request comes from a page of this server, as far as a browser says: its ``Origin`` names the host it
    was sent to (``Host``, or ``X-Forwarded-Host`` behind a proxy — a cross-origin page cannot set that header
    without a preflight, which fails), or without ``Origin``, ``Sec-Fetch-Site`` is absent, ``same-origin`` or
    ``none``. Requests from programs (curl, scripts) carry neither header."""
    origin = headers.get("origin")
    if origin is None:
        return headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    parts = urlsplit(origin)  # "null" (a sandboxed frame, a file: page) has no host: never ours
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    ours = {h.strip().lower() for h in (headers.get("host"), headers.get("x-forwarded-host")) if h}
    return parts.netloc.lower() in ours


class SameOriginWrites:
    """Requests that change state (POST, PUT, PATCH, DELETE) from another origin get 403.

    A page anywhere can send a POST to ``127.0.0.1`` without a preflight (``fetch(url, {method: "POST", mode:
    "no-cors"})``): without this, any site a user visits could start projection jobs, which take CPU for minutes and
    write files. The dashboard's own requests are same-origin.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _WRITES and not is_same_origin(Headers(scope=scope)):
            await _send_json(send, 403, "requests that change state are answered only from this server's own pages")
            return
        await self.app(scope, receive, send)


class _BodyTooLarge(HTTPException):
    """Raised by the counting ``receive``: an ``HTTPException``, so that FastAPI, which answers any other error while
    reading a body with 400 "There was an error parsing the body", lets it through to be answered 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request bodies are limited to {limit} bytes")


class BodyLimit:
    """Request bodies over ``limit`` bytes get 413, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = HTTPConnection(scope).headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await _send_json(send, 400, "bad Content-Length")
                return
            if int(length) > self.limit:
                await _send_json(send, 413, f"request bodies are limited to {self.limit} bytes")
                return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge(self.limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge as e:  # an app without Starlette's handling of HTTPException
            if started:
                raise
            await _send_json(send, 413, e.detail)
