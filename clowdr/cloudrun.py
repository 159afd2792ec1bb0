"""``clowdr cloud``: the request built from the command line, an ``s3://`` PROVDIR kept in a local mirror whose
changed records are uploaded while the run goes (every ``cloud.provenance-interval`` seconds, and once more at
the end, whatever ends it), a local PROVDIR given a copy of the run's outputs, and ``clowdr cloud-cleanup``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

from clowdr.request import CloudRequest
from clowdr.storage import cache_root, is_s3

log = logging.getLogger("clowdr.cloud")


def cloud_request(options: dict[str, Any]) -> CloudRequest:
    """The request; an s3:// PROVDIR becomes a private local mirror (``<tmp>/clowdr-s3-cache/runs/<hash>``)."""
    provdir = str(options["provdir"])
    if is_s3(provdir):
        from clowdr.staging import check_url

        check_url(provdir, "provdir")
        mirror = cache_root() / "runs" / hashlib.sha256(provdir.encode()).hexdigest()[:24]
        mirror.mkdir(mode=0o700, parents=True, exist_ok=True)
        options = dict(options, provdir=str(mirror), remote_provdir=provdir.rstrip("/"))
    return CloudRequest.of(options)


class ProvenanceUploader:
    """Uploads what changed in a local PROVDIR mirror to its s3:// location, in a thread, and on ``close``."""

    def __init__(self, local: Path, remote: str, fs: Any, interval: float) -> None:
        self.local, self.remote, self.fs, self.interval = local, remote.rstrip("/"), fs, interval
        self.seen: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clowdr-provenance-upload", daemon=True)

    def start(self) -> "ProvenanceUploader":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.upload()

    def upload(self) -> int:
        """Every file new or changed since the last upload; how many went."""
        from clowdr.staging import Staging, keep_outputs

        changed = []
        for directory, _, names in os.walk(self.local):
            for name in names:
                path = os.path.join(directory, name)
                try:
                    info = os.stat(path)
                except FileNotFoundError:
                    continue
                stamp = (info.st_size, info.st_mtime_ns)
                if self.seen.get(path) != stamp and not name.startswith("."):   # . : a file being written
                    changed.append((path, stamp))
        if not changed:
            return 0
        try:
            keep_outputs(Staging(outputs=self.remote), [p for p, _ in changed], str(self.local), self.fs)
        except Exception as exc:  # noqa: BLE001 -- tried again at the next interval and at the end
            log.warning("cloud: provenance upload to %s failed (%s); trying again", self.remote, type(exc).__name__)
            return 0
        self.seen.update(changed)
        return len(changed)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.upload()


def run_cloud(request: CloudRequest, stop: Any) -> Any:
    """Run the request (``clowdr.engine.run_local``), keeping an s3:// PROVDIR up to date."""
    from clowdr import config
    from clowdr.engine import run_local

    request.stop = stop
    uploader = None
    if request.remote_provdir:
        request.check()
        uploader = ProvenanceUploader(Path(request.provdir), request.remote_provdir, request.session().s3fs(),
                                      float(config.get("cloud.provenance-interval"))).start()
    try:
        outcome = run_local(request, stop)
        if not request.remote_provdir and not request.setup:
            fetch_outputs(request, outcome.run.root)
        return outcome
    finally:
        if uploader is not None:
            uploader.close()


def fetch_outputs(request: CloudRequest, run_root: Path) -> None:
    """A local PROVDIR keeps the run's outputs too: what the workers put under the run's S3 prefix is copied to
    ``<run>/outputs/task-N/`` (the summaries say where each was put; a failed copy is only a warning)."""
    from clowdr.staging import Staging, StagingError, stage_in

    prefix = f"{request.run_prefix(run_root.name)}/outputs"
    try:
        fetched = stage_in(Staging(source=prefix), str(run_root / "outputs"), request.session().s3fs())
    except StagingError as exc:
        log.warning("cloud: the outputs stay in %s (%s)", prefix, exc)
        return
    log.info("cloud: %d output file(s) copied from %s to %s", fetched["objects"], prefix, run_root / "outputs")


def cleanup(credentials: str | None, region: str | None, run_id: str | None, dry_run: bool) -> list[str]:
    """Delete what runs left behind (found by the clowdr:run tag); lines saying what was (or would be) deleted."""
    from clowdr import config
    from clowdr.awsresources import Resources
    from clowdr.credentials import load

    session = load(credentials, region or config.get("cloud.region"))
    resources = Resources(session.client, lambda step: log.info("cloud-cleanup: %s", step))
    lines = []
    for found in resources.find(run_id):
        what = [x for x in (found.cluster_arn, *found.task_definitions, *found.roles, found.instance_profile,
                            found.log_group, found.security_group) if x]
        lines.append(f"run {found.run_id}: " + (", ".join(what) or "instances only"))
        if not dry_run:
            resources.delete(found, float(config.get("cloud.teardown-timeout")))
    return lines
