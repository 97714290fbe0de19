"""The web app at `/`: files of the build, the single-page-app fallback, and the page shown before a build."""

from __future__ import annotations

import pytest
from tests.server.helpers import make_client

from deepscope.server import create_app

INDEX = "<!doctype html><title>app</title><script src=/assets/app-1a2b.js></script>"


@pytest.fixture
def built(store, tmp_path):
    static = tmp_path / "static"
    (static / "assets").mkdir(parents=True)
    (static / "index.html").write_text(INDEX)
    (static / "assets" / "app-1a2b.js").write_text("console.log('app')")
    (tmp_path / "secret.txt").write_text("outside the build")
    with make_client(create_app(store.root, static_dir=static)) as c:
        yield c


def test_index_and_assets(built):
    r = built.get("/")
    assert r.status_code == 200 and r.text == INDEX and r.headers["cache-control"] == "no-cache"
    asset = built.get("/assets/app-1a2b.js")
    assert asset.text == "console.log('app')" and "javascript" in asset.headers["content-type"]


@pytest.mark.parametrize("path", ["/runs/abc", "/compare?runs=a,b", "/assets/missing.js", "/index.html"])
def test_client_side_routes_get_the_app(built, path):
    r = built.get(path)
    assert r.status_code == 200 and r.text == INDEX


@pytest.mark.parametrize("path", ["/%2e%2e/secret.txt", "/assets/%2e%2e/%2e%2e/secret.txt", "/%2Fetc%2Fpasswd"])
def test_no_file_outside_the_build(built, path):
    assert built.get(path).text == INDEX


def test_api_routes_never_fall_back_to_the_app(built):
    r = built.get("/api/no-such-thing")
    assert r.status_code == 404 and r.json() == {"detail": "no such route"}


def test_not_built_yet(store, tmp_path):
    with make_client(create_app(store.root, static_dir=tmp_path / "missing")) as c:
        for path in ("/", "/runs/abc"):
            r = c.get(path)
            assert r.status_code == 200 and "not built" in r.text and "make web" in r.text
        assert c.get("/api/runs").status_code == 200


def test_a_build_made_while_serving_is_picked_up(store, tmp_path):
    static = tmp_path / "static"
    with make_client(create_app(store.root, static_dir=static)) as c:
        assert "not built" in c.get("/").text
        static.mkdir()
        (static / "index.html").write_text(INDEX)
        assert c.get("/").text == INDEX
