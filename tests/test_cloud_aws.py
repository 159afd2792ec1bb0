"""``clowdr cloud ... aws`` driving the real dask-cloudprovider FargateCluster code against moto (ECS, EC2, IAM,
CloudWatch Logs, S3) in this process, all inside ``bwrap --unshare-net``: the network namespace has only ``lo``,
so no packet can leave the machine whatever the code under test tries.

What moto can show is tested: every resource created, tagged with the run id, private to the client's address,
the task role's policy scoped to the run's prefixes, no credential in any request AWS received (task
definitions, RunTask overrides, everything), and everything deleted at the end of start-up, on Ctrl-C, and by
``clowdr cloud-cleanup`` after a ``kill -9``. Without more, moto runs no container (the scheduler task
reads RUNNING at 127.0.0.1 and never answers: the start-up limit, Ctrl-C and kill -9 tests use that); with the
test ECS agent (tests/ecsagent.py), each RUNNING task's container runs as a local process with its task
definition's and overrides' command and environment and the task role's credentials served as ECS serves them,
so whole runs go end to end (a sweep, BIDS with an s3:// PROVDIR, a worker task stopped mid-run).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, SECRET, free_port, write_json

IN_NETNS = os.environ.get("CLOWDR_TEST_NETNS") == "1"
KEY_ID = "AKIACLOWDR" + SECRET[-10:].upper()
DATA, PROV = "clowdr-cloud-data", "clowdr-cloud-prov"
inside = pytest.mark.skipif(not IN_NETNS, reason="runs inside bwrap --unshare-net (see the namespace test)")


def test_cloud_tests_run_in_a_network_namespace(netns_run):
    """This module again, inside a network namespace that has only loopback (started with the session by
    conftest.py, beside the other tests)."""
    if IN_NETNS:
        pytest.skip("already inside the namespace")
    if not shutil.which("bwrap"):
        pytest.skip("bubblewrap (bwrap) is not installed: scripts/test.sh installs it")
    pytest.importorskip("dask_cloudprovider")
    pytest.importorskip("moto.server")
    code, output = netns_run
    assert code == 0, output[-12000:]
    last = output.strip().splitlines()[-1]
    assert re.match(r"\d+ passed, 1 skipped in ", last), last     # every inner test ran (only this one skipped)


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """moto in this process on 127.0.0.1: ECS tasks stay RUNNING, at 127.0.0.1; every request recorded."""
    recording = tmp_path_factory.mktemp("moto") / "recording.jsonl"
    os.environ.update(MOTO_ENABLE_RECORDING="true", MOTO_RECORDER_FILEPATH=str(recording))
    from moto.ecs import models as ecs_models
    from moto.moto_api import recorder, state_manager
    from moto.server import ThreadedMotoServer

    ecs_models.random_private_ip = lambda *args, **kwargs: "127.0.0.1"      # where the scheduler "runs"
    state_manager.set_transition(model_name="ecs::task", transition={"progression": "manual", "times": 10 ** 9})
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    recorder.start_recording()
    yield {"url": f"http://127.0.0.1:{port}", "recording": recording}
    server.stop()


@pytest.fixture
def aws(moto, tmp_path, monkeypatch):
    """A user whose only keys are in a console CSV; buckets with data; boto3 for the test's own looks."""
    import boto3

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    env = {"AWS_ENDPOINT_URL": moto["url"], "AWS_EC2_METADATA_DISABLED": "true", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "TMPDIR": str(tmp_path), "DASK_CLOWDR__CLOUD__IMAGE": "clowdr-worker:test",
           "DASK_CLOWDR__CLOUD__CLIENT_ADDRESS": "127.0.0.1", "DASK_CLOWDR__CLOUD__START_TIMEOUT": "12",
           "DASK_CLOWDR__CLOUD__TEARDOWN_TIMEOUT": "60", "DASK_CLOWDR__CLOUD__PRIVATE_IP": "true",
           "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "120"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    creds = tmp_path / "new_user_credentials.csv"
    creds.write_text(f"User name,Password,Access key ID,Secret access key\nclowdr,,{KEY_ID},{SECRET}\n")
    session = boto3.Session(aws_access_key_id="inspector", aws_secret_access_key="inspector", region_name="us-east-1")
    s3 = session.client("s3")
    for bucket in (DATA, PROV):
        if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=DATA, Key="in/hello.txt", Body=b"hello")
    session.client("ecs").put_account_setting(name="taskLongArnFormat", value="enabled")
    clients: list[subprocess.Popen] = []
    yield {"env": env, "creds": creds, "session": session, "tmp": tmp_path, "clients": clients}
    for proc in clients:      # a test that failed midway leaves no client (nor its ECS tasks) to the next one
        if proc.poll() is None:
            proc.terminate()                    # clowdr deletes its run's resources on SIGTERM
            try:
                proc.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=30)


