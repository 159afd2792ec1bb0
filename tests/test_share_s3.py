"""``clowdr share s3://...``: a real run uploaded to a real S3 API server (moto, on 127.0.0.1 only), read back
through the local mirror (clowdr.storage), re-synced, exported, and refused cleanly when it cannot be read."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT, SECRET, run_clowdr, write_json

pd = pytest.importorskip("pandas")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")
pytest.importorskip("moto.server")

from clowdr import storage
from clowdr.errors import InputError
from clowdr.share.table import find_runs, load_tasks, wanted_in_mirror

BUCKET = "clowdr-prov"


@pytest.fixture(scope="module")
def echo_run(tmp_path_factory) -> Path:
    """A real run of the echo tool over examples/invocations: ``<prov>/<run id>/clowdr`` (read, never changed)."""
    provdir = tmp_path_factory.mktemp("echo") / "prov"
    provdir.mkdir()
    result = run_clowdr("local", EXAMPLES / "echo-tool.json", EXAMPLES / "invocations", provdir)
    assert result.returncode == 0, result.stderr
    return result.meta


def s3_client(aws_env):
    return boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"])


def upload(client, directory: Path, prefix: str) -> int:
    """Every file of DIRECTORY as private objects under PREFIX (as ``aws s3 sync`` would)."""
    count = 0
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(directory).as_posix()}")
            count += 1
    return count


@pytest.fixture
def bucket(aws_env, echo_run):
    """The run's provenance directory uploaded as it is to s3://clowdr-prov/prov/ (a fresh bucket per test)."""
    client = s3_client(aws_env)
    client.create_bucket(Bucket=BUCKET)
    upload(client, echo_run.parent.parent, "prov")
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def comparable(frame):
    return frame.drop(columns=["meta"])


def files_under(directory: Path) -> dict[str, tuple[int, int]]:
    """Relative path -> (inode, mtime) of every file: what was rewritten shows."""
    return {p.relative_to(directory).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if p.is_file()}


def assert_no_secret(*roots: Path) -> None:
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path


def test_load_tasks_from_s3_is_the_local_table_and_resyncs(aws_env, bucket, echo_run):
    run_id = echo_run.parent.name
    local = load_tasks(echo_run.parent.parent)
    remote = load_tasks(f"s3://{BUCKET}/prov")
    pd.testing.assert_frame_equal(comparable(remote), comparable(local))
    assert list(remote["status"]) == ["succeeded"] * 3
    mirror = Path(remote.loc[0, "meta"])
    cache = storage.cache_root()
    assert cache == Path(aws_env["TMPDIR"]) / "clowdr-s3-cache" and mirror.is_relative_to(cache)
    assert (mirror / "task-0-stdout.txt").read_bytes() == (echo_run / "task-0-stdout.txt").read_bytes()
    assert not list(mirror.parent.parent.rglob("work")), "a run's work files are not downloaded"
    assert mirror == cache / mirror.relative_to(cache).parts[0] / "data" / BUCKET / "prov" / run_id / "clowdr"
    for private in (cache, *cache.iterdir()):                  # objects of a private bucket stay private here
        assert private.stat().st_mode & 0o077 == 0, private

    # every form of location: a run's prefix, its clowdr/ prefix, a trailing slash
    for form in (f"prov/{run_id}", f"prov/{run_id}/clowdr", "prov/"):
        frame = load_tasks(f"s3://{BUCKET}/{form}")
        pd.testing.assert_frame_equal(comparable(frame), comparable(local))

    # a live run: a new summary object appears; the next call fetches it, and only it
    before = files_under(mirror)
    summary = (echo_run / "task-2-summary.json").read_text().replace('"succeeded"', '"failed"')
    bucket.put_object(Bucket=BUCKET, Key=f"prov/{run_id}/clowdr/task-3-summary.json", Body=summary.encode())
    frame = load_tasks(f"s3://{BUCKET}/prov")
    assert list(frame["task"]) == [0, 1, 2, 3] and frame.loc[3, "status"] == "failed"
    after = files_under(mirror)
    assert set(after) - set(before) == {"task-3-summary.json"}
    assert {name: after[name] for name in before} == before, "unchanged objects are not downloaded again"

    # nothing new: one listing, no download; a changed object: that object only; a deleted one: removed
    assert storage.sync(f"s3://{BUCKET}/prov", keep=wanted_in_mirror).downloaded == []
    bucket.put_object(Bucket=BUCKET, Key=f"prov/{run_id}/clowdr/task-0-summary.json", Body=summary.encode())
    bucket.delete_object(Bucket=BUCKET, Key=f"prov/{run_id}/clowdr/task-3-summary.json")
    done = storage.sync(f"s3://{BUCKET}/prov", keep=wanted_in_mirror)
    assert done.downloaded == [f"{run_id}/clowdr/task-0-summary.json"]
    assert done.removed == [f"{run_id}/clowdr/task-3-summary.json"]
    frame = load_tasks(f"s3://{BUCKET}/prov")
    assert list(frame["task"]) == [0, 1, 2] and list(frame["status"]) == ["failed", "succeeded", "succeeded"]
    assert find_runs(f"s3://{BUCKET}/prov") == [mirror]

    # one object as the location: the original tool's clowdr-summary.json (its directory is read), or not
    bucket.put_object(Bucket=BUCKET, Key=f"prov/{run_id}/clowdr/clowdr-summary.json", Body=b"[]\n")
    runs = find_runs(f"s3://{BUCKET}/prov/{run_id}/clowdr/clowdr-summary.json")
    assert [meta.relative_to(cache).parts[2:] for meta in runs] == [(BUCKET, "prov", run_id, "clowdr")]
    with pytest.raises(InputError, match="a file other than clowdr-summary.json"):
        find_runs(f"s3://{BUCKET}/prov/{run_id}/clowdr/task-0.json")
    assert_no_secret(cache)


