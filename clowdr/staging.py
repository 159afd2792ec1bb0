"""A task's data in and out: an S3 prefix staged into its working directory, its declared outputs kept with
the run's records.

The original tool ran each task in its data directory: relative paths of an invocation name files of the
dataset. With ``--s3 s3://bucket/prefix`` the objects under the prefix (with ``--bids`` only the task's
participant/session subtree plus the dataset's top-level files) are downloaded into the task's working
directory before the tool starts, so those paths resolve the same way. After the tool ends, the files its
descriptor's ``output-files`` name are copied next to the run's records (``<run>/outputs/task-N/`` or the same
key under an ``s3://`` run), and the summary says where each one went.

Every transfer goes through a temporary name (a local ``.part`` file renamed, or an S3 upload that only exists
once complete: a multipart upload is aborted when it fails), is checked against the size it should have, and is
tried again up to ``tries`` times; what still fails raises StagingError, recorded as ``staging-error``. Errors
are described from their kind only, never from an exception's text (which may quote a key id).
"""
from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clowdr.storage import SCHEME, is_s3, split_url

#: the name of a file being written, in the directory it will end up in
PARTIAL = ".clowdr-partial-"


class StagingError(Exception):
    """Data could not be moved in or out of a task's working directory (``staging-error``)."""


@dataclass(frozen=True)
class Staging:
    """What a worker transfers for one task: plain values, for ``TaskSpec.staging``."""

    source: str | None = None        # s3:// prefix whose objects the task reads
    subtree: str = ""                # with --bids: the task's part of it (top-level files come too)
    outputs: str | None = None       # where the task's outputs go: a directory, or an s3:// prefix
    chunk: int = 8 << 20             # bytes per part of a multipart upload
    tries: int = 3                   # attempts per file before the task is a staging-error
    concurrency: int = 8             # files in flight at once

    def to_wire(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_wire(cls, data: dict[str, Any] | None) -> "Staging | None":
        return cls(**data) if data else None


def task_staging(source: str | None, task: Any, run: Any, shared: bool,
                 remote_run: str | None = None) -> dict[str, Any] | None:
    """What a worker transfers for a task of the plan (``clowdr.plan.TaskPlan``) with data at ``source``:
    its part of the data (``--bids``: the subtree its ``dataloc`` names), and where its outputs are kept: the
    run's ``outputs/task-N`` under ``remote_run`` (an ``s3://`` run), else in the run directory where workers
    share its filesystem, else nowhere (they stay where the task ran)."""
    if not source:
        return None
    from clowdr import config

    place = f"outputs/task-{task.index}"
    outputs = f"{remote_run.rstrip('/')}/{place}" if remote_run else str(run.root / place) if shared else None
    subtree, root = "", source.rstrip("/")
    if task.dataloc and str(task.dataloc[0]).startswith(root + "/"):
        subtree = str(task.dataloc[0])[len(root) + 1:].strip("/")
    return Staging(source, subtree, outputs, int(config.get("staging.multipart-chunk")),
                   int(config.get("staging.tries")), int(config.get("staging.concurrency"))).to_wire()


def check_url(url: str, option: str = "--s3") -> None:
    """A well-formed ``s3://bucket[/prefix]`` (one line naming the option otherwise)."""
    from clowdr.errors import InputError

    try:
        split_url(url)
    except InputError as exc:
        raise InputError(option, str(exc)) from None


def check_source(url: str, fs: Any = None, empty_ok: bool = False) -> None:
    """Before anything is written: the URL is well formed, and its bucket holds objects under the prefix (or,
    ``empty_ok``, exists): one line naming the URL otherwise (a missing bucket, an empty prefix, credentials
    that cannot list it)."""
    from clowdr import storage
    from clowdr.errors import InputError

    bucket, key = split_url(url)
    fs = fs or storage.filesystem()
    if not empty_ok:
        storage._list(fs, url, bucket, key, storage.endpoint_url())
        return
    try:
        fs.ls(bucket, refresh=True)
    except Exception as exc:  # noqa: BLE001 -- reported from its kind only
        raise InputError(url, storage._explain(exc, storage.endpoint_url())) from None


# -- staging in ---------------------------------------------------------------------------------------------------
def stage_in(staging: Staging, workdir: str, fs: Any = None) -> dict[str, Any]:
    """Download the task's objects into ``workdir`` (relative paths kept); return how many and how many bytes."""
    assert staging.source
    fs = fs or _filesystem()
    bucket, key = split_url(staging.source)
    root = f"{bucket}/{key}" if key else bucket
    try:
        found = fs.find(root, detail=True)
    except Exception as exc:  # noqa: BLE001 -- reported from its kind only
        raise StagingError(f"cannot list {staging.source} ({type(exc).__name__})") from None
    wanted: dict[str, int] = {}
    for name, info in found.items():
        rel = name[len(root) + 1:] if name.startswith(root + "/") else ""
        if rel and info.get("type") != "directory" and _safe(rel) and _wanted(rel, staging.subtree):
            wanted[rel] = int(info.get("size") or 0)
    if staging.subtree and not any(rel.startswith(staging.subtree + "/") for rel in wanted):
        raise StagingError(f"no objects under {staging.source.rstrip('/')}/{staging.subtree}")
    jobs = [(f"{root}/{rel}", os.path.join(workdir, *rel.split("/")), size) for rel, size in sorted(wanted.items())]
    _run_all(fs, [_download_job(fs, remote, path, size, staging.tries) for remote, path, size in jobs],
             staging.concurrency)
    return {"objects": len(jobs), "bytes": sum(size for *_, size in jobs)}


def _wanted(rel: str, subtree: str) -> bool:
    """Everything without a subtree; with one, its objects and the dataset's top-level files."""
    return not subtree or rel.startswith(subtree + "/") or "/" not in rel


def _safe(rel: str) -> bool:
    return all(part not in ("", ".", "..") and "\x00" not in part for part in rel.split("/"))


async def _download_job(fs: Any, remote: str, path: str, size: int, tries: int) -> None:
    """One object to ``path``: through a partial file renamed once whole, tried again when cut short."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = os.path.join(os.path.dirname(path), PARTIAL + os.path.basename(path))
    for attempt in range(1, tries + 1):
        try:
            await fs._get_file(remote, partial)
            got = os.path.getsize(partial)
            if got == size:
                os.replace(partial, path)
                return
            why = f"{got} of {size} bytes arrived"
        except Exception as exc:  # noqa: BLE001 -- reported from its kind only
            why = type(exc).__name__
        _remove(partial)
        if attempt < tries:
            await asyncio.sleep(min(0.2 * 2 ** attempt, 5))
    raise StagingError(f"cannot download s3://{remote} after {tries} tries ({why})")


# -- outputs --------------------------------------------------------------------------------------------------------
def keep_outputs(staging: Staging, outputs: list[str], workdir: str, fs: Any = None) -> dict[str, str]:
    """Copy each output (a file, or a directory's files) to ``staging.outputs``; return name -> where it went."""
    assert staging.outputs
    files: list[tuple[str, str]] = []        # (local path, path relative to the outputs location)
    for output in outputs:
        base = os.path.relpath(output, workdir)
        if base.startswith(".."):
            base = os.path.basename(output)
        if os.path.isdir(output):
            for directory, _, names in os.walk(output):
                for name in sorted(names):
                    path = os.path.join(directory, name)
                    files.append((path, os.path.join(base, os.path.relpath(path, output))))
        else:
            files.append((output, base))
    kept: dict[str, str] = {}
    if is_s3(staging.outputs):
        fs = fs or _filesystem()
        bucket, key = split_url(staging.outputs)
        prefix = f"{bucket}/{key}" if key else bucket
        jobs = []
        for path, rel in files:
            remote = f"{prefix}/{Path(rel).as_posix()}"
            kept[Path(rel).as_posix()] = SCHEME + remote
            jobs.append(_upload_job(fs, path, remote, staging.chunk, staging.tries, staging.concurrency))
        _run_all(fs, jobs, staging.concurrency)
    else:
        for path, rel in files:
            target = os.path.join(staging.outputs, rel)
            _copy_local(path, target, staging.tries)
            kept[Path(rel).as_posix()] = target
    return kept


async def _upload_job(fs: Any, path: str, remote: str, chunk: int, tries: int, parts: int) -> None:
    """One file to ``remote`` (multipart above two chunks, ``parts`` at once): an object exists only once it
    arrived whole."""
    size = os.path.getsize(path)
    for attempt in range(1, tries + 1):
        try:
            await fs._put_file(path, remote, chunksize=chunk, max_concurrency=parts)
            info = await fs._info(remote, refresh=True)
            if int(info.get("size") or 0) == size:
                return
            why = "size mismatch"
            await fs._rm_file(remote)
        except Exception as exc:  # noqa: BLE001 -- reported from its kind only
            why = type(exc).__name__
        if attempt < tries:
            await asyncio.sleep(min(0.2 * 2 ** attempt, 5))
    await _abort_uploads(fs, remote)
    raise StagingError(f"cannot upload {os.path.basename(path)} to s3://{remote} after {tries} tries ({why})")


async def _abort_uploads(fs: Any, remote: str) -> None:
    """Multipart uploads to ``remote`` a failed abort left open cost storage: abort them (best effort)."""
    bucket, key, _ = fs.split_path(remote)
    try:
        listed = await fs._call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key)
        for upload in listed.get("Uploads", []):
            if upload.get("Key") == key:
                await fs._call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload["UploadId"])
    except Exception:  # noqa: BLE001 -- nothing more can be done from here
        pass


