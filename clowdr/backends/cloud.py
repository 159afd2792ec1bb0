"""``clowdr cloud ... aws``: tasks on AWS, a dask-cloudprovider FargateCluster (default) or EC2Cluster.

clowdr creates the run's resources itself (``clowdr.awsresources``), tagged with the run id, and gives them to
dask-cloudprovider, which creates nothing and never runs its account-wide cleanup. The cluster clowdr returns
deletes them all when it closes (the end of the launch, Ctrl-C, SIGTERM, an error), and ``clowdr cloud-cleanup``
removes what a killed client left. Start-up has a time limit (``cloud.start-timeout``) and says which step it
waited for, read from AWS itself (the scheduler task PENDING, RUNNING but not answering, ...).

Workers share no filesystem with the client: tasks run in scratch space, their data is staged from S3 and their
outputs go to the run's S3 prefix (``clowdr.staging``) through the task role, never through a key.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clowdr.backends.base import Backend
from clowdr.errors import InputError, LaunchStopped

log = logging.getLogger("clowdr.cloud")
KINDS = ("fargate", "ec2")
#: what workers and scheduler must have of the client's own software (checked as each one starts)
VERSIONS_VARIABLE = "CLOWDR_CLIENT_VERSIONS"


@dataclass
class CloudContext:
    """What the cloud back-end needs from its request (``clowdr.request.CloudRequest``)."""

    session: Any                      # clowdr.credentials.AwsSession: the client's only holder of keys
    data: str                         # s3:// input prefix
    run_prefix: str                   # s3:// prefix the run writes (the run's id is appended)
    region: str
    stop: threading.Event | None = None


def client_versions() -> dict[str, str]:
    """Python, dask, distributed and clowdr as the client has them: the worker image must match."""
    import platform
    from importlib.metadata import version

    from clowdr import __version__

    return {"python": ".".join(platform.python_version_tuple()[:2]), "dask": version("dask"),
            "distributed": version("distributed"), "clowdr": __version__}


class CloudBackend(Backend):
    """AWS through dask-cloudprovider; settings in the ``cloud`` section of the config."""

    name = "cloud"
    _task_arn: str | None = None          # on a worker: its ECS task (worker_job_id)

    def __init__(self, request: Any = None) -> None:
        super().__init__(request)
        self.step = "preparing"
        self.resources: Any = None
        self.created: Any = None
        self._cidr: str | None = None         # the client's address, once asked
        self.keeper: WorkerKeeper | None = None

    @property
    def shared_filesystem(self) -> bool:
        return False

    @property
    def context(self) -> CloudContext:
        context = getattr(self.request, "cloud", None)
        if context is None:
            raise InputError("cloud", "the cloud back-end runs through 'clowdr cloud' (it needs S3 data and "
                                      "credentials)")
        return context

    def slots(self) -> int:
        """``n-workers`` worker tasks, but none idle from the start: at most one per task group."""
        return min(int(self.setting("n-workers")), max(1, self.request.groups))

    def kind(self) -> str:
        kind = str(self.setting("cluster")).lower()
        if kind not in KINDS:
            raise InputError("clowdr.cloud.cluster", f"'{kind}' is not one of {', '.join(KINDS)}")
        return kind

    def check(self) -> None:
        """Before anything is written: the settings, and who may reach the scheduler (asked once, here)."""
        kind = self.kind()
        self.context
        strategy = self.setting("tool-container")
        if strategy not in ("worker-image", "docker"):
            raise InputError("clowdr.cloud.tool-container", f"'{strategy}' is not one of worker-image, docker")
        if strategy == "docker" and kind == "fargate":
            raise InputError("clowdr.cloud.tool-container", "docker needs cloud.cluster: ec2 (Fargate has no "
                                                            "Docker engine: the tool's image is the worker image)")
        if self.request.submits and not self.setting("image"):
            raise InputError("clowdr.cloud.image", "no worker image: build one from docker/Dockerfile.worker "
                                                   "(README, 'Worker image') and set clowdr.cloud.image")
        self._cidr = self.client_cidr()

    def worker_descriptor(self, descriptor: dict[str, Any]) -> dict[str, Any]:
        """On Fargate there is no Docker engine: the tool's image is the worker image, and its command runs in it
        directly (``cloud.tool-container: worker-image``). With ``docker`` (EC2 with the Docker socket mounted)
        the tool's container runs as on a workstation."""
        if self.setting("tool-container") == "docker" and self.kind() == "ec2":
            return descriptor
        return {k: v for k, v in descriptor.items() if k != "container-image"}

    # -- what would be created -----------------------------------------------------------------------------------
    def plan(self) -> Any:
        from clowdr.awsresources import Plan

        context = self.context
        run_id = getattr(self.request, "run_id", None) or "<run id>"
        return Plan(run_id=run_id, region=context.region, data=context.data,
                    run_prefix=f"{context.run_prefix.rstrip('/')}/{run_id}", client_cidr=self.client_cidr(),
                    image=str(self.setting("image") or "<cloud.image>"), kind=self.kind(),
                    worker_cpu=int(self.setting("worker-cpu")), worker_memory=int(self.setting("worker-memory")),
                    scheduler_cpu=int(self.setting("scheduler-cpu")),
                    scheduler_memory=int(self.setting("scheduler-memory")),
                    extra_tags=dict(self.setting("tags") or {}))

    def client_cidr(self) -> str:
        """Who may reach the scheduler: ``cloud.client-address`` (an address or CIDR), or with ``auto`` this
        machine's public address as AWS sees it (asked of checkip.amazonaws.com, only when launching)."""
        import ipaddress

        if self._cidr:
            return self._cidr
        setting = str(self.setting("client-address") or "auto")
        if setting == "auto":
            if not self.request.submits:
                return "<this machine's public address>/32"
            import urllib.request

            try:
                with urllib.request.urlopen("https://checkip.amazonaws.com", timeout=10) as answer:
                    setting = answer.read().decode().strip()
            except OSError as exc:
                raise InputError("clowdr.cloud.client-address", f"cannot find this machine's public address "
                                                                f"({type(exc).__name__}): set it") from None
        try:
            network = ipaddress.ip_network(setting, strict=False)
        except ValueError:
            raise InputError("clowdr.cloud.client-address", f"'{setting}' is not an address or CIDR") from None
        if network.version != 4 or network.prefixlen == 0:
            raise InputError("clowdr.cloud.client-address", f"'{setting}': an IPv4 address or a narrower range "
                                                            f"than the whole Internet")
        return str(network)

    def job_script(self) -> str | None:
        return self.plan().describe()

    # -- starting ------------------------------------------------------------------------------------------------
    def _step(self, step: str) -> None:
        self.step = step
        log.info("cloud: %s", step)

    def start(self, log_directory: Path | None = None) -> Any:
        from clowdr.awsresources import Created, Resources

        context, plan = self.context, self.plan()
        self.resources = Resources(context.session.client, self._step)
        self.created = Created(plan.run_id)
        try:
            self.resources.create(plan, self.setting("vpc") if self.setting("vpc") != "default" else None,
                                  list(self.setting("subnets") or []) or None, self.created)
            return self._start_cluster(plan)
        except BaseException:
            self.teardown()
            raise

    def _start_cluster(self, plan: Any) -> Any:
        """dask-cloudprovider's cluster, started in a thread while this one watches the time limit, the stop
        request, and what AWS says of the scheduler and workers (the step that is waiting)."""
        outcome: dict[str, Any] = {}

        def build() -> None:
            try:
                outcome["cluster"] = self._cluster(plan)
            except BaseException as exc:  # noqa: BLE001 -- handed to the watching thread
                outcome["error"] = exc

        self._step("starting the scheduler")
        thread = threading.Thread(target=build, name="clowdr-cloud-start", daemon=True)
        thread.start()
        limit = float(self.setting("start-timeout"))
        deadline = time.monotonic() + limit
        stop = self.context.stop
        while thread.is_alive():
            thread.join(2.0)
            if not thread.is_alive():
                break
            self._step(self._waiting_for())
            if stop is not None and stop.is_set():
                raise LaunchStopped(f"stopped while {self.step}; every AWS resource of the run was deleted",
                                    plan.run_id, getattr(stop, "signal_number", None))
            if time.monotonic() > deadline:
                from clowdr.awsresources import CloudError

                raise CloudError(f"start-up took over {limit:.0f} s (cloud.start-timeout), still {self.step}; "
                                 f"every AWS resource of the run was deleted")
        if "error" in outcome:
            from clowdr.awsresources import CloudError

            error = outcome["error"]
            log.debug("cloud: the cluster did not start", exc_info=error)
            raise CloudError(f"the cluster did not start while {self.step} ({type(error).__name__}); every AWS "
                             f"resource of the run was deleted") from None
        cluster = outcome["cluster"]
        cluster.owner = self
        if self.kind() == "fargate":
            self.keeper = WorkerKeeper(self, cluster, cluster._clowdr_workers,
                                       int(self.setting("worker-replacements")))
        return cluster

    def _waiting_for(self) -> str:
        """The step start-up waits for, from ECS's account of the run's tasks."""
        if self.kind() == "ec2":
            from clowdr.awsresources import RUN_TAG

            ec2 = self.context.session.client("ec2")
            try:
                found = ec2.describe_instances(Filters=[{"Name": f"tag:{RUN_TAG}", "Values": [self.created.run_id]}])
            except Exception as exc:  # noqa: BLE001 -- only refines a message
                return f"starting the instances (EC2 unreadable: {type(exc).__name__})"
            states = [i["State"]["Name"] for r in found["Reservations"] for i in r["Instances"]]
            if not states:
                return "waiting for EC2 to start the scheduler instance"
            if len(states) == 1:
                return f"waiting for the scheduler instance ({states[0]}) to boot and answer on port 8786"
            return f"waiting for {len(states) - 1} worker instance(s) ({', '.join(sorted(set(states[1:])))})"
        ecs = self.context.session.client("ecs")
        try:
            arns = ecs.list_tasks(cluster=self.created.cluster_arn)["taskArns"]
            tasks = ecs.describe_tasks(cluster=self.created.cluster_arn, tasks=arns)["tasks"] if arns else []
        except Exception as exc:  # noqa: BLE001 -- only refines a message
            return f"starting the tasks (ECS unreadable: {type(exc).__name__})"
        groups = {"scheduler": [], "worker": []}
        for task in tasks:
            role = "scheduler" if task.get("taskDefinitionArn", "").rsplit("/", 1)[-1].split(":")[0].endswith(
                "-scheduler") else "worker"
            groups[role].append(task.get("lastStatus", "?"))
        if not groups["scheduler"]:
            return "waiting for ECS to start the scheduler task"
        status = groups["scheduler"][0]
        if status != "RUNNING":
            return f"waiting for the scheduler task ({status}: capacity, image pull)"
        if not groups["worker"]:
            return "waiting for the scheduler task (RUNNING) to answer on port 8786"
        pending = [s for s in groups["worker"] if s != "RUNNING"]
        return (f"waiting for {len(pending)} worker task(s) ({', '.join(sorted(set(pending)))})" if pending
                else "waiting for the workers to connect to the scheduler")

    def _cluster(self, plan: Any) -> Any:
        created = self.created
        workers = self.slots()
        common = {"n_workers": workers, "security_groups": [created.security_group], "clowdr_workers": workers,
                  "vpc": created.vpc, "asynchronous": False, "credentials": self.context.session}
        if self.kind() == "fargate":
            return owned_fargate()(
                cluster_arn=created.cluster_arn, execution_role_arn=created.role_arns["execution"],
                task_role_arn=created.role_arns["task"], cloudwatch_logs_group=created.log_group,
                subnets=created.subnets, scheduler_task_definition_arn=created.task_definitions[0],
                worker_task_definition_arn=created.task_definitions[1], image=plan.image, tags=plan.tags,
                environment=worker_environment(), worker_extra_args=WORKER_ARGS, skip_cleanup=True,
                fargate_use_private_ip=bool(self.setting("private-ip")), region_name=plan.region, **common)
        return owned_ec2()(
            region=plan.region, instance_type=self.setting("instance-type"), ami=self.setting("ami"),
            docker_image=plan.image, iam_instance_profile={"Name": created.instance_profile},
            subnet_id=created.subnets[0] if created.subnets else None, env_vars=worker_environment(),
            worker_options={"preload": ["clowdr.cloudworker"], "preload_nanny": ["clowdr.cloudworker"]},
            filesystem_size=int(self.setting("disk-gib")), use_private_ip=bool(self.setting("private-ip")),
            instance_tags=plan.tags, volume_tags=plan.tags, **common)

    # -- a worker that vanished ------------------------------------------------------------------------------------
    def submit_error(self) -> str | None:
        """Worker tasks that keep stopping (a broken image, a version mismatch): once the replacements allowed are
        spent and nothing runs, the tasks still waiting are recorded as submit-errors instead of waiting forever."""
        keeper = self.keeper
        if keeper is None or not keeper.exhausted:
            return None
        return (f"ECS worker tasks keep stopping ({keeper.last_reason}); {keeper.replaced} replaced, "
                f"cloud.worker-replacements reached")

    def explain_lost(self, job_id: str | None) -> tuple[Any, str] | None:
        """ECS's account of the worker task that ran the attempt (its ARN is the attempt's job id)."""
        from clowdr.protocol import Failure

        if not job_id or self.created is None or not self.created.cluster_arn:
            return None
        try:
            [task] = self.context.session.client("ecs").describe_tasks(cluster=self.created.cluster_arn,
                                                                       tasks=[job_id])["tasks"]
        except Exception as exc:  # noqa: BLE001 -- only refines the record
            return Failure.WORKER_LOST, f"ECS task {job_id.rsplit('/', 1)[-1]} unreadable ({type(exc).__name__})"
        reason = task.get("stoppedReason") or task.get("stopCode") or "no reason given"
        return Failure.WORKER_LOST, f"ECS task {job_id.rsplit('/', 1)[-1]} {task.get('lastStatus', '?')}: {reason}"

    @classmethod
    def worker_job_id(cls) -> str | None:
        """On an ECS task: its ARN, from the task metadata endpoint ECS gives every container (asked once)."""
        uri = os.environ.get("ECS_CONTAINER_METADATA_URI_V4")
        if not uri:
            return None
        if cls._task_arn is None:
            import urllib.request

            try:
                with urllib.request.urlopen(f"{uri}/task", timeout=5) as answer:
                    cls._task_arn = str(json.loads(answer.read())["TaskARN"])
            except (OSError, ValueError, KeyError):
                return None
        return cls._task_arn

    # -- stopping ------------------------------------------------------------------------------------------------
    def teardown(self) -> None:
        """Delete every resource of the run (retrying while AWS drains them), at most ``teardown-timeout`` s."""
        from clowdr.awsresources import CloudError

        if self.resources is None or self.created is None or self.created.empty:
            return
        try:
            self.resources.delete(self.created, float(self.setting("teardown-timeout")))
        except CloudError as exc:
            raise CloudError(f"{exc}: what is left goes with 'clowdr cloud-cleanup CREDENTIALS --run_id "
                             f"{self.created.run_id}'") from None
        log.info("cloud: every AWS resource of run %s deleted", self.created.run_id)


