"""The original tool's documented Python API beyond ``clowdr.driver`` (Clowdr 0.1.2): ``clowdr.controller.metadata``,
``clowdr.utils``, ``clowdr.task.TaskHandler``, ``clowdr.endpoint.AWS``, on the original's own example layouts (a BIDS
dataset with participants and sessions, a directory of invocations, a sweep over two parameters).

Their planning is ``clowdr local``'s: each layout is planned both ways and the task files compared."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from conftest import DATA, EXAMPLES, run_clowdr, write_json

from clowdr.controller import metadata
from clowdr import utils
from clowdr.errors import NotAvailableError

ECHO = EXAMPLES / "echo-tool.json"
BIDSAPP = DATA / "bidsapp.json"


def _task_files_of(meta: Path) -> dict[str, dict]:
    """Every task-N.json of a run, with the run's own paths written as <run>: comparable across runs."""
    found = {}
    for path in meta.glob("task-*.json"):
        if path.name.count("-") == 1:
            found[path.name] = json.loads(path.read_text().replace(str(meta.parent), "<run>"))
    return found


def _invocations(files: list[str]) -> list[dict]:
    return [json.loads(Path(f).read_text()) for f in files]


def _same_as_clowdr_local(tasks: list[str], provdir: Path, *args: str | Path) -> None:
    """``clowdr local --setup`` on the same input writes the same task files (and invocation copies)."""
    setup = run_clowdr("local", *args, provdir, "--setup")
    assert setup.returncode == 0, setup.stderr
    ours = Path(tasks[0]).parent
    assert _task_files_of(ours) == _task_files_of(setup.meta)
    for name, task in _task_files_of(ours).items():
        invocation = task["invocation"].replace("<run>", "")
        assert (ours.parent / invocation.lstrip("/")).read_text() == (setup.meta.parent / invocation.lstrip("/")).read_text()


@pytest.fixture
def bids_layout(tmp_path: Path) -> tuple[Path, Path]:
    """A BIDS dataset of two participants with two sessions each, and a participant-level invocation of them."""
    bids = tmp_path / "ds"
    for participant in ("01", "02"):
        for session in ("pre", "post"):
            write_json(bids / f"sub-{participant}" / f"ses-{session}" / "anat" / "info.json", {})
    write_json(bids / "dataset_description.json", {"Name": "test", "BIDSVersion": "1.8.0"})
    invocation = write_json(tmp_path / "bids-invocation.json", {
        "bids_dir": str(bids), "output_dir": str(tmp_path / "out"), "analysis_level": "participant",
        "participant_label": ["01", "02"], "session_label": ["pre", "post"]})
    return bids, invocation


def test_signatures_are_the_original_ones():
    from clowdr.endpoint.AWS import AWS
    from clowdr.task import TaskHandler

    def names(function):
        return list(inspect.signature(function).parameters)

    assert names(metadata.consolidateTask) == ["tool", "invocation", "clowdrloc", "dataloc", "kwargs"]
    assert names(metadata.sweepTasks) == ["taskdicts", "invocations", "sweep_param"]
    assert names(metadata.bidsTasks) == ["clowdrloc", "taskdict"]
    assert names(metadata.prepareForRemote) == ["tasks", "tmploc", "clowdrloc"]
    assert names(utils.backoff) == ["function", "posargs", "optargs", "backoff_time", "kwargs"]
    assert names(utils.get) == ["remote", "local", "kwargs"] and names(utils.post) == ["local", "remote", "kwargs"]
    assert names(utils.getContainer) == ["savedir", "container", "kwargs"]
    assert names(TaskHandler) == ["taskfile", "kwargs"]
    assert names(TaskHandler.manageTask) == ["self", "taskfile", "provdir", "verbose", "kwargs"]
    assert names(AWS) == ["auth"]