def _copy_local(path: str, target: str, tries: int) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    partial = os.path.join(os.path.dirname(target), PARTIAL + os.path.basename(target))
    for attempt in range(1, tries + 1):
        try:
            shutil.copyfile(path, partial)
            os.replace(partial, target)
            return
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            _remove(partial)
            if attempt < tries:
                time.sleep(min(0.2 * 2 ** attempt, 5))
    raise StagingError(f"cannot copy {os.path.basename(path)} to {target} after {tries} tries ({why})")


# -- machinery ----------------------------------------------------------------------------------------------------
def _run_all(fs: Any, jobs: list[Any], concurrency: int) -> None:
    """Run the transfer coroutines on the filesystem's loop, ``concurrency`` at a time; the first failure is
    raised once every transfer has ended (none is left half done)."""
    from fsspec.asyn import sync

    async def gather() -> list[Any]:
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(job: Any) -> None:
            async with gate:
                await job

        return await asyncio.gather(*(one(job) for job in jobs), return_exceptions=True)

    for outcome in sync(fs.loop, gather):
        if isinstance(outcome, StagingError):
            raise outcome
        if isinstance(outcome, BaseException):
            raise StagingError(f"transfer failed ({type(outcome).__name__})")


def _filesystem() -> Any:
    """The worker's s3fs filesystem: the standard credential chain (a task role on AWS, the environment
    locally) and the endpoint the environment names."""
    from clowdr import storage

    return storage.filesystem()


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
