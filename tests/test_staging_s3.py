"""``clowdr local --s3``: data staged from a real S3 API server (moto, on 127.0.0.1) into each task's scratch
directory, declared outputs kept with the run, cut transfers retried and never left half written."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from conftest import SECRET, run_clowdr, write_json
from faultproxy import FaultProxy

boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")

from clowdr import staging, storage  # noqa: E402

BUCKET = "clowdr-data"
MIB = 1 << 20

READER = {
    "name": "reader", "tool-version": "1", "schema-version": "0.5", "description": "reads its data by relative paths",
    "command-line": "L=$(find . -type f | sort); cat [FIRST] nested/b.txt > joined.txt; echo \"$L\" > listing.txt; "
                    "if [ -e big.bin ]; then sha256sum big.bin > big.sha; fi",
    "inputs": [{"id": "first", "name": "first", "type": "File", "value-key": "[FIRST]"}],
    "output-files": [{"id": "joined", "name": "joined", "path-template": "joined.txt"},
                     {"id": "listing", "name": "listing", "path-template": "listing.txt"},
                     {"id": "sha", "name": "sha", "path-template": "big.sha", "optional": True}],
}

BIDS = {
    "name": "bidslist", "tool-version": "1", "schema-version": "0.5", "description": "lists what a BIDS task sees",
    "command-line": "L=$(find [BIDS_DIR] -type f | sort); echo \"$L\" > listing.txt; "
                    "echo [ANALYSIS_LEVEL] [PARTICIPANT_LABEL]",
    "inputs": [
        {"id": "bids_dir", "name": "bids dir", "type": "String", "value-key": "[BIDS_DIR]"},
        {"id": "analysis_level", "name": "level", "type": "String", "value-key": "[ANALYSIS_LEVEL]"},
        {"id": "participant_label", "name": "participants", "type": "String", "list": True, "optional": True,
         "command-line-flag": "--participant_label", "value-key": "[PARTICIPANT_LABEL]"}],
    "output-files": [{"id": "listing", "name": "listing", "path-template": "listing.txt"}],
}


@pytest.fixture
def s3(aws_env):
    """A fresh bucket on the loopback server (emptied and removed after the test)."""
    client = boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=BUCKET)
    storage._filesystems.clear()          # each test's endpoint (the server, or a proxy in front of it)
    yield client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def put(client, objects: dict[str, bytes]) -> None:
    for key, body in objects.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)


def proxied(aws_env, cut_after: int, cuts: int | None) -> tuple[FaultProxy, dict[str, str]]:
    parts = urlsplit(aws_env["AWS_ENDPOINT_URL"])
    proxy = FaultProxy((parts.hostname, parts.port), cut_after, cuts)
    return proxy, {**aws_env, "AWS_ENDPOINT_URL": proxy.url}


def test_local_run_stages_the_prefix_and_keeps_outputs_with_the_run(s3, aws_env, tmp_path, provdir):
    put(s3, {"ds/a.txt": b"alpha\n", "ds/nested/b.txt": b"beta\n", "other/c.txt": b"not this prefix\n"})
    descriptor = write_json(tmp_path / "reader.json", READER)
    invocation = write_json(tmp_path / "inv.json", {"first": "a.txt"})
    scratch = tmp_path / "scratch"
    result = run_clowdr("local", descriptor, invocation, provdir, "--s3", f"s3://{BUCKET}/ds",
                        env={**aws_env, "DASK_CLOWDR__WORKER__SCRATCH": str(scratch)})
    assert result.returncode == 0, result.stderr
    summary = result.summary(0)
    run = result.meta.parent
    assert summary["status"] == "succeeded"
    assert summary["staged_in"] == {"objects": 2, "bytes": 11, "source": f"s3://{BUCKET}/ds", "subtree": ""}
    kept = summary["outputs_kept"]
    assert set(kept) == {"joined.txt", "listing.txt"}
    assert kept["joined.txt"] == str(run / "outputs" / "task-0" / "joined.txt")
    assert Path(kept["joined.txt"]).read_text() == "alpha\nbeta\n"
    assert Path(kept["listing.txt"]).read_text().split() == ["./a.txt", "./nested/b.txt"]
    assert not (run / "work").exists(), "the data is not copied into the provenance directory"
    assert not list(scratch.rglob("a.txt")), "the scratch directory goes once its outputs are kept"
    assert json.loads((result.meta / "task-0.json").read_text())["dataloc"] == [f"s3://{BUCKET}/ds"]
    for path in run.rglob("*"):
        assert path.is_dir() or SECRET.encode() not in path.read_bytes(), path


def test_bids_task_gets_its_subject_and_the_top_level_files_only(s3, aws_env, tmp_path, provdir):
    put(s3, {"bids/dataset_description.json": b"{}", "bids/participants.tsv": b"participant_id\n",
             "bids/sub-01/anat/sub-01_T1w.nii": b"1", "bids/sub-02/anat/sub-02_T1w.nii": b"2",
             "bids/derivatives/x/sub-01.txt": b"x"})
    descriptor = write_json(tmp_path / "bidslist.json", BIDS)
    invocation = write_json(tmp_path / "inv.json", {"bids_dir": ".", "analysis_level": "participant",
                                                     "participant_label": ["01", "02"]})
    result = run_clowdr("local", descriptor, invocation, provdir, "--s3", f"s3://{BUCKET}/bids", "--bids",
                        env=aws_env)
    assert result.returncode == 0, result.stderr
    for n, subject in ((0, "01"), (1, "02")):
        summary = result.summary(n)
        assert summary["staged_in"]["subtree"] == f"sub-{subject}"
        listing = Path(summary["outputs_kept"]["listing.txt"]).read_text().split()
        assert listing == ["./dataset_description.json", "./participants.tsv",
                           f"./sub-{subject}/anat/sub-{subject}_T1w.nii"]


def test_a_cut_download_is_retried_and_arrives_whole(s3, aws_env, tmp_path, provdir):
    big = os.urandom(12 * MIB)
    put(s3, {"ds/a.txt": b"a", "ds/nested/b.txt": b"b", "ds/big.bin": big})
    proxy, env = proxied(aws_env, cut_after=2 * MIB, cuts=1)
    try:
        result = run_clowdr("local", write_json(tmp_path / "reader.json", READER),
                            write_json(tmp_path / "inv.json", {"first": "a.txt"}), provdir,
                            "--s3", f"s3://{BUCKET}/ds", env=env)
    finally:
        proxy.close()
    assert result.returncode == 0, result.stderr
    assert proxy.cut == 1
    summary = result.summary(0)
    assert summary["status"] == "succeeded" and summary.get("previous_attempts_ended") is None
    digest = Path(summary["outputs_kept"]["big.sha"]).read_text().split()[0]
    assert digest == hashlib.sha256(big).hexdigest()


def test_a_download_that_keeps_failing_is_a_staging_error_and_leaves_no_partial_file(s3, aws_env, tmp_path, provdir):
    put(s3, {"ds/a.txt": b"a", "ds/nested/b.txt": b"b", "ds/big.bin": os.urandom(6 * MIB)})
    proxy, env = proxied(aws_env, cut_after=1 * MIB, cuts=None)
    scratch = tmp_path / "scratch"
    try:
        result = run_clowdr("local", write_json(tmp_path / "reader.json", READER),
                            write_json(tmp_path / "inv.json", {"first": "a.txt"}), provdir,
                            "--s3", f"s3://{BUCKET}/ds", "--retries", "1",
                            env={**env, "DASK_CLOWDR__WORKER__SCRATCH": str(scratch)})
    finally:
        proxy.close()
    assert result.returncode == 1, result.stderr
    summary = result.summary(0)
    assert summary["failure"] == "staging-error" and "big.bin" in summary["error"]
    assert [a["failure"] for a in summary["previous_attempts_ended"]] == ["staging-error"]   # retried by class
    assert "staging-error: 1" in result.stderr
    assert summary.get("command") is None, "the tool never started"
    leftovers = [p for p in scratch.rglob("*") if p.name.startswith(staging.PARTIAL) or p.name == "big.bin"]
    assert leftovers == []
    assert SECRET not in result.stderr + json.dumps(summary)


def test_upload_is_multipart_private_retried_and_never_truncated(s3, aws_env, tmp_path, monkeypatch):
    """Outputs to an s3:// run (the cloud back-end's case): through the same proxy, at the API."""
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    big = os.urandom(12 * MIB)
    (work / "big.bin").write_bytes(big)
    (work / "sub" / "small.txt").write_text("small")
    outputs = [str(work / "big.bin"), str(work / "sub")]
    plan = staging.Staging(outputs=f"s3://{BUCKET}/prov/run-1/outputs/task-0", chunk=5 * MIB, tries=3)

    proxy, env = proxied(aws_env, cut_after=3 * MIB, cuts=1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", env["AWS_ENDPOINT_URL"])
    storage._filesystems.clear()
    try:
        kept = staging.keep_outputs(plan, outputs, str(work))
    finally:
        proxy.close()
    assert proxy.cut == 1
    assert kept == {"big.bin": f"s3://{BUCKET}/prov/run-1/outputs/task-0/big.bin",
                    "sub/small.txt": f"s3://{BUCKET}/prov/run-1/outputs/task-0/sub/small.txt"}
    head = s3.head_object(Bucket=BUCKET, Key="prov/run-1/outputs/task-0/big.bin")
    assert head["ETag"].strip('"').endswith("-3"), "uploaded in three parts"
    assert s3.get_object(Bucket=BUCKET, Key="prov/run-1/outputs/task-0/big.bin")["Body"].read() == big
    # private: the owner alone (moto keeps no ACL for a multipart object, so the single-part one is read)
    grants = s3.get_object_acl(Bucket=BUCKET, Key="prov/run-1/outputs/task-0/sub/small.txt")["Grants"]
    assert [g["Permission"] for g in grants] == ["FULL_CONTROL"] and "URI" not in grants[0]["Grantee"]

    failing = staging.Staging(outputs=f"s3://{BUCKET}/prov/run-2/outputs/task-0", chunk=5 * MIB, tries=2)
    proxy, env = proxied(aws_env, cut_after=3 * MIB, cuts=None)
    monkeypatch.setenv("AWS_ENDPOINT_URL", env["AWS_ENDPOINT_URL"])
    storage._filesystems.clear()
    try:
        with pytest.raises(staging.StagingError) as failed:
            staging.keep_outputs(failing, outputs, str(work))
    finally:
        proxy.close()
    assert "big.bin" in str(failed.value) and SECRET not in str(failed.value)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="prov/run-2/outputs/task-0/big.bin")
    assert listed.get("KeyCount", 0) == 0, "no truncated object"
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads"), "no upload left open"


@pytest.mark.parametrize("url, says", [("s3:/no-bucket", "not an s3:// URL"), ("s3://", "expected s3://bucket"),
                                       ("s3://clowdr-missing/x", "no such bucket"),
                                       (f"s3://{BUCKET}/empty", "no objects under this prefix")])
def test_bad_s3_locations_are_one_line_and_write_nothing(s3, aws_env, tmp_path, provdir, url, says):
    result = run_clowdr("local", write_json(tmp_path / "reader.json", READER),
                        write_json(tmp_path / "inv.json", {"first": "a.txt"}), provdir, "--s3", url, env=aws_env)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and says in result.stderr and url in result.stderr
    assert list(provdir.iterdir()) == []