def test_consolidate_a_bids_dataset_by_participant_and_session(bids_layout, tmp_path):
    bids, invocation = bids_layout
    provdir = tmp_path / "prov"
    provdir.mkdir()
    tasks, invocations = metadata.consolidateTask(str(BIDSAPP), str(invocation), str(provdir), "localhost", bids=True)
    assert [Path(t).name for t in tasks] == [f"task-{n}.json" for n in range(4)]
    assert [Path(i).name for i in invocations] == ["invocation_sub-01_ses-pre.json", "invocation_sub-01_ses-post.json",
                                                   "invocation_sub-02_ses-pre.json", "invocation_sub-02_ses-post.json"]
    assert [(i["participant_label"], i["session_label"]) for i in _invocations(invocations)] == [
        (["01"], ["pre"]), (["01"], ["post"]), (["02"], ["pre"]), (["02"], ["post"])]
    first = json.loads(Path(tasks[0]).read_text())
    assert first["dataloc"] == [f"{bids}/sub-01/ses-pre"] and first["invocation"] == invocations[0]
    assert set(first) == {"tool", "invocation", "dataloc", "taskloc"}             # the original keys
    other = tmp_path / "other"
    other.mkdir()
    _same_as_clowdr_local(tasks, other, BIDSAPP, invocation, "--bids")


def test_bids_tasks_splits_one_task_dictionary(bids_layout, tmp_path):
    bids, invocation = bids_layout
    clowdrloc = tmp_path / "meta"
    clowdrloc.mkdir()
    taskdict = {"tool": str(BIDSAPP), "invocation": str(invocation), "dataloc": [str(bids)], "taskloc": "x"}
    tasks, files = metadata.bidsTasks(str(clowdrloc), taskdict)
    assert [t["dataloc"] for t in tasks] == [[f"{bids}/sub-{p}/ses-{s}"] for p in ("01", "02") for s in ("pre", "post")]
    assert [t["invocation"] for t in tasks] == files and all(Path(f).parent == clowdrloc for f in files)
    group = write_json(tmp_path / "group.json", dict(json.loads(invocation.read_text()), analysis_level="group"))
    tasks, files = metadata.bidsTasks(str(clowdrloc), dict(taskdict, invocation=str(group)))
    assert files == [str(group)] and len(tasks) == 1                               # a group analysis stays one task


def test_consolidate_a_directory_of_invocations(provdir):
    tasks, invocations = metadata.consolidateTask(str(ECHO), str(EXAMPLES / "invocations"), str(provdir), "localhost")
    originals = sorted((EXAMPLES / "invocations").iterdir())
    assert len(tasks) == len(originals) == 3
    assert _invocations(invocations) == [json.loads(p.read_text()) for p in originals]
    assert all(json.loads(Path(t).read_text())["dataloc"] == ["localhost"] for t in tasks)
    run = json.loads((Path(tasks[0]).parent / "run.json").read_text())
    assert run["launches"][-1]["setup_only"] and run["tasks"] == 3                 # recorded as --setup records it
    _same_as_clowdr_local(tasks, provdir, ECHO, EXAMPLES / "invocations")


def test_consolidate_a_sweep_over_two_parameters_and_run_a_task_by_hand(provdir):
    from clowdr.task import TaskHandler

    tasks, invocations = metadata.consolidateTask(str(ECHO), str(EXAMPLES / "sweep.json"), str(provdir), "localhost",
                                                  sweep=["message", "repeat"], verbose=False)
    combos = [(i["message"], i["repeat"]) for i in _invocations(invocations)]
    assert sorted(combos) == sorted((m, r) for m in ("alpha", "beta", "gamma") for r in (1, 2)) and len(tasks) == 6
    _same_as_clowdr_local(tasks, provdir, ECHO, EXAMPLES / "sweep.json", "--sweep", "message", "--sweep", "repeat")

    handler = TaskHandler(tasks[1], provdir="/not/needed", local=True)
    message, repeat = combos[1]
    assert handler.task_id == "1" and handler.output.exit_code == 0 and handler.output.stdout == f"{message}\n" * repeat
    assert list(handler.cpu_ram_usage.columns) == ["time", "cpu", "ram"]
    meta = Path(tasks[1]).parent
    assert json.loads((meta / "task-1-summary.json").read_text())["status"] == "succeeded"
    assert json.loads((meta / "run.json").read_text())["launches"][-1]["mode"] == "task"


def test_sweep_tasks_one_parameter_at_a_time(tmp_path):
    invocation = write_json(tmp_path / "meta" / "sweep.json", json.loads((EXAMPLES / "sweep.json").read_text()))
    taskdict = {"tool": str(ECHO), "invocation": str(invocation), "dataloc": ["localhost"], "taskloc": "w"}
    tasks, files = metadata.sweepTasks([taskdict], [str(invocation)], "message")
    assert [json.loads(Path(f).read_text())["message"] for f in files] == ["alpha", "beta", "gamma"]
    tasks, files = metadata.sweepTasks(tasks, files, "repeat")
    assert len(tasks) == len(files) == 6 and [t["invocation"] for t in tasks] == files
    assert {(i["message"], i["repeat"]) for i in _invocations(files)} == {(m, r) for m in ("alpha", "beta", "gamma")
                                                                          for r in (1, 2)}