class WorkerKeeper:
    """Replaces worker tasks that stop (a Spot interruption, a failed host, StopTask): neither ECS nor
    dask-cloudprovider does, and a task whose worker was lost would otherwise wait for a worker forever. At most
    ``limit`` replacements per run; then the back-end reports workers as refused (``submit_error``)."""

    def __init__(self, backend: CloudBackend, cluster: Any, desired: int, limit: int, interval: float = 3.0) -> None:
        self.backend, self.cluster, self.desired, self.limit, self.interval = backend, cluster, desired, limit, interval
        self.replaced = 0
        self.exhausted = False
        self.last_reason: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clowdr-cloud-workers", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 -- ECS unreadable for a moment: tried again
                log.debug("cloud: worker check failed (%s)", type(exc).__name__)

    def check(self) -> None:
        """Find the worker tasks ECS reports STOPPED and start as many new ones."""
        arns = {name: w.task_arn for name, w in list(self.cluster.workers.items()) if getattr(w, "task_arn", None)}
        if not arns or self.exhausted:
            return
        ecs = self.backend.context.session.client("ecs")
        tasks = ecs.describe_tasks(cluster=self.backend.created.cluster_arn, tasks=list(arns.values()))["tasks"]
        stopped = {t["taskArn"]: t.get("stoppedReason") or "no reason given" for t in tasks
                   if t.get("lastStatus") == "STOPPED"}
        gone = [name for name, arn in arns.items() if arn in stopped]
        if not gone or self._stop.is_set():
            return
        self.last_reason = stopped[arns[gone[0]]]
        if self.replaced + len(gone) > self.limit:
            self.exhausted = True
            log.warning("cloud: worker tasks keep stopping (%s): no more replacements", self.last_reason)
            return
        self.replaced += len(gone)
        log.warning("cloud: %d worker task(s) stopped (%s); starting replacements", len(gone), self.last_reason)

        def replace() -> None:
            for name in gone:
                self.cluster.worker_spec.pop(name, None)
                self.cluster.workers.pop(name, None)
            self.cluster.scale(self.desired)

        self.cluster.loop.add_callback(replace)

    def stop(self) -> None:
        self._stop.set()


