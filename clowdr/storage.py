"""Reading ``s3://`` locations: a local mirror of an S3 prefix, kept up to date cheaply.

``mirror(url)`` lists the objects under the URL and downloads into a private cache directory
(``<tempdir>/clowdr-s3-cache/<hash>/data/<bucket>/<prefix>``) only those that are new or changed since the
last call (size, ETag and LastModified are compared with a manifest kept next to the mirror); objects gone
from S3 are removed from the mirror. Code that reads local directories then reads the mirror unchanged, and
calling ``mirror`` again (a live dashboard's refresh) costs one listing plus the changed objects.

S3 is only ever read (ListObjectsV2, GetObject). The endpoint is AWS's unless ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` names another; credentials come from the standard AWS chain (environment, ``~/.aws``, an
instance or task role) and are never logged, written, or put in an error message: errors are reported from
their kind only, never from the text of the exception.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from clowdr.errors import InputError

SCHEME = "s3://"
CACHE_NAME = "clowdr-s3-cache"
DATA = "data"
MANIFEST = "manifest.json"
LOCK = ".lock"
STAGING = ".staging"
CONCURRENCY = 16
#: Connection settings: a wrong endpoint fails in seconds instead of retrying for minutes.
CLIENT_CONFIG = {"connect_timeout": 10, "read_timeout": 60, "retries": {"max_attempts": 3, "mode": "standard"}}

logger = logging.getLogger("clowdr.storage")

_filesystems: dict[str | None, Any] = {}
_filesystems_lock = threading.Lock()


@dataclass
class Sync:
    """What one ``sync`` did: the local path standing for the URL, and the objects it fetched and removed."""

    path: Path
    downloaded: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def is_s3(location: str | os.PathLike[str]) -> bool:
    return str(location).startswith(SCHEME)


def split_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix/`` -> ("bucket", "some/prefix"); InputError for anything else."""
    if not is_s3(url):
        raise InputError(url, "not an s3:// URL")
    bucket, _, key = url[len(SCHEME):].partition("/")
    key = key.strip("/")
    if not bucket or bucket in (".", "..") or "\\" in bucket or "?" in url or "#" in url:
        raise InputError(url, "expected s3://bucket or s3://bucket/prefix")
    parts = key.split("/") if key else []
    if any(part in ("", ".", "..") for part in parts):
        raise InputError(url, "the prefix has an empty, '.' or '..' component")
    return bucket, key


def endpoint_url() -> str | None:
    """The S3 endpoint from the standard environment variables (None: AWS's own)."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _shown_endpoint(endpoint: str | None) -> str:
    """The endpoint as it may appear in a message: scheme, host and port only (no user:password@)."""
    if not endpoint:
        return "AWS S3"
    parts = urlsplit(endpoint)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def filesystem() -> Any:
    """An s3fs filesystem for the current endpoint (one per endpoint, reused: its session is the costly part)."""
    endpoint = endpoint_url()
    with _filesystems_lock:
        fs = _filesystems.get(endpoint)
        if fs is None:
            try:
                import s3fs
            except ImportError:
                raise InputError("s3://", "reading S3 locations needs the s3fs package "
                                          "(pip install 's3fs>=2024.1')") from None
            client_kwargs = {"endpoint_url": endpoint} if endpoint else {}
            fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, client_kwargs=client_kwargs,
                                   config_kwargs=CLIENT_CONFIG)
            _filesystems[endpoint] = fs
    return fs


# -- the cache directory ---------------------------------------------------------------------------------------
def _private_dir(path: Path) -> bool:
    """Create PATH (mode 0700) if absent; whether it is now a real directory of ours that no one else can write."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISDIR(info.st_mode):
        return False
    return not (hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022))


def cache_root() -> Path:
    """``<tempdir>/clowdr-s3-cache``, private to this user (another user's is not reused: ``...-<uid>`` then)."""
    base = Path(tempfile.gettempdir())
    candidates = [base / CACHE_NAME]
    if hasattr(os, "getuid"):
        candidates.append(base / f"{CACHE_NAME}-{os.getuid()}")
    for candidate in candidates:
        if _private_dir(candidate):
            return candidate
    raise InputError(str(candidates[-1]), "cannot create a private cache directory for S3 objects")


