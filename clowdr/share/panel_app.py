"""The dashboard for ``panel serve``: ``panel serve clowdr/share/panel_app.py --args PROVDIR``.

Panel runs this file once per browser session with ``sys.argv`` set to the file and what follows ``--args``;
without an argument the provenance location comes from ``CLOWDR_SHARE_PROVDIR``. It serves the same live app
as ``clowdr share`` (built per session, refreshing while the session is open).
"""
from __future__ import annotations

import html
import os
import sys
from collections.abc import Mapping, Sequence

import panel as pn

from clowdr.errors import ClowdrError
from clowdr.share.app import build_app

ENV_VAR = "CLOWDR_SHARE_PROVDIR"
TITLE = "clowdr share"


def provdir_from(argv: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """The location given after ``--args`` (argv[1]), else the environment variable, else None."""
    if len(argv) > 1 and argv[1]:
        return argv[1]
    return environ.get(ENV_VAR) or None


def session_app(location: str | None) -> pn.viewable.Viewable:
    """The live dashboard, or one escaped line saying why there is none (panel serve has no exit status to give)."""
    if location is None:
        pn.extension()
        return pn.pane.HTML(f"<b>clowdr share:</b> no provenance location: pass it after <code>--args</code> "
                            f"or set <code>{ENV_VAR}</code>.")
    try:
        return build_app(location)
    except ClowdrError as exc:
        pn.extension()
        return pn.pane.HTML(f"<b>clowdr share: cannot read {html.escape(location)}:</b> {html.escape(str(exc))}")


if __name__.startswith("bokeh_app_") or __name__ == "__main__":
    session_app(provdir_from(sys.argv, os.environ)).servable(title=TITLE)
