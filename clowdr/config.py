"""Defaults live in configs/clowdr.yaml, merged under the user's own dask config."""
from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import dask.config
import yaml

DEFAULTS = Path(__file__).with_name("clowdr.yaml")
_loaded = False
_UNSET = object()


@lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    return yaml.safe_load(DEFAULTS.read_text())


def load_defaults() -> None:
    """Register clowdr's packaged defaults with dask.config once (user settings keep precedence)."""
    global _loaded
    if not _loaded:
        dask.config.update_defaults(copy.deepcopy(_defaults()))
        _loaded = True


def get(key: str) -> Any:
    """Return the setting ``clowdr.<key>`` (dotted), defaults included."""
    load_defaults()
    try:
        return dask.config.get(f"clowdr.{key}")
    except KeyError:
        # A ``dask.config.set`` of a clowdr key made before the defaults were loaded removes, as it ends, the key
        # it made, with the defaults loaded under it meanwhile: they go back, under the user's settings.
        dask.config.update(dask.config.config, copy.deepcopy(_defaults()), priority="old")
        return dask.config.get(f"clowdr.{key}")


@lru_cache(maxsize=1)
def _user_layer() -> dict[str, Any]:
    return dask.config.collect()


def user_setting(key: str) -> Any:
    """``key`` (fully dotted, e.g. ``clowdr.slurm.walltime`` or ``jobqueue.slurm.queue``) as the user set it in
    their own dask config files or ``DASK_*`` environment variables, or None where they did not.

    Read from those layers themselves, never by comparing a value with a packaged default: a user who sets
    exactly the packaged value has still set it.
    """
    found = dask.config.get(key, default=_UNSET, config=_user_layer())
    return None if found is _UNSET else found


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
    return {key: get(f"monitor.{key}") for key in ("first-interval", "max-interval")}