#: workers load clowdr's worker module (its spawner, the version check) before taking tasks
WORKER_ARGS = ["--preload-nanny", "clowdr.cloudworker", "--preload", "clowdr.cloudworker"]


def worker_environment() -> dict[str, str]:
    """The only environment clowdr gives scheduler and workers (no credential, ever): the client's versions,
    and the scheduler settings clowdr relies on, which a scheduler outside the client's process would not
    have otherwise (a lost worker's task is never re-run silently by Dask: clowdr records it and runs it again)."""
    from clowdr import config

    return {VERSIONS_VARIABLE: json.dumps(client_versions(), sort_keys=True),
            "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": str(config.get("scheduler.allowed-failures")),
            "DASK_DISTRIBUTED__SCHEDULER__DEFAULT_TASK_DURATIONS__CLOWDR": "1h"}


def _owned(base: type) -> type:
    """dask-cloudprovider's ``base``, with the client's own AWS session (never keys in the config or an
    environment) and a close that deletes the run's resources whatever happens to the cluster itself."""

    class Owned(base):  # type: ignore[misc, valid-type]
        owner: CloudBackend | None = None

        def __init__(self, *, credentials: Any, clowdr_workers: int, **kwargs: Any) -> None:
            self._clowdr_session = credentials
            self._clowdr_workers = clowdr_workers
            super().__init__(**kwargs)

        @property
        def boto_session(self) -> Any:
            """EC2Cluster's session (its own would read the environment's credentials): the client's keys."""
            from aiobotocore.session import AioSession

            session = AioSession()
            frozen = self._clowdr_session.session.get_credentials().get_frozen_credentials()
            session.set_credentials(frozen.access_key, frozen.secret_key, frozen.token)
            return session

        @boto_session.setter
        def boto_session(self, value: Any) -> None:
            pass

        def _client(self, name: str) -> Any:
            frozen = self._clowdr_session.session.get_credentials().get_frozen_credentials()
            return self.session.create_client(name, aws_access_key_id=frozen.access_key,
                                              aws_secret_access_key=frozen.secret_key,
                                              aws_session_token=frozen.token, region_name=self._clowdr_region())

        def _clowdr_region(self) -> str | None:
            return getattr(self, "_region_name", None) or getattr(self, "region", None)

        def close(self, *args: Any, **kwargs: Any) -> Any:
            if self.owner is not None and self.owner.keeper is not None:
                self.owner.keeper.stop()          # the workers about to stop are not replaced
            try:
                return super().close(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 -- the resources go all the same
                log.warning("cloud: the Dask cluster did not close cleanly (%s)", type(exc).__name__)
            finally:
                if self.owner is not None:
                    self.owner.teardown()

    Owned.__name__ = Owned.__qualname__ = f"Clowdr{base.__name__}"
    return Owned


def owned_fargate() -> type:
    from dask_cloudprovider.aws import FargateCluster

    return _owned(FargateCluster)


def owned_ec2() -> type:
    from dask_cloudprovider.aws import EC2Cluster

    return _owned(EC2Cluster)