def cloud(aws, provdir, *extra, wait=True, descriptor=None, invocation=None, region="us-east-1", timeout=300):
    """``clowdr cloud`` (the example tool and invocations unless told otherwise): the process, or its end."""
    descriptor = descriptor or ROOT / "examples" / "echo-tool.json"
    invocation = invocation or ROOT / "examples" / "invocations"
    argv = [sys.executable, "-m", "clowdr", "cloud", str(descriptor), str(invocation),
            str(provdir), f"s3://{DATA}/in", "aws", str(aws["creds"]), *(["-r", region] if region else []), *extra]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, **aws["env"]})
    aws["clients"].append(proc)
    if not wait:
        return proc
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def leftovers(aws, run_id=None):
    from clowdr.awsresources import Resources

    return Resources(aws["session"].client).find(run_id)


def wait_for_scheduler_task(aws, deadline=120):
    """The run's ECS cluster and its scheduler task, once RunTask has happened."""
    ecs = aws["session"].client("ecs")
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        for arn in ecs.list_clusters()["clusterArns"]:
            [cluster] = ecs.describe_clusters(clusters=[arn])["clusters"]
            if cluster["status"] == "ACTIVE" and cluster["clusterName"].startswith("clowdr-"):
                tasks = ecs.list_tasks(cluster=arn)["taskArns"]
                if tasks:
                    return arn, ecs.describe_tasks(cluster=arn, tasks=tasks)["tasks"][0]
        time.sleep(0.3)
    raise AssertionError("no scheduler task was started")


def assert_no_secret(*texts):
    for text in texts:
        assert SECRET not in text and KEY_ID not in text


@inside
def test_setup_prints_the_plan_and_creates_nothing(aws, provdir):
    code, out, err = cloud(aws, provdir, "--setup")
    assert code == 0, err
    assert "none created" in out and '"clowdr:run"' in out and "127.0.0.1/32" in out
    [run] = provdir.iterdir()
    options = json.loads((run / "clowdr" / "run.json").read_text())["options"]
    assert options["cluster"] == "cloud" and options["credentials"] == str(aws["creds"])
    assert not {"stop", "aws_session"} & set(options), "live objects are not options"
    assert leftovers(aws) == []
    assert not aws["session"].client("ecs").list_clusters()["clusterArns"] or all(
        c["status"] == "INACTIVE" for c in aws["session"].client("ecs").describe_clusters(
            clusters=aws["session"].client("ecs").list_clusters()["clusterArns"])["clusters"])
    assert_no_secret(out, err)


