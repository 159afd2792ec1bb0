"""Serving the dashboard (a Bokeh server on loopback by default) and exporting it as one self-contained HTML file.

The server serves the app and its own scripts only: no static directories, so no file of the provenance
directory (or anywhere else) is reachable by URL; logs reach the page only through the app, escaped. It answers
only requests addressed to it: a request whose Host header names another host (a DNS-rebinding page) is refused.
"""
from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import re
import socket
from pathlib import Path
from typing import Any, Callable

from tornado.httputil import HTTPServerRequest
from tornado.routing import Matcher, Rule
from tornado.web import Application, RequestHandler

from clowdr.errors import ClowdrError, InputError, NotAvailableError

LOOPBACK = ("127.0.0.1", "localhost", "::1")
WILDCARD = ("0.0.0.0", "::", "")
EXPORT_USAGE_TASKS = 6
EXPORT_LOG_BYTES = 8 * 1024
#: A <link> (icon, stylesheet) to a remote URL: a file that is mailed must not reach out to the network.
REMOTE_LINK = re.compile(r"<link\b[^>]*\bhref=[\"']?(?:https?:)?//[^>]*>", re.IGNORECASE)

logger = logging.getLogger("clowdr.share")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on HOST now (the websocket origin must name the port before the server starts)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _url_host(name: str) -> str:
    """A host as a URL (and a Host header) writes it: an IPv6 address in brackets."""
    return f"[{name}]" if ":" in name else name


def _own_addresses() -> set[str]:
    """Every address of this machine's interfaces (an IPv6 one without its zone)."""
    import psutil

    families = (socket.AF_INET, socket.AF_INET6)
    return {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs if a.family in families}


def served_names(host: str) -> set[str]:
    """The names a browser may reach this server by, as its URL writes them: on loopback, the loopback names;
    on a wildcard address, also this machine's names and addresses; on one address, it and this machine's names.
    No other name: a page of another site whose name was made to resolve here (DNS rebinding) names itself."""
    loopback = {"127.0.0.1", "localhost", "[::1]"}
    if host in LOOPBACK:
        return loopback
    own = {socket.gethostname().lower(), socket.getfqdn().lower()}
    if host in WILDCARD:
        return own | loopback | {_url_host(address) for address in _own_addresses()}
    return own | {_url_host(host.lower())}


def served_hosts(host: str, port: int) -> frozenset[str]:
    """Every ``Host`` header value that addresses this server (``name:port``; the bare name on port 80)."""
    names = served_names(host)
    return frozenset({f"{name}:{port}" for name in names} | (names if port == 80 else set()))


def websocket_origins(host: str, port: int) -> list[str]:
    """The page origins Bokeh lets open the app's websocket (its allowlist cannot hold IPv6 addresses, which the
    Host check covers)."""
    return sorted(f"{name}:{port}" for name in served_names(host) if ":" not in name)


class ForeignHost(Matcher):
    """Matches a request whose ``Host`` header is not an address this server serves.

    Bokeh checks a websocket's ``Origin`` only, and Tornado skips even that when ``Origin`` equals ``Host`` or
    the browser says ``Sec-Fetch-Site: same-origin``, which is what a DNS-rebinding page sends: the ``Host``
    header is the one thing such a page cannot make ours.
    """

    def __init__(self, hosts: frozenset[str]) -> None:
        self.hosts = hosts

    def match(self, request: HTTPServerRequest) -> dict[str, Any] | None:
        return None if request.headers.get("Host", "").strip().lower() in self.hosts else {}


class RefuseForeignHost(RequestHandler):
    """403 for every request (page, script, websocket upgrade) addressed to a host this server is not."""

    def prepare(self) -> None:
        self.set_status(403)
        self.finish("clowdr share: this server does not answer requests for that host\n")


def refuse_foreign_hosts(application: Application, hosts: frozenset[str]) -> None:
    """Put the Host check first in the application's routing, before every handler Bokeh and Panel added."""
    application.default_router.rules.insert(0, Rule(ForeignHost(hosts), RefuseForeignHost))


