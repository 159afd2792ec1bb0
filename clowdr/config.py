"""Defaults live in configs/clowdr.yaml, merged under the user's own dask config."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.config
import yaml

DEFAULTS = Path(__file__).with_name("clowdr.yaml")
_loaded = False


def load_defaults() -> None:
    """Register clowdr's packaged defaults with dask.config once (user settings keep precedence)."""
    global _loaded
    if not _loaded:
        dask.config.update_defaults(yaml.safe_load(DEFAULTS.read_text()))
        _loaded = True


def get(key: str) -> Any:
    """Return the setting ``clowdr.<key>`` (dotted), defaults included."""
    load_defaults()
    return dask.config.get(f"clowdr.{key}")