@inside
def test_start_up_creates_owned_tagged_private_resources_and_deletes_them_at_its_time_limit(aws, provdir):
    proc = cloud(aws, provdir, wait=False)
    cluster_arn, task = wait_for_scheduler_task(aws)
    run_id = cluster_arn.rsplit("/clowdr-", 1)[1]
    session = aws["session"]
    ecs, iam, ec2, logs = (session.client(s) for s in ("ecs", "iam", "ec2", "logs"))
    tags = {"clowdr:run": run_id, "clowdr:created-by": "clowdr"}

    [found] = leftovers(aws, run_id)
    assert found.cluster_arn == cluster_arn and len(found.roles) == 2 and found.security_group
    assert found.log_group == f"/clowdr/{run_id}" and len(found.task_definitions) == 2
    # tagged, and never with dask-cloudprovider's createdBy (its account-wide cleanup would take them)
    [cluster] = ecs.describe_clusters(clusters=[cluster_arn], include=["TAGS"])["clusters"]
    assert {t["key"]: t["value"] for t in cluster["tags"]} == tags
    for role in found.roles:
        assert {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=role)["Tags"]} == tags
        assert iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"] == []
    # the task role: read the input prefix, write the run's prefix, nothing else
    policy = iam.get_role_policy(RoleName=f"clowdr-{run_id}-task", PolicyName=f"clowdr-{run_id}-task-policy")
    statements = {s["Sid"]: s for s in policy["PolicyDocument"]["Statement"]}
    assert statements["ReadInput"]["Resource"] == f"arn:aws:s3:::{DATA}/in/*"
    assert statements["ReadInput"]["Action"] == "s3:GetObject"
    assert statements["WriteRun"]["Resource"] == f"arn:aws:s3:::{DATA}/clowdr-runs/{run_id}/*"
    assert all(not str(s.get("Resource")).endswith(":::*") and s["Resource"] != "*"
               for s in statements.values())
    # the security group: the Dask ports from the client only, everything else only from inside the group
    [group] = ec2.describe_security_groups(GroupIds=[found.security_group])["SecurityGroups"]
    assert {t["Key"]: t["Value"] for t in group["Tags"]} == tags
    rules = {(p["FromPort"], p["ToPort"]): p for p in group["IpPermissions"]}
    assert [r["CidrIp"] for r in rules[(8786, 8787)]["IpRanges"]] == ["127.0.0.1/32"]
    assert rules[(0, 65535)]["IpRanges"] == [] and [
        g["GroupId"] for g in rules[(0, 65535)]["UserIdGroupPairs"]] == [found.security_group]
    assert all(not p.get("Ipv6Ranges") for p in group["IpPermissions"])
    # the real FargateCluster ran the scheduler with clowdr's task definition, security group and no secret
    assert task["taskDefinitionArn"] == found.task_definitions[0]
    assert task["launchType"] == "FARGATE"
    overrides = task["overrides"]["containerOverrides"][0]
    assert overrides["name"] == "dask-scheduler" and overrides["command"][0] == "dask-scheduler"
    assert sorted(e["name"] for e in overrides["environment"]) == [
        "CLOWDR_CLIENT_VERSIONS", "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES",
        "DASK_DISTRIBUTED__SCHEDULER__DEFAULT_TASK_DURATIONS__CLOWDR"]
    for arn in found.task_definitions:
        definition = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        assert definition["taskRoleArn"].endswith(f"/clowdr-{run_id}-task")
        assert not definition["containerDefinitions"][0].get("environment")
        assert_no_secret(json.dumps(definition, default=str))
    assert logs.list_tags_log_group(logGroupName=found.log_group)["tags"] == tags

    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.startswith("clowdr cloud:")]
    assert len(lines) == 1, err
    assert "start-up took over 12 s" in lines[0] and "scheduler task (RUNNING) to answer on port 8786" in lines[0]
    assert leftovers(aws, run_id) == [], "every resource deleted"
    assert_no_secret(out, err, *(p.read_text(errors="replace") for p in provdir.rglob("*") if p.is_file()))
    launch = json.loads((provdir / run_id / "clowdr" / "run.json").read_text())["launches"][-1]
    assert launch["status"] == "failed" and launch["end"], "the launch's end is recorded"
    assert json.loads((provdir / run_id / "clowdr" / "plan.json").read_text())["tasks"], "--rerun can find them"


