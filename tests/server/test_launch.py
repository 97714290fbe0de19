"""Starting the server: the port, the token, the printed URLs."""

from __future__ import annotations

import socket

import pytest

from deepscope.server import launch


def test_a_taken_default_port_moves_to_a_free_one():
    holders = []
    try:
        for port in range(launch.DEFAULT_PORT, launch.DEFAULT_PORT + 2):  # 6150 and 6151 taken (by us or others)
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                s.listen()
                holders.append(s)
            except OSError:
                s.close()
        with launch.bind("127.0.0.1", None) as sock:
            assert sock.getsockname()[1] not in (launch.DEFAULT_PORT, launch.DEFAULT_PORT + 1)
    finally:
        for s in holders:
            s.close()


def test_an_explicit_taken_port_is_an_error():
    with launch.bind("127.0.0.1", 0) as taken, pytest.raises(OSError):
        launch.bind("127.0.0.1", taken.getsockname()[1])


@pytest.mark.parametrize(
    ("host", "token", "expect"),
    [("127.0.0.1", None, None), ("localhost", None, None), ("::1", None, None), ("127.0.0.1", "abc", "abc")],
)
def test_loopback_needs_no_token(host, token, expect):
    assert launch.choose_token(host, token) == expect


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "example.org"])
def test_other_hosts_get_a_generated_token(host):
    first, second = launch.choose_token(host, None), launch.choose_token(host, None)
    assert first and len(first) >= 24 and first != second
    assert launch.choose_token(host, "given") == "given"


def test_urls():
    assert launch.urls("127.0.0.1", 6150, None) == ["http://127.0.0.1:6150/"]
    assert launch.urls("::1", 6150, "t") == ["http://[::1]:6150/?token=t"]
    everywhere = launch.urls("0.0.0.0", 6151, "t")
    assert everywhere == [f"http://{socket.gethostname()}:6151/?token=t", "http://127.0.0.1:6151/?token=t"]


def test_the_server_reads_runs_without_torch():
    """The dashboard's app — every route's module, the analysis readers included — imports no torch: serving a
    store needs none (a resume's digests, which do, live apart from where an analysis stands on disk)."""
    import subprocess
    import sys

    code = "import sys, deepscope.server; deepscope.server.create_app('.'); assert 'torch' not in sys.modules, 'torch'"
    subprocess.run([sys.executable, "-c", code], check=True)