def test_prepare_for_remote_renames_the_task_files_paths(provdir):
    tasks, _ = metadata.consolidateTask(str(ECHO), str(EXAMPLES / "invocations"), str(provdir), "localhost")
    assert metadata.prepareForRemote(tasks, str(provdir.resolve()), "s3://bucket/prov") == 0
    task = json.loads(Path(tasks[0]).read_text())
    run_id = Path(tasks[0]).parent.parent.name
    assert task["tool"] == f"s3://bucket/prov/{run_id}/clowdr/echo-tool.json"
    assert task["invocation"] == f"s3://bucket/prov/{run_id}/clowdr/hello.json"
    assert task["taskloc"] == f"s3://bucket/prov/{run_id}/work/task-0"


def test_utils_on_local_paths(tmp_path):
    assert utils.truepath("s3://b/k") == "s3://b/k" and utils.truepath(str(tmp_path / "a" / "..")) == str(tmp_path)
    code = utils.randstring(8)
    assert len(code) == 8 and code.isalnum() and code.upper() == code
    assert utils.splitS3Path("s3://my-bucket/some/key.json") == ("my-bucket", "some/key.json")
    source = write_json(tmp_path / "src" / "f.json", {"a": 1})
    target = tmp_path / "dst"
    target.mkdir()
    assert utils.get(str(source), str(target)) == [str(target / "f.json")]
    assert utils.get(str(target / "f.json"), str(target)) == [str(target / "f.json")]      # already there
    assert utils.post(str(source.parent), str(tmp_path / "copy")) == [str(tmp_path / "copy")]
    assert (tmp_path / "copy" / "f.json").exists()
    utils.remove(str(tmp_path / "copy"))
    utils.remove(str(tmp_path / "copy"))                                                    # gone already: fine
    assert not (tmp_path / "copy").exists()
    image = tmp_path / "tool.simg"
    image.write_bytes(b"image")
    assert utils.getContainer(str(target), {"type": "docker", "image": "busybox"}) is None
    assert utils.getContainer(str(target), {"type": "singularity", "image": "me/tool:1"}, simg=str(image)) == \
        [str(target / "me-tool-1.simg")]


def test_backoff_retries_then_gives_up():
    calls = []

    def flaky(value, scale=1):
        calls.append(value)
        if len(calls) < 2:
            raise OSError("not yet")
        return value * scale

    assert utils.backoff(flaky, [21], {"scale": 2}, backoff_time=5) == (0, 42) and len(calls) == 2
    assert utils.backoff(lambda: 1 / 0, [], {}, backoff_time=0) == (-1, "division by zero")


def test_aws_endpoint_names_the_cloud_back_end_to_use_instead(tmp_path):
    from clowdr.endpoint.AWS import AWS

    with pytest.raises(NotAvailableError, match="AWS Batch endpoint is not part of this clowdr; run on AWS with clowdr cloud"):
        AWS(str(tmp_path / "credentials.csv"))


def test_utils_get_and_post_on_s3(tmp_path, request):
    """Against a real S3 API server on loopback (moto, as in test_share_s3): uploads land private, come back whole."""
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    import boto3

    aws_env = request.getfixturevalue("aws_env")
    client = boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket="clowdr-utils")
    source = tmp_path / "out"
    write_json(source / "a.json", {"a": 1})
    write_json(source / "sub" / "b.json", {"b": 2})
    sent = utils.post(str(source), "s3://clowdr-utils/prov/run")
    assert sorted(sent) == ["s3://clowdr-utils/prov/run/a.json", "s3://clowdr-utils/prov/run/sub/b.json"]
    grants = client.get_object_acl(Bucket="clowdr-utils", Key="prov/run/a.json")["Grants"]
    assert not [g for g in grants if g["Grantee"].get("URI", "").endswith("AllUsers")]          # not public-read
    fetched = utils.get("s3://clowdr-utils/prov", str(tmp_path / "back"))
    assert sorted(fetched) == [str(tmp_path / "back" / "prov" / "run" / "a.json"),
                               str(tmp_path / "back" / "prov" / "run" / "sub" / "b.json")]
    assert json.loads((tmp_path / "back" / "prov" / "run" / "sub" / "b.json").read_text()) == {"b": 2}