@inside
def test_ctrl_c_during_start_up_deletes_everything(aws, provdir):
    proc = cloud(aws, provdir, wait=False)
    cluster_arn, _ = wait_for_scheduler_task(aws)
    run_id = cluster_arn.rsplit("/clowdr-", 1)[1]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "interrupted by SIGINT" in err and "every AWS resource of the run was deleted" in err
    assert "clowdr local" not in err, "no resume command that would run the tasks elsewhere"
    [run] = provdir.iterdir()
    assert json.loads((run / "clowdr" / "run.json").read_text())["launches"][-1]["status"] == "interrupted"
    assert leftovers(aws, run_id) == []


@inside
def test_kill_9_leaves_resources_that_cloud_cleanup_finds_by_tag_and_deletes(aws, provdir):
    proc = cloud(aws, provdir, wait=False)
    cluster_arn, _ = wait_for_scheduler_task(aws)
    run_id = cluster_arn.rsplit("/clowdr-", 1)[1]
    time.sleep(1.0)
    proc.kill()
    proc.communicate(timeout=60)
    [left] = leftovers(aws, run_id)
    assert left.cluster_arn and left.roles and left.security_group
    env = {**os.environ, **aws["env"]}
    listed = subprocess.run([sys.executable, "-m", "clowdr", "cloud-cleanup", str(aws["creds"]), "--dry-run"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert listed.returncode == 0 and f"would delete run {run_id}:" in listed.stdout, listed.stderr
    assert leftovers(aws, run_id) != []
    done = subprocess.run([sys.executable, "-m", "clowdr", "cloud-cleanup", str(aws["creds"]), "--run_id", run_id],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert done.returncode == 0 and f"deleted run {run_id}:" in done.stdout, done.stderr
    assert leftovers(aws, run_id) == []
    ecs = aws["session"].client("ecs")
    assert ecs.describe_clusters(clusters=[cluster_arn])["clusters"][0]["status"] == "INACTIVE"


@inside
def test_s3_provdir_gets_the_records(aws, tmp_path):
    code, out, err = cloud(aws, f"s3://{PROV}/runs", "--setup")
    assert code == 0, err
    s3 = aws["session"].client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=PROV, Prefix="runs/").get("Contents", [])]
    run_ids = {k.split("/")[1] for k in keys}
    assert len(run_ids) == 1
    run_id = run_ids.pop()
    assert f"runs/{run_id}/clowdr/run.json" in keys and f"runs/{run_id}/clowdr/task-0.json" in keys
    run = json.loads(s3.get_object(Bucket=PROV, Key=f"runs/{run_id}/clowdr/run.json")["Body"].read())
    assert run["cluster"] == "cloud"
    assert_no_secret(json.dumps(run))


@inside
@pytest.mark.parametrize("change, says", [
    ({"credentials": "missing.csv"}, "cannot read the credentials file"),
    ({"s3": "s3:/bad"}, "--s3: s3:/bad: not an s3:// URL"),
    ({"s3": "s3://clowdr-no-such-bucket/in"}, "no such bucket"),
    ({"provdir": "s3://"}, "provdir: s3://: expected s3://bucket"),
], ids=["credentials", "malformed-url", "missing-bucket", "malformed-provdir"])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(aws, provdir, change, says):
    values = {"provdir": str(provdir), "s3": f"s3://{DATA}/in", "credentials": str(aws["creds"])}
    values.update(change)
    argv = [sys.executable, "-m", "clowdr", "cloud", str(ROOT / "examples" / "echo-tool.json"),
            str(ROOT / "examples" / "invocations"), values["provdir"], values["s3"], "aws", values["credentials"]]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **aws["env"]},
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and says in done.stderr, done.stderr
    assert list(provdir.iterdir()) == [] and leftovers(aws) == []