def _cannot_listen(host: str, port: int, exc: OSError) -> InputError:
    """One line saying why nothing can listen at HOST:PORT."""
    if isinstance(exc, socket.gaierror):
        return InputError("--host", f"cannot resolve '{host}' to an address to listen on ({exc.strerror})")
    if exc.errno == errno.EADDRINUSE:
        return InputError("--port", f"{port} is already in use on {host} (leave --port out for a free port)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return InputError("--host", f"'{host}' is not an address of this machine: nothing can listen on it")
    if exc.errno == errno.EACCES:
        return InputError("--port", f"not allowed to listen on port {port} (ports below 1024 need privileges)")
    return InputError("--host", f"cannot listen on {_url_host(host)}:{port} ({exc.strerror or exc})")


def _check_export_target(export: str) -> None:
    """Refuse, before anything is built, an export path that cannot become a file."""
    target = Path(export)
    if target.is_dir():
        raise InputError(str(export), "is a directory: --export takes the path of the HTML file to write")
    if not target.parent.is_dir():
        raise InputError(str(export), "the directory to export into does not exist")
    existing = target if target.exists() else target.parent
    if not os.access(existing, os.W_OK):
        what = "file" if existing is target else "directory"
        raise InputError(str(export), f"cannot write here: the {what} is read-only")


def share(provdir: str, host: str = "127.0.0.1", port: int = 0, debug: bool = False, show: bool = False,
          export: str | None = None, announce: Callable[[str], None] | None = None) -> int:
    """``clowdr share``: serve the dashboard of PROVDIR until interrupted, or with ``export`` write it as one file.

    A bad PROVDIR or export location raises ``clowdr.errors.InputError``; no dashboard stack, NotAvailableError.
    """
    try:
        import panel  # noqa: F401  (the dashboard's one optional dependency)
    except ImportError as exc:
        raise NotAvailableError(f"clowdr share needs the dashboard packages (pip install panel): {exc}") from None
    if export:
        _check_export_target(export)
        export_html(provdir, export)
        return 0
    serve(provdir, host=host or "127.0.0.1", port=int(port or 0), debug=debug, show=show, announce=announce)
    return 0


def serve(provdir: str | Path, host: str = "127.0.0.1", port: int = 0, debug: bool = False, show: bool = False,
          period_ms: int | None = None, announce: Callable[[str], None] | None = None) -> None:
    """Serve the dashboard of PROVDIR until interrupted; ``announce`` is told the URL once it is known.

    Raises InputError (before listening) when PROVDIR is not a provenance location.
    """
    import panel as pn

    from clowdr.share.app import DEFAULT_PERIOD_MS, build_app
    from clowdr.share.table import find_runs

    location = str(provdir)
    find_runs(location)                      # a bad location is one line and exit 2, not a broken page
    if debug:
        for name in ("bokeh", "tornado", "panel", "clowdr.share"):
            logging.getLogger(name).setLevel(logging.DEBUG)
    period = DEFAULT_PERIOD_MS if period_ms is None else period_ms

    def session() -> pn.viewable.Viewable:
        return build_app(location, period_ms=period)

    try:
        port = port or free_port(host)
        server = pn.serve(session, address=host, port=port, websocket_origin=websocket_origins(host, port),
                          show=show, start=False, title="clowdr share", verbose=False, location=False, admin=False)
    except OSError as exc:
        raise _cannot_listen(host, port, exc) from None
    refuse_foreign_hosts(server._tornado, served_hosts(host, port))   # Bokeh keeps its Tornado app there
    url = f"http://{_url_host(host)}:{port}/"
    if announce is not None:
        announce(url)
    logger.info("serving %s at %s", location, url)
    server.start()
    try:
        server.io_loop.start()          # until SIGINT (Panel's handler stops the loop) or SIGTERM
    finally:
        server.stop()


def export_html(provdir: str | Path, path: str | Path, usage_tasks: int = EXPORT_USAGE_TASKS) -> Path:
    """Write the dashboard of PROVDIR as ONE HTML file with every script and style inlined; return its path.

    A static file has no Python behind it: the table sorts and filters in the page, and the usage plots and
    logs are those of a few tasks chosen here (failed ones first, then the first tasks with usage samples).
    """
    from bokeh.document import Document
    from bokeh.models import UIElement
    from bokeh.resources import INLINE
    from panel.io.model import add_to_doc
    from panel.io.notebook import patch_inline_stylesheets
    from panel.io.resources import set_resource_mode
    from panel.io.save import save

    from clowdr.share.static import static_view

    target = Path(path)
    page = static_view(provdir, usage_tasks=usage_tasks, log_bytes=EXPORT_LOG_BYTES)
    # Panel's own save() links each component's stylesheet on its CDN: build the models here and inline them.
    doc = Document()
    with set_resource_mode("inline"):
        root = page.get_root(doc)
    add_to_doc(root, doc, True)
    for model in list(doc.models):
        if isinstance(model, UIElement):
            patch_inline_stylesheets(model)
    page_text = io.StringIO()
    save(doc, page_text, resources=INLINE, embed=False, title="clowdr share")
    _write_whole(target, REMOTE_LINK.sub("", page_text.getvalue()))   # Panel's template links its icons on a CDN
    return target


def _write_whole(target: Path, text: str) -> None:
    """Write the page whole or not at all: a full disk leaves no half page under the name asked for."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise ClowdrError(f"{target}: cannot write the export ({exc.strerror or exc})") from None