def cache_dir(bucket: str, key: str, endpoint: str | None = None) -> Path:
    """The cache directory of one location (the endpoint is part of its identity: same bucket, other server)."""
    identity = f"{endpoint or ''}\n{bucket}/{key}".encode()
    return cache_root() / hashlib.sha256(identity).hexdigest()[:24]


# -- syncing ------------------------------------------------------------------------------------------------------
def mirror(url: str, keep: Callable[[tuple[str, ...]], bool] | None = None) -> Path:
    """The local path standing for URL, after bringing its mirror up to date (see ``sync``)."""
    return sync(url, keep).path


def sync(url: str, keep: Callable[[tuple[str, ...]], bool] | None = None) -> Sync:
    """Bring the mirror of URL up to date; return its local path and what was fetched and removed.

    URL is a prefix (every object under ``prefix/`` is mirrored, subject to KEEP, which is given each object's
    path components relative to the prefix) or one object (its "directory" is mirrored and the path is the
    object's). A missing bucket, an empty prefix, or credentials that cannot read them raise InputError.
    """
    bucket, key = split_url(url)
    endpoint = endpoint_url()
    fs = filesystem()
    listing = _list(fs, url, bucket, key, endpoint)
    target_name = None
    if key and set(listing) == {""}:                       # the URL is one object: mirror its directory
        parent, _, target_name = key.rpartition("/")
        key = parent
        listing = _list(fs, url, bucket, key, endpoint)
    wanted = {rel: info for rel, info in listing.items() if rel and _safe(rel) and (keep is None or keep(
        tuple(rel.split("/"))))}

    directory = cache_dir(bucket, key, endpoint)
    if not _private_dir(directory):
        raise InputError(str(directory), "cannot create a private cache directory for S3 objects")
    data = directory / DATA
    data.mkdir(mode=0o700, exist_ok=True)
    # the mirror keeps the bucket and key as directories: a run's id is the name of its directory
    data = data.joinpath(bucket, *(key.split("/") if key else []))
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    result = Sync(data / target_name if target_name else data)
    with _locked(directory / LOCK):
        manifest = _read_manifest(directory / MANIFEST)
        fetch = [rel for rel, info in sorted(wanted.items())
                 if manifest.get(rel) != _version(info) or not _same_size(data / rel, info)]
        gone = sorted(set(manifest) - set(wanted))
        for rel in gone:
            _remove(data, rel)
            manifest.pop(rel, None)
        result.removed = gone
        if fetch:
            fetched = _download(fs, bucket, key, fetch, data, directory / STAGING)
            for rel in fetch:
                if rel in fetched:
                    manifest[rel] = _version(wanted[rel])
                else:
                    manifest.pop(rel, None)       # gone since the listing, or unreadable: tried again next time
            result.downloaded = sorted(fetched)
        if fetch or gone:
            _write_manifest(directory / MANIFEST, manifest)
    logger.debug("synced %s: %d objects, %d downloaded, %d removed", url, len(wanted), len(result.downloaded),
                 len(result.removed))
    return result


def _list(fs: Any, url: str, bucket: str, key: str, endpoint: str | None) -> dict[str, dict[str, Any]]:
    """Objects under ``bucket/key/`` by path relative to it (``""``: an object named exactly ``key``)."""
    root = f"{bucket}/{key}" if key else bucket
    try:
        fs.invalidate_cache()
        found = fs.find(root, detail=True)
    except Exception as exc:  # noqa: BLE001 -- any failure is one line; its text (may quote a key id) never shown
        raise InputError(url, _explain(exc, endpoint)) from None
    listing: dict[str, dict[str, Any]] = {}
    for name, info in found.items():
        if info.get("type") == "directory" or name.endswith("/"):
            continue
        if name == root:
            listing[""] = info
        elif name.startswith(root + "/"):
            listing[name[len(root) + 1:]] = info
    if not listing:
        what = "no objects under this prefix" if key else "the bucket is empty"
        try:
            bucket_exists = fs.exists(bucket)
        except Exception:  # noqa: BLE001 -- only refines the message
            bucket_exists = True
        raise InputError(url, what if bucket_exists else f"no such bucket (at {_shown_endpoint(endpoint)})")
    return listing