@inside
def test_ec2_cluster_instances_carry_the_role_tags_and_no_secret_and_are_terminated(aws, provdir):
    """EC2Cluster (cloud.cluster: ec2): its VMs boot nothing under moto, so the start-up limit ends the run; the
    instances it created are checked meanwhile (user data, profile, group, tags) and must be gone after."""
    ec2 = aws["session"].client("ec2")
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    aws["env"].update({"DASK_CLOWDR__CLOUD__CLUSTER": "ec2", "DASK_CLOWDR__CLOUD__AMI": ami})
    proc = cloud(aws, provdir, wait=False)

    def scheduler_instance():
        found = ec2.describe_instances(Filters=[{"Name": "tag:clowdr:created-by", "Values": ["clowdr"]},
                                                {"Name": "instance-state-name", "Values": ["running"]}])
        return [i for r in found["Reservations"] for i in r["Instances"]]

    from ecsagent import wait_until

    [instance] = wait_until(scheduler_instance, timeout=120)
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    run_id = tags["clowdr:run"]
    [found] = leftovers(aws, run_id)
    assert found.cluster_arn is None and found.task_definitions == [] and found.roles == [f"clowdr-{run_id}-task"]
    assert instance["IamInstanceProfile"]["Arn"].endswith(f"/clowdr-{run_id}")
    assert [g["GroupId"] for g in instance["NetworkInterfaces"][0]["Groups"]] == [found.security_group]
    attribute = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    user_data = base64.b64decode(attribute["UserData"]["Value"]).decode()
    assert "CLOWDR_CLIENT_VERSIONS" in user_data and "clowdr-worker:test" in user_data
    assert_no_secret(user_data)
    role = aws["session"].client("iam").get_role(RoleName=f"clowdr-{run_id}-task")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}

    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "scheduler instance (running) to boot and answer on port 8786" in err, err
    assert leftovers(aws, run_id) == []
    state = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][0]["State"]
    assert state["Name"] == "terminated"
    assert_no_secret(out, err)


@inside
@pytest.mark.parametrize("setting, value, says", [
    ("CLIENT_ADDRESS", "0.0.0.0/0", "narrower range than the whole Internet"),
    ("CLIENT_ADDRESS", "my-laptop", "'my-laptop' is not an address or CIDR"),
    ("CLUSTER", "kubernetes", "'kubernetes' is not one of fargate, ec2"),
    ("TOOL_CONTAINER", "docker", "docker needs cloud.cluster: ec2"),
], ids=["open-to-all", "not-an-address", "unknown-cluster", "docker-on-fargate"])
def test_bad_cloud_settings_are_one_line_exit_2_and_create_nothing(aws, provdir, setting, value, says):
    aws["env"][f"DASK_CLOWDR__CLOUD__{setting}"] = value
    code, out, err = cloud(aws, provdir)
    assert code == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    assert list(provdir.iterdir()) == [] and leftovers(aws) == []


@inside
def test_teardown_retries_the_security_group_while_an_interface_drains_then_names_what_waits(aws, monkeypatch):
    """moto deletes a group an interface still uses; AWS refuses (DependencyViolation): moto is made to refuse
    too, as AWS does, for this test."""
    import threading

    from moto.ec2.exceptions import DependencyViolationError
    from moto.ec2.models.security_groups import SecurityGroupBackend

    from clowdr.awsresources import CloudError, Plan, Resources

    original = SecurityGroupBackend._delete_security_group

    def as_aws_does(backend, vpc_id, group_id):
        if any(group_id in [g.id for g in eni.group_set] for eni in backend.enis.values()):
            raise DependencyViolationError(f"resource {group_id} has a dependent object")
        return original(backend, vpc_id, group_id)

    monkeypatch.setattr(SecurityGroupBackend, "_delete_security_group", as_aws_does)

    session = aws["session"]
    ec2 = session.client("ec2")
    steps: list[str] = []
    resources = Resources(session.client, steps.append)
    plan = Plan("2026-12-06_00-00-00-DRAINING", "us-east-1", f"s3://{DATA}/in", f"s3://{DATA}/runs/x",
                "127.0.0.1/32", "img")
    created = resources.create(plan)
    # a network interface still holding the group, as a stopped Fargate task's does for a while
    eni = ec2.create_network_interface(SubnetId=created.subnets[0], Groups=[created.security_group])
    eni_id = eni["NetworkInterface"]["NetworkInterfaceId"]
    with pytest.raises(CloudError, match=r"teardown timed out while deleting the security group .* draining"):
        resources.delete(created, timeout=3)
    assert created.security_group and not created.roles and created.cluster_arn is None, "the rest is gone"

    threading.Timer(3, lambda: ec2.delete_network_interface(NetworkInterfaceId=eni_id)).start()
    resources.delete(created, timeout=120)
    assert created.empty and leftovers(aws, plan.run_id) == []
    assert steps.count(f"deleting the security group {eni['NetworkInterface']['Groups'][0]['GroupId']} "
                       "(its network interfaces are draining)") == 2


