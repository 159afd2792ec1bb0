"""The original tool's ``clowdr.utils``: the helpers its scripts import, with the same signatures and results.

Local paths and ``s3://`` locations alike (S3 through ``clowdr.storage``'s filesystem: the endpoint and the
standard credential chain, never a key in a message). Unlike the original, uploads are private (no
``public-read``) and messages go to logging, not print.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
import string
import subprocess
import time
from typing import Any, Callable

from clowdr.storage import is_s3, split_url

log = logging.getLogger("clowdr.utils")


def backoff(function: Callable[..., Any], posargs: list[Any], optargs: dict[str, Any], backoff_time: float = 36000,
            **kwargs: Any) -> tuple[int, Any]:
    """Call ``function(*posargs, **optargs)`` until it returns, waiting 1, 1, 2, 3, 5, ... seconds between tries:
    ``(0, value)``, or ``(-1, message)`` once the next wait would exceed ``backoff_time`` seconds."""
    low, high = 0, 1
    while True:
        try:
            return 0, function(*posargs, **optargs)
        except Exception as exc:  # noqa: BLE001 - the original retried on any failure
            if high > backoff_time:
                log.log(logging.WARNING if kwargs.get("verbose") else logging.DEBUG, "failed (%s); giving up", exc)
                return -1, str(exc)
            log.log(logging.WARNING if kwargs.get("verbose") else logging.DEBUG, "failed (%s); retrying in %s s",
                    exc, high)
            time.sleep(high)
            low, high = high, low + high


def truepath(path: str) -> str:
    """An s3:// location as it is; a local path made absolute with symbolic links resolved."""
    return path if is_s3(path) else os.path.realpath(path)


def randstring(k: int) -> str:
    """``k`` random characters of [A-Z0-9], as in run ids."""
    return "".join(random.SystemRandom().choices(string.ascii_uppercase + string.digits, k=k))


def splitS3Path(path: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    return split_url(path)


def get(remote: str, local: str, **kwargs: Any) -> list[str]:
    """Copy a file or directory (local or s3://) into ``local``; the local paths of what was fetched.

    A file copied onto itself or into a directory where it already is is not an error (the path is returned)."""
    if is_s3(remote):
        return _s3_get(remote, local)
    try:
        if os.path.isdir(remote):
            return [os.path.realpath(shutil.copytree(remote, local))]
        return [os.path.realpath(shutil.copy(remote, local))]
    except (shutil.SameFileError, FileExistsError):
        log.debug("%s is already in %s", remote, local)
        if os.path.isdir(local) and os.path.isfile(remote):
            return [os.path.realpath(os.path.join(local, os.path.basename(remote)))]
        return [os.path.realpath(local)]


def post(local: str, remote: str, **kwargs: Any) -> list[str]:
    """Copy a local file or directory to ``remote`` (a path or s3://, uploaded private); where it went."""
    if is_s3(remote):
        return _s3_post(local, remote)
    try:
        if os.path.isdir(local):
            return [os.path.realpath(shutil.copytree(local, remote))]
        if os.path.isdir(remote):
            return [os.path.realpath(shutil.copy(local, os.path.join(remote, os.path.basename(local))))]
        return [os.path.realpath(shutil.copy(local, remote))]
    except shutil.SameFileError:
        if os.path.isdir(remote) and os.path.isfile(local):
            return [os.path.realpath(os.path.join(remote, os.path.basename(local)))]
        return [os.path.realpath(remote)]


def remove(local: str) -> None:
    """Delete a file or a directory tree; one already gone is not an error."""
    try:
        if os.path.isdir(local) and not os.path.islink(local):
            shutil.rmtree(local)
        else:
            os.remove(local)
    except FileNotFoundError:
        pass


def getContainer(savedir: str, container: dict[str, Any], **kwargs: Any) -> Any:
    """Fetch a Singularity tool's image into ``savedir``: the ``simg`` keyword's file copied there (its path, in
    a list, as ``get`` returns it), else ``singularity pull`` of the image (its (stdout, stderr) bytes). A Docker
    image needs nothing here (the engine pulls it when the task runs): None."""
    if container.get("type") != "singularity":
        return None
    name = str(container.get("image"))
    local = os.path.join(savedir, name.replace("/", "-").replace(":", "-") + ".simg")
    if kwargs.get("simg"):
        return get(kwargs["simg"], local)
    index = container.get("index") or "shub://"
    index = index if index.endswith("://") else index + "://"
    done = subprocess.run(["singularity", "pull", "--name", local, f"{index}{name}"], capture_output=True)
    return done.stdout, done.stderr


def _s3_get(remote: str, local: str) -> list[str]:
    """Every object under the s3:// prefix ``remote``, downloaded to ``local/<key>``."""
    from clowdr.storage import filesystem

    fs = filesystem()
    bucket, key = split_url(remote)
    fetched = []
    for name in fs.find(f"{bucket}/{key}"):
        object_key = name.split("/", 1)[1]
        target = os.path.join(local, object_key)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fs.get_file(name, target)
        fetched.append(target)
    return fetched


def _s3_post(local: str, remote: str) -> list[str]:
    """A local file (to ``remote/<its name>``) or every file of a directory (to ``remote/<relative path>``)."""
    from clowdr.storage import filesystem

    fs = filesystem()
    bucket, key = split_url(remote)
    if os.path.isfile(local):
        files = [(local, os.path.basename(local))]
    else:
        files = [(os.path.join(root, name), os.path.relpath(os.path.join(root, name), local))
                 for root, _, names in os.walk(local) for name in names]
    sent = []
    for path, relative in files:
        target = "/".join(part for part in (bucket, key, relative) if part)
        fs.put_file(path, target)
        sent.append(f"s3://{target}")
    return sent
