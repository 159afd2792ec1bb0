"""A test ECS agent (not AWS's): it runs, as local processes, the tasks that moto's ECS reports RUNNING.

moto keeps ECS's control plane (RunTask, DescribeTasks, StopTask) but runs no container. This agent watches the
clusters through the ECS API like AWS's agent watches its instance, and starts each RUNNING task's container as
a process with exactly the command and environment of its task definition and RunTask overrides (the image's
``dask-scheduler``/``dask-worker`` are the shims of docker/, run with this interpreter). Like ECS it adds only
what its own platform gives a container: the credentials endpoint of the task role
(``AWS_CONTAINER_CREDENTIALS_FULL_URI``: credentials from STS AssumeRole of the task definition's task role,
served on 127.0.0.1 as ECS serves them), the task metadata endpoint (``ECS_CONTAINER_METADATA_URI_V4``), the
region, and the S3/AWS endpoint (here moto's). Never the client's environment. A task stopped through the API
has its processes killed as ``docker stop`` kills a container's; a process that exits stops its task, with the
reason ECS would give.
"""
from __future__ import annotations

import datetime
import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil

SHIMS = Path(__file__).resolve().parent.parent / "docker"
ROOT = SHIMS.parent


class TestEcsAgent:
    __test__ = False            # not a pytest class

    def __init__(self, session: Any, endpoint: str, workdir: Path) -> None:
        self.ecs, self.sts = session.client("ecs"), session.client("sts")
        self.region, self.endpoint, self.workdir = session.region_name, endpoint, workdir
        self.processes: dict[str, subprocess.Popen] = {}       # task arn -> its container's process
        self.started: dict[str, dict[str, Any]] = {}           # task arn -> command and environment given
        self.stopped: set[str] = set()
        self._credentials: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self._thread = threading.Thread(target=self._watch, name="test-ecs-agent", daemon=True)
        self._thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    # -- the endpoints ECS gives a container ------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                _, kind, task_id, *rest = self.path.split("/")
                arn = next((a for a in agent.started if a.endswith("/" + task_id)), None)
                if arn is None:
                    self.send_error(404)
                    return
                body = agent._credentials_for(arn) if kind == "credentials" else {"TaskARN": arn}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def _credentials_for(self, arn: str) -> dict[str, str]:
        with self._lock:
            if arn not in self._credentials:
                role = self.started[arn]["task_role"]
                found = self.sts.assume_role(RoleArn=role, RoleSessionName=arn.rsplit("/", 1)[1][:64])["Credentials"]
                expiration = found["Expiration"]
                self._credentials[arn] = {
                    "AccessKeyId": found["AccessKeyId"], "SecretAccessKey": found["SecretAccessKey"],
                    "Token": found["SessionToken"], "RoleArn": role,
                    "Expiration": (expiration if isinstance(expiration, datetime.datetime)
                                   else datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
                                   ).strftime("%Y-%m-%dT%H:%M:%SZ")}
            return self._credentials[arn]

    # -- watching ECS -------------------------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._closing.wait(0.3):
            try:
                self._step()
            except Exception as exc:  # noqa: BLE001 -- a cluster deleted between two calls
                print(f"test ECS agent: {type(exc).__name__}: {exc}", file=sys.stderr)

    def _step(self) -> None:
        for cluster in self.ecs.list_clusters()["clusterArns"]:
            arns = self.ecs.list_tasks(cluster=cluster)["taskArns"]
            ours = [a for a in self.processes if a.split("/")[-2] == cluster.rsplit("/", 1)[1]]
            if not arns and not ours:
                continue
            for task in self.ecs.describe_tasks(cluster=cluster, tasks=sorted(set(arns) | set(ours)))["tasks"]:
                arn = task["taskArn"]
                if task["lastStatus"] == "RUNNING" and arn not in self.processes:
                    self._start(task)
                elif task["lastStatus"] == "STOPPED" and arn in self.processes and arn not in self.stopped:
                    self.stopped.add(arn)
                    _kill(self.processes[arn])
        for arn, process in list(self.processes.items()):
            if process.poll() is not None and arn not in self.stopped:
                self.stopped.add(arn)
                cluster = arn.split("/")[-2]
                self.ecs.stop_task(cluster=cluster, task=arn,
                                   reason=f"Essential container in task exited (exit code {process.returncode})")

    def _start(self, task: dict[str, Any]) -> None:
        definition = self.ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
        [container] = definition["containerDefinitions"]
        override = next((o for o in task.get("overrides", {}).get("containerOverrides", [])
                         if o.get("name") == container["name"]), {})
        command = override.get("command") or container.get("command") or []
        task_id = task["taskArn"].rsplit("/", 1)[1]
        scratch = self.workdir / task_id
        scratch.mkdir(parents=True)
        environment = {
            # what the image gives: its PATH (the shims), its interpreter, the clowdr it carries
            "PATH": f"{SHIMS}:{Path(sys.executable).parent}:/usr/bin:/bin", "CLOWDR_PYTHON": sys.executable,
            "PYTHONPATH": str(ROOT), "HOME": str(scratch), "TMPDIR": str(scratch), "LANG": "C.UTF-8",
            # what ECS gives every container
            "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{self.base}/credentials/{task_id}",
            "ECS_CONTAINER_METADATA_URI_V4": f"{self.base}/metadata/{task_id}",
            "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
            # this test platform's network: AWS's endpoints are moto's, the instance metadata does not exist
            "AWS_ENDPOINT_URL": self.endpoint, "AWS_EC2_METADATA_DISABLED": "true",
            # the task definition's and the RunTask override's own
            **{e["name"]: e["value"] for e in container.get("environment", [])},
            **{e["name"]: e["value"] for e in override.get("environment", [])},
        }
        with open(scratch / "container.log", "wb") as log:
            process = subprocess.Popen(command, env=environment, cwd=scratch, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        self.started[task["taskArn"]] = {"command": command, "environment": environment,
                                         "task_role": definition["taskRoleArn"], "log": scratch / "container.log"}
        self.processes[task["taskArn"]] = process

    # -- for the tests ------------------------------------------------------------------------------------------
    def task_running(self, needle: str) -> str | None:
        """The ECS task whose process tree runs a command line containing ``needle``."""
        for arn, process in list(self.processes.items()):      # the agent's thread adds tasks meanwhile
            try:
                tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
                if any(needle in " ".join(p.cmdline()) for p in tree):
                    return arn
            except psutil.Error:
                continue
        return None

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=10)
        for process in list(self.processes.values()):
            _kill(process)
        self.server.shutdown()


def _kill(process: subprocess.Popen, grace: float = 30.0) -> None:
    """As ``docker stop`` ends a container: SIGTERM to its first process, then after ``grace`` seconds (ECS's
    default stopTimeout) SIGKILL to every process it holds (its whole tree: a container's processes die with it,
    whatever group they are in)."""
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.Error:
        tree = []
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=grace)
    except (OSError, subprocess.TimeoutExpired):
        pass
    for member in tree:
        try:
            member.kill()
        except psutil.Error:
            pass
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def wait_until(check: Any, timeout: float = 120, pause: float = 0.3) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(pause)
    raise AssertionError("timed out")
