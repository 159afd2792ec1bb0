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


def container_settings(volumes: list[str], user: bool, simg: str | None) -> dict[str, Any]:
    """Container options for the workers, host paths made absolute here (a worker's cwd is not the user's)."""
    absolute = []
    for volume in volumes:
        source, target = volume.split(":", 1)
        absolute.append(f"{Path(source).expanduser().resolve()}:{target}")
    return {"volumes": absolute, "user": user, "simg": str(Path(simg).expanduser().resolve()) if simg else None,
            "docker": get("container.docker"), "pull": get("container.pull")}


def sampling_settings() -> dict[str, Any]:
    """What the worker needs to know about measuring a tool."""
    return {key: get(f"monitor.{key}") for key in ("first-interval", "max-interval", "gnu-time")}