# -- whole runs, on the test ECS agent --------------------------------------------------------------------------
READER = {
    "name": "reader", "tool-version": "1", "schema-version": "0.5", "description": "reads staged data",
    "command-line": "cat hello.txt > out-[MSG].txt; echo [MSG] $(cat hello.txt); sleep [SECONDS]",
    "inputs": [{"id": "msg", "name": "msg", "type": "String", "value-key": "[MSG]"},
               {"id": "seconds", "name": "seconds", "type": "Number", "value-key": "[SECONDS]"}],
    "output-files": [{"id": "out", "name": "out", "path-template": "out-[MSG].txt"}],
}


@pytest.fixture
def agent(aws):
    from ecsagent import TestEcsAgent

    running = TestEcsAgent(aws["session"], aws["env"]["AWS_ENDPOINT_URL"], aws["tmp"] / "ecs-agent")
    aws["env"].update({"DASK_CLOWDR__CLOUD__START_TIMEOUT": "240", "DASK_CLOWDR__CLOUD__N_WORKERS": "2"})
    yield running
    running.close()


def tool_run(aws, provdir, invocation, *extra, wait=True):
    return cloud(aws, provdir, *extra, wait=wait, descriptor=write_json(aws["tmp"] / "reader.json", READER),
                 invocation=write_json(aws["tmp"] / "inv.json", invocation), region=None, timeout=600)


def summaries(meta: Path) -> dict[int, dict]:
    return {int(p.name.split("-")[1]): json.loads(p.read_text()) for p in meta.glob("task-*-summary.json")}


def assert_no_secret_in_files(aws):
    """Every file this test wrote (PROVDIR, its local mirror, the client's and the workers' temporary files, the
    test agent's container logs), but the credentials file itself."""
    for path in aws["tmp"].rglob("*"):
        if path.is_file() and path != aws["creds"]:
            data = path.read_bytes()
            assert SECRET.encode() not in data and KEY_ID.encode() not in data, path


def assert_agent_saw_no_key(agent):
    for started in list(agent.started.values()):
        assert_no_secret(json.dumps(started["command"]), json.dumps(started["environment"]),
                         started["log"].read_text(errors="replace"))
        assert "AWS_ACCESS_KEY_ID" not in started["environment"]


@inside
def test_a_sweep_runs_end_to_end_on_fargate_through_the_test_agent(aws, agent, provdir):
    code, out, err = tool_run(aws, provdir, {"msg": ["a", "b", "c"], "seconds": 0}, "--sweep", "msg")
    assert code == 0, err
    meta = Path(out.strip().splitlines()[-1])
    run_id = meta.parent.name
    found = summaries(meta)
    assert sorted(found) == [0, 1, 2]
    s3 = aws["session"].client("s3")
    worker_tasks = {a for a, s in list(agent.started.items()) if s["command"][0] == "dask-worker"}
    for n, msg in enumerate("abc"):
        summary = found[n]
        assert summary["status"] == "succeeded" and summary["backend"] == "cloud", summary
        assert summary["job_id"] in worker_tasks, "the attempt names its ECS task"
        assert (meta / f"task-{n}-stdout.txt").read_text() == f"{msg} hello\n"
        key = f"clowdr-runs/{run_id}/outputs/task-{n}/out-{msg}.txt"
        assert summary["outputs_kept"] == {f"out-{msg}.txt": f"s3://{DATA}/{key}"}
        assert s3.get_object(Bucket=DATA, Key=key)["Body"].read() == b"hello"
        assert (meta.parent / "outputs" / f"task-{n}" / f"out-{msg}.txt").read_bytes() == b"hello", "kept locally"
    commands = sorted(s["command"][0] for s in list(agent.started.values()))
    assert commands == ["dask-scheduler", "dask-worker", "dask-worker"]
    assert_agent_saw_no_key(agent)
    assert_no_secret_in_files(aws)
    assert leftovers(aws, run_id) == [], "every resource deleted after a normal run"
    from ecsagent import wait_until

    wait_until(lambda: all(p.poll() is not None for p in list(agent.processes.values())), timeout=60)   # all stopped
    assert_no_secret(out, err, *(p.read_text(errors="replace") for p in provdir.rglob("*") if p.is_file()))


