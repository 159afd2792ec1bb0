"""``clowdr share`` answers only requests addressed to it: real HTTP requests and websocket upgrades, with a
forged ``Host`` header, against a real served app on 127.0.0.1.

A DNS-rebinding page (its own name made to resolve to 127.0.0.1) sends its own name as ``Host`` and as
``Origin``, and a browser marks its requests ``Sec-Fetch-Site: same-origin``: Tornado then skips the origin
check, so Bokeh's websocket-origin allowlist never sees them. Only the ``Host`` header tells them apart.
"""
from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from typing import Iterator

import pytest

from conftest import EXAMPLES, ROOT, run_clowdr

pytest.importorskip("panel")

FOREIGN = "rebind.example"
WEBSOCKET_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(server: subprocess.Popen) -> None:
    """Stop the server this test started, by its own pid (TERM, then KILL after 15 s)."""
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=15)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A real run, served by ``clowdr share`` on 127.0.0.1; yields the port."""
    base = tmp_path_factory.mktemp("host")
    provdir = base / "prov"
    provdir.mkdir()
    result = run_clowdr("local", EXAMPLES / "echo-tool.json", EXAMPLES / "invocations" / "hello.json", provdir)
    assert result.returncode == 0, result.stderr
    port = _free_port()
    log = (base / "share.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "clowdr", "share", str(provdir), "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, f"clowdr share exited with {server.returncode}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "clowdr share did not answer within 60 s"
                time.sleep(0.3)
        yield port
    finally:
        _stop(server)
        log.close()
    assert "Traceback" not in (base / "share.log").read_text()


def status(port: int, request: str) -> int:
    """Send one raw HTTP/1.1 request (CRLF line ends added) to 127.0.0.1:PORT; the status code of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(("\r\n".join(request.strip().splitlines()) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n" not in answer:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    assert match, f"not an HTTP answer: {answer[:200]!r}"
    return int(match.group(1))


def get(port: int, path: str, host: str) -> int:
    return status(port, f"GET {path} HTTP/1.1\nHost: {host}\nConnection: close")


def session_token(port: int) -> str:
    """The Bokeh session token of a page fetched the ordinary way (the websocket wants it as a subprotocol)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as answer:
        page = answer.read().decode("utf-8")
    found = re.search(r'token[\\"]*:\s*[\\"]*([A-Za-z0-9_.\-]+)', page)
    assert found, "no session token in the page"
    return found.group(1)


def upgrade(port: int, host: str, origin: str, *extra: str) -> int:
    """The status of a websocket upgrade of the app's /ws with this Host and Origin (101: the socket is open)."""
    lines = ["GET /ws HTTP/1.1", f"Host: {host}", f"Origin: http://{origin}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {WEBSOCKET_KEY}", "Sec-WebSocket-Version: 13",
             f"Sec-WebSocket-Protocol: bokeh, {session_token(port)}", *extra]
    return status(port, "\n".join(lines))


def test_pages_are_served_only_for_the_served_addresses(served):
    port = served
    assert get(port, "/", f"127.0.0.1:{port}") == 200
    assert get(port, "/", f"localhost:{port}") == 200
    for host in (f"{FOREIGN}:{port}", FOREIGN, f"127.0.0.1.{FOREIGN}:{port}", f"localhost:{port}.{FOREIGN}"):
        assert get(port, "/", host) == 403, host


def test_every_resource_is_refused_for_a_foreign_host(served):
    """Not only the page: the scripts, a missing path and the app's websocket path are refused too."""
    port = served
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as answer:
        page = answer.read().decode("utf-8")
    script = re.search(r'<script[^>]+src="(/?static/[^"]+)"', page)
    assert script, "no script of the server in the page"
    path = "/" + script.group(1).lstrip("/")
    assert get(port, path, f"127.0.0.1:{port}") == 200
    for resource in (path, "/no-such-page", "/ws", "/favicon.ico"):
        assert get(port, resource, f"{FOREIGN}:{port}") == 403, resource


@pytest.mark.parametrize("fetch_site", [[], ["Sec-Fetch-Site: same-origin"]], ids=["no-fetch-metadata", "browser"])
def test_the_websocket_refuses_a_rebinding_page(served, fetch_site):
    port = served
    assert upgrade(port, f"127.0.0.1:{port}", f"127.0.0.1:{port}", *fetch_site) == 101    # the real page: open
    assert upgrade(port, f"{FOREIGN}:{port}", f"{FOREIGN}:{port}", *fetch_site) == 403
    assert upgrade(port, f"{FOREIGN}:{port}", f"127.0.0.1:{port}", *fetch_site) == 403


def test_the_websocket_still_refuses_a_foreign_origin(served):
    """Bokeh's own origin check stays: our Host, a page of another site as Origin."""
    port = served
    assert upgrade(port, f"127.0.0.1:{port}", FOREIGN) == 403
    assert upgrade(port, f"127.0.0.1:{port}", f"{FOREIGN}:{port}") == 403


def test_the_addresses_served_on_every_interface(monkeypatch):
    """With --host 0.0.0.0: this machine's names and every address of its interfaces, and nothing else (the
    fully qualified name is fixed here so that the test asks no DNS server)."""
    import psutil

    from clowdr.share.serve import served_hosts

    monkeypatch.setattr(socket, "getfqdn", lambda name="": "node7.cluster.example")
    hosts = served_hosts("0.0.0.0", 8050)
    addresses = {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
                 if a.family in (socket.AF_INET, socket.AF_INET6)}
    expected = {"127.0.0.1", "localhost", socket.gethostname().lower(), "node7.cluster.example",
                *(f"[{a}]" if ":" in a else a for a in addresses)}
    assert hosts == {f"{name}:8050" for name in expected}
    assert served_hosts("::1", 80) == {"127.0.0.1", "localhost", "[::1]", "127.0.0.1:80", "localhost:80",
                                       "[::1]:80"}
