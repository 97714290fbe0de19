"""Token auth, the loopback Host check, the body limit, closed CORS and paths that try to escape."""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tests.server.helpers import LOCAL, make_client, raw_get

from deepscope.server import create_app
from deepscope.server.launch import BackgroundServer
from deepscope.server.security import BodyLimit, check_token, is_loopback_host, token_cookie

TOKEN = "s3cret-token_1"


@pytest.fixture
def protected(store):
    with make_client(create_app(store.root, token=TOKEN), base_url="http://example.org") as c:
        yield c


@pytest.mark.parametrize("path", ["/api/health", "/api/runs", "/api/live", "/api/openapi.json", "/", "/runs/x"])
def test_without_the_token_everything_is_401(protected, path):
    r = protected.get(path)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "how",
    [
        {"headers": {"Authorization": "Bearer wrong"}},
        {"params": {"token": "wrong"}},
        {"headers": {"Authorization": TOKEN}},  # not a Bearer credential
        {"headers": {"Authorization": f"Basic {TOKEN}"}},
    ],
)
def test_a_wrong_token_is_401(protected, how):
    assert protected.get("/api/runs", **how).status_code == 401


def test_a_wrong_cookie_is_401(protected):
    protected.cookies.set(token_cookie(TOKEN), "wrong")
    assert protected.get("/api/runs").status_code == 401


def test_the_token_as_header_cookie_or_parameter_is_200(protected):
    assert protected.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert protected.get("/api/runs", params={"token": TOKEN}).status_code == 200
    protected.cookies.clear()
    protected.cookies.set(token_cookie(TOKEN), TOKEN)
    assert protected.get("/api/runs").status_code == 200


def test_opening_the_page_with_the_token_sets_the_cookie(protected):
    r = protected.get("/", params={"token": TOKEN})
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{token_cookie(TOKEN)}={TOKEN};") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert protected.get("/api/runs").status_code == 200  # the client sends the cookie back
    assert "set-cookie" not in protected.get("/api/runs").headers


def test_two_token_servers_on_one_host_keep_their_own_cookies(store):
    """A browser keeps cookies per host, not per port: opening a second server must not log the first one out."""
    with (
        BackgroundServer(store.root, port=0, token="token-a") as a,
        BackgroundServer(store.root, port=0, token="token-b") as b,
        httpx.Client() as browser,  # one cookie jar for 127.0.0.1, whatever the port
    ):
        assert browser.get(a.url).status_code == 200  # the printed URL, ?token= and all
        assert browser.get(b.url).status_code == 200
        for server in (a, b):
            assert browser.get(server.url.partition("?")[0] + "api/runs").status_code == 200  # by its cookie
        assert token_cookie("token-a") != token_cookie("token-b")
        assert {c.name for c in browser.cookies.jar} == {token_cookie("token-a"), token_cookie("token-b")}


def test_tokens_must_be_url_safe():
    assert check_token("abc-DEF_0.9~") == "abc-DEF_0.9~"
    for bad in ("", "has space", "semi;colon", "a" * 257, "plus+sign"):
        with pytest.raises(ValueError):
            check_token(bad)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True), ("localhost:6150", True), ("127.0.0.1:6150", True), ("127.1.2.3", True),
        ("[::1]:6150", True), ("::1", True), ("app.localhost:5173", True),
        ("evil.example", False), ("evil.example:6150", False), ("10.0.0.1", False), ("[::2]:80", False),
        ("localhost.evil.example", False), ("", False), ("127.0.0.1:8801@evil.example", False),
        ("localhost:abc", False), ("[::1]:80x", False), ("127.0.0.1/evil", False),
    ],
)  # fmt: skip
def test_loopback_host_names(host, loopback):
    assert is_loopback_host(host) is loopback


def test_without_a_token_only_loopback_hosts_are_answered(store):
    # A page on another origin that rebinds its DNS name to 127.0.0.1 sends its own name as Host.
    with make_client(create_app(store.root), base_url="http://evil.example:6150") as c:
        assert c.get("/api/runs").status_code == 400
    with make_client(create_app(store.root), base_url="http://localhost:6150") as c:
        assert c.get("/api/runs").status_code == 200