@inside
def test_bids_with_an_s3_provdir_end_to_end(aws, agent):
    bids = {"bids/dataset_description.json": b"{}", "bids/sub-01/anat/T1w.nii": b"1",
            "bids/sub-02/anat/T1w.nii": b"2"}
    s3 = aws["session"].client("s3")
    for key, body in bids.items():
        s3.put_object(Bucket=DATA, Key=key, Body=body)
    descriptor = write_json(aws["tmp"] / "bidslist.json", {
        "name": "bidslist", "tool-version": "1", "schema-version": "0.5", "description": "lists a subject",
        "command-line": "find [BIDS_DIR] -type f | sort; echo [ANALYSIS_LEVEL] [PARTICIPANT_LABEL]",
        "inputs": [{"id": "bids_dir", "name": "d", "type": "String", "value-key": "[BIDS_DIR]"},
                   {"id": "analysis_level", "name": "l", "type": "String", "value-key": "[ANALYSIS_LEVEL]"},
                   {"id": "participant_label", "name": "p", "type": "String", "list": True, "optional": True,
                    "command-line-flag": "--participant_label", "value-key": "[PARTICIPANT_LABEL]"}]})
    inv = write_json(aws["tmp"] / "bids-inv.json", {"bids_dir": ".", "analysis_level": "participant",
                                                     "participant_label": ["01", "02"]})
    done = subprocess.run([sys.executable, "-m", "clowdr", "cloud", str(descriptor), str(inv), f"s3://{PROV}/bids-runs",
                           f"s3://{DATA}/bids", "aws", str(aws["creds"]), "-b"], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **aws["env"]}, timeout=600)
    assert done.returncode == 0, done.stderr
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=PROV, Prefix="bids-runs/").get("Contents", [])]
    run_id = keys[0].split("/")[1]
    for n, subject in ((0, "01"), (1, "02")):
        stdout = s3.get_object(Bucket=PROV, Key=f"bids-runs/{run_id}/clowdr/task-{n}-stdout.txt")["Body"].read()
        assert stdout.decode().split() == ["./dataset_description.json", f"./sub-{subject}/anat/T1w.nii",
                                           "participant", "--participant_label", subject]
        summary = json.loads(s3.get_object(Bucket=PROV, Key=f"bids-runs/{run_id}/clowdr/task-{n}-summary.json")[
            "Body"].read())
        assert summary["status"] == "succeeded"
    assert leftovers(aws, run_id) == []
    assert_agent_saw_no_key(agent)
    assert_no_secret_in_files(aws)