def _explain(exc: BaseException, endpoint: str | None) -> str:
    """One line for a failed S3 call, from the kind of error only."""
    kind = type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return f"no such bucket (at {_shown_endpoint(endpoint)})"
    if isinstance(exc, PermissionError):
        return "access denied: the AWS credentials in use cannot list this bucket (or are invalid)"
    if kind in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return "no usable AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or a role)"
    if kind in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionError", "ClientConnectorError",
                "ReadTimeoutError", "ConnectionRefusedError", "TimeoutError"):
        return f"cannot reach {_shown_endpoint(endpoint)} ({kind})"
    return f"cannot read it from {_shown_endpoint(endpoint)} ({kind})"


def _version(info: dict[str, Any]) -> list[Any]:
    """What identifies an object's content without reading it."""
    modified = info.get("LastModified")
    shown = modified.isoformat() if isinstance(modified, datetime) else str(modified or "")
    return [info.get("size"), str(info.get("ETag") or ""), shown]


def _same_size(path: Path, info: dict[str, Any]) -> bool:
    try:
        return os.stat(path).st_size == info.get("size")
    except OSError:
        return False


def _safe(rel: str) -> bool:
    """An object path that stays inside the mirror as a plain relative path."""
    parts = rel.split("/")
    return all(part not in ("", ".", "..") and "\x00" not in part and "\\" not in part for part in parts)


def _download(fs: Any, bucket: str, key: str, rels: list[str], data: Path, staging: Path) -> set[str]:
    """Fetch RELS into DATA, each through a staging file then renamed in place; the ones that arrived."""
    from fsspec.asyn import sync as run_sync

    if staging.exists():
        shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    temps = {rel: staging / f"{n}.part" for n, rel in enumerate(rels)}
    remote = {rel: f"{bucket}/{key}/{rel}" if key else f"{bucket}/{rel}" for rel in rels}

    async def fetch_all() -> list[Any]:
        gate = asyncio.Semaphore(CONCURRENCY)

        async def one(rel: str) -> None:
            async with gate:
                await fs._get_file(remote[rel], str(temps[rel]))

        return await asyncio.gather(*(one(rel) for rel in rels), return_exceptions=True)

    outcomes = run_sync(fs.loop, fetch_all)
    fetched: set[str] = set()
    try:
        for rel, outcome in zip(rels, outcomes):
            if isinstance(outcome, BaseException) or not temps[rel].is_file():
                logger.debug("could not fetch %s (%s)", rel, type(outcome).__name__)
                continue
            target = data / rel
            try:
                target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.replace(temps[rel], target)      # a reader sees the old file or the new one, never half of it
            except OSError:
                continue                           # e.g. an object "a" and objects under "a/": one of them wins
            fetched.add(rel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return fetched


def _remove(data: Path, rel: str) -> None:
    """Remove a file gone from S3, and the directories it leaves empty."""
    path = data / rel
    try:
        path.unlink()
    except OSError:
        return
    parent = path.parent
    while parent != data:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


def _read_manifest(path: Path) -> dict[str, list[Any]]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    objects = value.get("objects") if isinstance(value, dict) else None
    return {k: v for k, v in objects.items() if isinstance(v, list)} if isinstance(objects, dict) else {}


def _write_manifest(path: Path, objects: dict[str, list[Any]]) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps({"version": 1, "objects": objects}), encoding="utf-8")
    os.replace(temporary, path)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on PATH while a mirror is updated (two sessions may refresh the same location)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:                       # no flock (Windows): one process at a time is assumed
            pass
        yield
    finally:
        os.close(fd)                              # closing releases the lock