def test_share_export_from_s3(aws_env, bucket, echo_run, tmp_path):
    out = tmp_path / "out.html"
    done = subprocess.run([sys.executable, "-m", "clowdr", "share", f"s3://{BUCKET}/prov", "--export", str(out)],
                          check=False, capture_output=True, text=True, env={**os.environ, **aws_env}, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    page = out.read_text(encoding="utf-8")
    assert echo_run.parent.name in page and "taking my time" in page
    assert SECRET not in done.stdout + done.stderr
    assert_no_secret(out, Path(aws_env["TMPDIR"]))


def test_unreadable_s3_locations(aws_env, bucket, tmp_path, monkeypatch):
    with pytest.raises(InputError, match="no objects under this prefix") as missing:
        load_tasks(f"s3://{BUCKET}/nowhere")
    with pytest.raises(InputError, match="no such bucket") as no_bucket:
        find_runs("s3://no-such-bucket/prov")
    for bad in ("s3://", "s3:///prov", f"s3://{BUCKET}/prov/../x"):
        with pytest.raises(InputError):
            find_runs(bad)
    unrelated = tmp_path / "unrelated"
    write_json(unrelated / "photo.json", {})
    upload(bucket, unrelated, "photos")
    with pytest.raises(InputError, match="not a provenance location"):
        find_runs(f"s3://{BUCKET}/photos")

    # the CLI: one line, exit status 2, no secret
    done = subprocess.run([sys.executable, "-m", "clowdr", "share", f"s3://{BUCKET}/nowhere", "--export",
                           str(tmp_path / "x.html")], check=False, capture_output=True, text=True,
                          env={**os.environ, **aws_env}, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "no objects under this prefix" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and SECRET not in done.stderr
    assert not (tmp_path / "x.html").exists()

    # no credentials at all (and no instance metadata to ask): one clear line
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    storage._filesystems.clear()                   # a new session, as a new process would have
    try:
        with pytest.raises(InputError, match="no usable AWS credentials") as no_credentials:
            find_runs(f"s3://{BUCKET}/prov")
    finally:
        storage._filesystems.clear()
    for error in (missing, no_bucket, no_credentials):
        assert SECRET not in str(error.value) and "testing" not in str(error.value)