@inside
def test_an_s3_provdir_shows_a_running_task(aws, agent):
    """Usage and logs reach an s3:// PROVDIR while the task runs (cloud.provenance-interval), not only at the end."""
    from ecsagent import wait_until

    aws["env"]["DASK_CLOWDR__CLOUD__PROVENANCE_INTERVAL"] = "1"
    proc = tool_run(aws, f"s3://{PROV}/live", {"msg": "live", "seconds": 10}, wait=False)
    s3 = aws["session"].client("s3")

    def live_records():
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=PROV, Prefix="live/").get("Contents", [])]
        wanted = [k for k in keys if k.endswith(("/clowdr/task-0-stdout.txt", "/clowdr/task-0-usage.csv"))]
        if len(wanted) < 2:
            return None
        stdout = s3.get_object(Bucket=PROV, Key=next(k for k in wanted if k.endswith("stdout.txt")))["Body"].read()
        return wanted if stdout == b"live hello\n" else None

    keys = wait_until(live_records, timeout=300)
    assert agent.task_running("sleep 10"), "the task still runs"
    assert not any(k.endswith("task-0-summary.json") for k in
                   [o["Key"] for o in s3.list_objects_v2(Bucket=PROV, Prefix="live/")["Contents"]])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    run_prefix = keys[0].rsplit("/clowdr/", 1)[0]
    summary = json.loads(s3.get_object(Bucket=PROV, Key=f"{run_prefix}/clowdr/task-0-summary.json")["Body"].read())
    assert summary["status"] == "succeeded"


@inside
def test_a_worker_task_stopped_mid_run_is_replaced_recorded_worker_lost_and_run_again(aws, agent, provdir):
    from ecsagent import wait_until

    proc = tool_run(aws, provdir, {"msg": "slow", "seconds": 10}, wait=False)
    arn = wait_until(lambda: agent.task_running("sleep 10"), timeout=300)
    ecs = aws["session"].client("ecs")
    ecs.stop_task(cluster=arn.split("/")[-2], task=arn, reason="Your Spot Task was interrupted (test)")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    meta = Path(out.strip().splitlines()[-1])
    summary = summaries(meta)[0]
    assert summary["status"] == "succeeded" and summary["attempt"] == 2 and summary["job_id"] != arn
    [lost] = summary["previous_attempts_ended"]
    assert lost["failure"] == "worker-lost" and lost["job_id"] == arn
    assert "Your Spot Task was interrupted (test)" in lost["error"]
    # one task, one worker: the stopped one was replaced (neither ECS nor dask-cloudprovider would)
    workers = [a for a, started in list(agent.started.items()) if started["command"][0] == "dask-worker"]
    assert len(workers) == 2 and summary["job_id"] == workers[1]
    assert "starting replacements" in err
    assert leftovers(aws, meta.parent.name) == []


@inside
def test_sigterm_mid_run_stops_the_tools_and_deletes_everything(aws, agent, provdir):
    from ecsagent import wait_until

    proc = tool_run(aws, provdir, {"msg": "long", "seconds": 120}, wait=False)
    wait_until(lambda: agent.task_running("sleep 120"), timeout=300)
    run_dirs = wait_until(lambda: list(provdir.iterdir()), timeout=30)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "interrupted by SIGTERM" in err
    run_id = run_dirs[0].name
    assert leftovers(aws, run_id) == []
    wait_until(lambda: all(p.poll() is not None for p in list(agent.processes.values())), timeout=60)
    assert agent.task_running("sleep 120") is None
    archived = json.loads((run_dirs[0] / "clowdr" / "attempts" / "task-0" / "attempt-1" / "summary.json").read_text())
    assert archived["failure"] == "cancelled"


@inside
def test_no_request_aws_received_carries_a_credential(aws, moto):
    """Last: every request moto recorded in this module (bodies and query strings: the parameters of every
    call, task definitions, RunTask overrides, policies, tags) is free of the secret and the key id."""
    from moto.moto_api import recorder

    recorder.stop_recording()
    requests = [json.loads(line) for line in moto["recording"].read_text().splitlines()]
    texts = []
    for request in requests:
        body = request.get("body") or ""
        if request.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        headers = json.dumps(request.get("headers") or {})
        assert SECRET not in headers, "the secret never leaves the client (only a signature made with it does)"
        texts.append(f"{request.get('url')} {body} {headers}")
        assert_no_secret(str(request.get("url")), body)
    everything = "\n".join(texts)
    for call in ("RunTask", "RegisterTaskDefinition", "CreateRole", "PutRolePolicy", "CreateSecurityGroup",
                 "AuthorizeSecurityGroupIngress", "CreateLogGroup", "StopTask", "DeleteRole"):
        assert call in everything, f"{call} was recorded"