def test_request_bodies_over_one_mib_are_413(client):
    assert client.post("/api/runs", content=b"x" * ((1 << 20) + 1)).status_code == 413
    assert client.post("/api/runs", content=b"x" * (1 << 20)).status_code == 404  # at the limit: routed


def test_streamed_bodies_are_counted_as_they_arrive():
    async def echo_length(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    app = Starlette(routes=[Route("/", echo_length, methods=["POST"])], middleware=[Middleware(BodyLimit, limit=1000)])

    def chunks(n):  # no Content-Length header: the body arrives in pieces
        yield from (b"x" * 100 for _ in range(n))

    with make_client(app) as c:
        assert c.post("/", content=chunks(10)).text == "1000"
        assert c.post("/", content=chunks(11)).status_code == 413


def test_a_streamed_body_over_one_mib_is_413_from_a_route_that_reads_json(client, store):
    """FastAPI answers an error while it reads a body with 400 "There was an error parsing the body"; not this one."""
    body = json.dumps({"name": "x" * (2 << 20)}).encode()

    def chunks():  # no Content-Length header
        yield from (body[i : i + 65536] for i in range(0, len(body), 65536))

    headers = {"content-type": "application/json"}
    r = client.post(f"/api/runs/{store.main}/analysis/subset", content=chunks(), headers=headers)
    assert r.status_code == 413 and r.json() == {"detail": f"request bodies are limited to {1 << 20} bytes"}


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "http://127.0.0.1:8888"},  # another server of the same host: another origin
        {"Origin": "null"},  # a sandboxed frame, a file: page
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_writes_from_another_origin_are_403(store, headers):
    """A page anywhere can POST to 127.0.0.1 without a preflight (``mode: "no-cors"``) and start projection jobs."""
    with make_client(create_app(store.root)) as c:
        r = c.post(f"/api/runs/{store.main}/analysis/projection", params={"layer": "fc"}, headers=headers)
        assert r.status_code == 403 and "own pages" in r.json()["detail"]
        assert c.get("/api/runs", headers=headers).status_code == 200  # reading needs no origin: CORS keeps it
    with make_client(create_app(store.root, token=TOKEN), base_url="http://example.org") as c:  # a token too
        r = c.post("/api/runs/x/analysis/subset", params={"token": TOKEN}, headers=headers, json={})
        assert r.status_code == 403


@pytest.mark.parametrize(
    ("base_url", "headers"),
    [
        (LOCAL, {}),  # a program: no Origin
        (LOCAL, {"Origin": LOCAL, "Sec-Fetch-Site": "same-origin"}),  # the dashboard
        ("http://localhost:6150", {"Origin": "http://localhost:6150"}),
        ("http://localhost:6150", {"Origin": "http://127.0.0.1:5173", "X-Forwarded-Host": "127.0.0.1:5173"}),  # proxied
    ],
)
def test_writes_from_the_servers_own_pages_are_answered(store, base_url, headers):
    with make_client(create_app(store.root), base_url=base_url) as c:
        r = c.post(f"/api/runs/{store.main}/analysis/subset", headers=headers, json={})
    assert r.status_code == 404 and "no finished analysis" in r.json()["detail"]  # routed: the run has no analysis


def test_cors_is_closed(client):
    r = client.get("/api/runs", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and not any(h.startswith("access-control-") for h in r.headers)
    preflight = client.options(
        "/api/runs", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 405 and not any(h.startswith("access-control-") for h in preflight.headers)


@pytest.fixture(scope="module")
def live_server(store):
    with BackgroundServer(store.root, port=0) as server:
        yield server


@pytest.mark.parametrize(
    "target",
    [
        "/api/runs/..",
        "/api/runs/../keys",
        "/api/runs/%2e%2e",
        "/api/runs/%2e%2e/events",
        "/api/runs/..%2f..%2fetc%2fpasswd/keys",
        "/api/runs/%2fetc%2fpasswd",
        "/api/runs//etc/passwd",
        "/api/runs/.",
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
    ],
)
def test_paths_sent_verbatim_never_escape(live_server, target):
    port = int(live_server.url.rsplit(":", 1)[1].strip("/"))
    status, body = raw_get(port, target)
    assert status in (400, 404) or (status == 200 and b"root:x:" not in body)  # the app shell, never a file
