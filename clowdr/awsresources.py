"""The AWS resources of one cloud run: planned, created, found again by tag, and deleted, all by clowdr.

clowdr creates every resource its Dask cluster needs itself (ECS cluster, IAM roles with inline policies, log
group, security group, task definitions) and hands them to dask-cloudprovider, which then creates nothing and
never runs its account-wide cleanup (``skip_cleanup``): nothing of anyone else's is touched, and nothing of ours
carries dask-cloudprovider's ``createdBy`` tag for another user's cleanup to take.

Every resource is tagged ``clowdr:run=<run id>``: the teardown of a run, at its end or on Ctrl-C, SIGTERM or an
error, and ``clowdr cloud-cleanup`` after a killed client, find them by that tag (IAM roles by their path).
The security group admits the Dask ports only from the client's address and from inside the group. The task
role's inline policy lets workers read the input prefix and write the run's prefix, nothing more. No
credential is ever part of a resource: workers get the task role's rotating credentials from ECS.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from clowdr.errors import ClowdrError
from clowdr.storage import split_url

log = logging.getLogger("clowdr.cloud")

RUN_TAG = "clowdr:run"
OWNER_TAG, OWNER = "clowdr:created-by", "clowdr"
ROLE_PATH = "/clowdr/"
DASK_PORTS = (8786, 8787)
TRUST = {"ecs": "ecs-tasks.amazonaws.com", "ec2": "ec2.amazonaws.com"}


class CloudError(ClowdrError):
    """AWS refused or did not finish a step of starting or tearing down a run's resources."""


@dataclass
class Plan:
    """What a run would create: names, tags, policies, rules, task definitions (``--setup`` prints it)."""

    run_id: str
    region: str
    data: str                          # s3:// input prefix (read)
    run_prefix: str                    # s3:// prefix the run writes (provenance, outputs)
    client_cidr: str                   # who may reach the scheduler's ports
    image: str
    kind: str = "fargate"              # fargate | ec2
    worker_cpu: int = 1024
    worker_memory: int = 4096
    scheduler_cpu: int = 1024
    scheduler_memory: int = 4096
    extra_tags: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"clowdr-{self.run_id}"

    @property
    def tags(self) -> dict[str, str]:
        return {**{str(k): str(v) for k, v in self.extra_tags.items()}, RUN_TAG: self.run_id, OWNER_TAG: OWNER}

    @property
    def log_group(self) -> str:
        return f"/clowdr/{self.run_id}"

    def role_name(self, kind: str) -> str:
        return f"{self.name}-{kind}"

    def task_policy(self) -> dict[str, Any]:
        """Read the input prefix, write the run's prefix: nothing more."""
        in_bucket, in_key = split_url(self.data)
        out_bucket, out_key = split_url(self.run_prefix)

        def objects(bucket: str, key: str) -> str:
            return f"arn:aws:s3:::{bucket}/{key}/*" if key else f"arn:aws:s3:::{bucket}/*"

        def prefixes(key: str) -> list[str]:
            return [key, f"{key}/*"] if key else ["*"]

        return {"Version": "2012-10-17", "Statement": [
            {"Sid": "ListInput", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{in_bucket}",
             "Condition": {"StringLike": {"s3:prefix": prefixes(in_key)}}},
            {"Sid": "ReadInput", "Effect": "Allow", "Action": "s3:GetObject", "Resource": objects(in_bucket, in_key)},
            {"Sid": "ListRun", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:ListBucketMultipartUploads"],
             "Resource": f"arn:aws:s3:::{out_bucket}", "Condition": {"StringLike": {"s3:prefix": prefixes(out_key)}}},
            {"Sid": "WriteRun", "Effect": "Allow",
             "Action": ["s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
             "Resource": objects(out_bucket, out_key)},
        ]}

    def execution_policy(self) -> dict[str, Any]:
        """What ECS itself needs to start a task: pull the image, write its logs to the run's log group."""
        return {"Version": "2012-10-17", "Statement": [
            {"Sid": "PullImage", "Effect": "Allow", "Resource": "*",
             "Action": ["ecr:GetAuthorizationToken", "ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer",
                        "ecr:BatchGetImage"]},
            {"Sid": "WriteLogs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": f"arn:aws:logs:{self.region}:*:log-group:{self.log_group}:*"},
        ]}

    def ingress(self, group_id: str) -> list[dict[str, Any]]:
        """The Dask ports from the client's address; anything from inside the group (scheduler <-> workers)."""
        return [
            {"IpProtocol": "tcp", "FromPort": DASK_PORTS[0], "ToPort": DASK_PORTS[1],
             "IpRanges": [{"CidrIp": self.client_cidr, "Description": "clowdr client"}]},
            {"IpProtocol": "tcp", "FromPort": 0, "ToPort": 65535, "UserIdGroupPairs": [{"GroupId": group_id}]},
        ]

    def task_definition(self, role: str, task_role_arn: str, execution_role_arn: str) -> dict[str, Any]:
        """A scheduler or worker task definition (ECS overrides the command at RunTask); no environment at all."""
        cpu, memory = ((self.scheduler_cpu, self.scheduler_memory) if role == "scheduler"
                       else (self.worker_cpu, self.worker_memory))
        return {
            "family": f"{self.name}-{role}", "taskRoleArn": task_role_arn, "executionRoleArn": execution_role_arn,
            "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"] if self.kind == "fargate" else [],
            "cpu": str(cpu), "memory": str(memory), "tags": _aws_tags(self.tags, "key", "value"),
            "containerDefinitions": [{
                "name": f"dask-{role}", "image": self.image, "essential": True, "command": [f"dask-{role}"],
                "cpu": cpu, "memory": memory,
                "logConfiguration": {"logDriver": "awslogs", "options": {
                    "awslogs-region": self.region, "awslogs-group": self.log_group, "awslogs-stream-prefix": role}},
            }],
        }

    def describe(self) -> str:
        """The whole plan as text: what ``--setup`` prints (nothing is created)."""
        fargate = self.kind == "fargate"
        roles = {"task role (workers' S3 access)": (self.role_name("task"), self.task_policy())}
        if fargate:
            roles["execution role (image pull, logs)"] = (self.role_name("execution"), self.execution_policy())
        lines = [f"# AWS resources clowdr would create for run {self.run_id} in {self.region} (none created)",
                 f"tags on every resource: {json.dumps(self.tags)}"]
        lines += ([f"ECS cluster: {self.name}", f"log group: {self.log_group}"] if fargate else
                  [f"instance profile {ROLE_PATH}{self.name} (the task role) for the scheduler and worker instances"])
        for what, (name, policy) in roles.items():
            lines += [f"IAM role {ROLE_PATH}{name}, {what}, inline policy:", json.dumps(policy, indent=2)]
        lines += [f"security group {self.name} in the default VPC (or cloud.vpc), ingress:",
                  json.dumps(self.ingress("<this group>"), indent=2)]
        for role in ("scheduler", "worker") if fargate else ():
            lines += [f"task definition {self.name}-{role}:",
                      json.dumps(self.task_definition(role, "<task role>", "<execution role>"), indent=2)]
        return "\n".join(lines)


def _aws_tags(tags: dict[str, str], key: str = "Key", value: str = "Value") -> list[dict[str, str]]:
    return [{key: k, value: v} for k, v in tags.items()]


@dataclass
class Created:
    """What exists of a run's resources (filled as they are created, or found by tag)."""

    run_id: str
    cluster_arn: str | None = None
    roles: list[str] = field(default_factory=list)
    instance_profile: str | None = None
    log_group: str | None = None
    security_group: str | None = None
    task_definitions: list[str] = field(default_factory=list)
    vpc: str | None = None
    subnets: list[str] = field(default_factory=list)
    role_arns: dict[str, str] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.cluster_arn or self.roles or self.instance_profile or self.log_group or self.security_group
                    or self.task_definitions)


class Resources:
    """Creates a plan's resources (each step named, so a slow one can be told), deletes them, finds them."""

    def __init__(self, clients: Callable[[str], Any], step: Callable[[str], None] = lambda s: None) -> None:
        self.client = clients
        self.step = step

    # -- creating -----------------------------------------------------------------------------------------------
    def create(self, plan: Plan, vpc: str | None = None, subnets: list[str] | None = None,
               created: Created | None = None) -> Created:
        """Everything of ``plan``, recorded in ``created`` as it comes (so a failure can be torn down)."""
        done = created or Created(plan.run_id)
        ecs, iam, ec2, logs = (self.client(s) for s in ("ecs", "iam", "ec2", "logs"))
        fargate = plan.kind == "fargate"
        roles = [("task", plan.task_policy())]
        if fargate:             # EC2 instances need neither an ECS cluster nor ECS's execution role and log group
            self.step("creating the ECS cluster")
            done.cluster_arn = ecs.create_cluster(
                clusterName=plan.name, tags=_aws_tags(plan.tags, "key", "value"),
                capacityProviders=["FARGATE", "FARGATE_SPOT"])["cluster"]["clusterArn"]
            self.step("creating the log group")
            logs.create_log_group(logGroupName=plan.log_group, tags=plan.tags)
            done.log_group = plan.log_group
            roles.insert(0, ("execution", plan.execution_policy()))
        service = "ecs" if fargate else "ec2"
        for kind, policy in roles:
            self.step(f"creating the {kind} role")
            name = plan.role_name(kind)
            trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                              "Principal": {"Service": TRUST[service]}}]}
            arn = iam.create_role(RoleName=name, Path=ROLE_PATH, AssumeRolePolicyDocument=json.dumps(trust),
                                  Description=f"clowdr run {plan.run_id}", Tags=_aws_tags(plan.tags))["Role"]["Arn"]
            done.roles.append(name)
            done.role_arns[kind] = arn
            iam.put_role_policy(RoleName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
        if plan.kind == "ec2":
            self.step("creating the instance profile")
            iam.create_instance_profile(InstanceProfileName=plan.name, Path=ROLE_PATH, Tags=_aws_tags(plan.tags))
            done.instance_profile = plan.name
            iam.add_role_to_instance_profile(InstanceProfileName=plan.name, RoleName=plan.role_name("task"))
        self.step("looking up the VPC and its subnets")
        done.vpc = vpc or _default_vpc(ec2)
        done.subnets = subnets or [s["SubnetId"] for s in ec2.describe_subnets(
            Filters=[{"Name": "vpc-id", "Values": [done.vpc]}])["Subnets"]]
        self.step("creating the security group")
        done.security_group = ec2.create_security_group(
            GroupName=plan.name, Description=f"clowdr run {plan.run_id}: Dask ports from the client only",
            VpcId=done.vpc, TagSpecifications=[{"ResourceType": "security-group", "Tags": _aws_tags(plan.tags)}],
        )["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=done.security_group, IpPermissions=plan.ingress(
            done.security_group))
        if fargate:
            for role in ("scheduler", "worker"):
                self.step(f"registering the {role} task definition")
                definition = plan.task_definition(role, done.role_arns["task"], done.role_arns["execution"])
                done.task_definitions.append(
                    ecs.register_task_definition(**definition)["taskDefinition"]["taskDefinitionArn"])
        return done

    # -- deleting -----------------------------------------------------------------------------------------------
    def delete(self, created: Created, timeout: float) -> None:
        """Delete everything in ``created``: tasks stopped first, the security group retried while the tasks'
        network interfaces drain. Raises CloudError naming what is left once ``timeout`` has passed."""
        deadline = time.monotonic() + timeout
        ecs, iam, ec2, logs = (self.client(s) for s in ("ecs", "iam", "ec2", "logs"))
        if created.cluster_arn:
            self.step("stopping the run's tasks")
            _stop_tasks(ecs, created.cluster_arn)
            self._until(deadline, "waiting for the run's tasks to stop", lambda: not _running_tasks(
                ecs, created.cluster_arn))
        _terminate_instances(ec2, created.run_id, self, deadline)
        for arn in list(created.task_definitions):
            self.step("deregistering task definitions")
            _ignore_missing(lambda: ecs.deregister_task_definition(taskDefinition=arn))
            _ignore_missing(lambda: ecs.delete_task_definitions(taskDefinitions=[arn]))
            created.task_definitions.remove(arn)
        if created.cluster_arn:
            self.step("deleting the ECS cluster")
            _ignore_missing(lambda: ecs.delete_cluster(cluster=created.cluster_arn))
            created.cluster_arn = None
        if created.instance_profile:
            self.step("deleting the instance profile")
            profile = created.instance_profile
            for role in created.roles:
                _ignore_missing(lambda: iam.remove_role_from_instance_profile(InstanceProfileName=profile,
                                                                              RoleName=role))
            _ignore_missing(lambda: iam.delete_instance_profile(InstanceProfileName=profile))
            created.instance_profile = None
        for role in list(created.roles):
            self.step(f"deleting the role {role}")
            policies = _ignore_missing(lambda: iam.list_role_policies(RoleName=role)) or {}
            for policy in policies.get("PolicyNames", []):
                iam.delete_role_policy(RoleName=role, PolicyName=policy)
            _ignore_missing(lambda: iam.delete_role(RoleName=role))
            created.roles.remove(role)
        if created.log_group:
            self.step("deleting the log group")
            _ignore_missing(lambda: logs.delete_log_group(logGroupName=created.log_group))
            created.log_group = None
        if created.security_group:
            group = created.security_group
            self._until(deadline, f"deleting the security group {group} (its network interfaces are draining)",
                        lambda: _delete_group(ec2, group))
            created.security_group = None

    def _until(self, deadline: float, step: str, done: Callable[[], bool]) -> None:
        self.step(step)
        pause = 1.0
        while not done():
            if time.monotonic() > deadline:
                raise CloudError(f"teardown timed out while {step}")
            time.sleep(pause)
            pause = min(pause * 2, 15)

    # -- finding ------------------------------------------------------------------------------------------------
    def find(self, run_id: str | None = None) -> list[Created]:
        """Every run's leftovers (or one run's), found by the run tag."""
        runs: dict[str, Created] = {}

        def of(tags: dict[str, str]) -> Created | None:
            rid = tags.get(RUN_TAG)
            if tags.get(OWNER_TAG) != OWNER or not rid or (run_id and rid != run_id):
                return None
            return runs.setdefault(rid, Created(rid))

        ecs, iam, ec2, logs = (self.client(s) for s in ("ecs", "iam", "ec2", "logs"))
        arns = _pages(ecs, "list_clusters", "clusterArns")
        for cluster in ecs.describe_clusters(clusters=arns, include=["TAGS"])["clusters"] if arns else []:
            tags = {t["key"]: t["value"] for t in cluster.get("tags", [])}
            if cluster.get("status") != "INACTIVE" and (found := of(tags)) is not None:
                found.cluster_arn = cluster["clusterArn"]
        for arn in _pages(ecs, "list_task_definitions", "taskDefinitionArns"):     # families clowdr-<run id>-*
            if not arn.rpartition("/")[2].startswith("clowdr-"):
                continue
            tags = {t["key"]: t["value"] for t in ecs.list_tags_for_resource(resourceArn=arn).get("tags", [])}
            if (found := of(tags)) is not None:
                found.task_definitions.append(arn)
        for role in _pages(iam, "list_roles", "Roles", PathPrefix=ROLE_PATH):
            tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=role["RoleName"]).get("Tags", [])}
            if (found := of(tags)) is not None:
                found.roles.append(role["RoleName"])
        for profile in _pages(iam, "list_instance_profiles", "InstanceProfiles", PathPrefix=ROLE_PATH):
            tags = {t["Key"]: t["Value"] for t in iam.get_instance_profile(
                InstanceProfileName=profile["InstanceProfileName"])["InstanceProfile"].get("Tags", [])}
            if (found := of(tags)) is not None:
                found.instance_profile = profile["InstanceProfileName"]
        for group in ec2.describe_security_groups(Filters=[{"Name": f"tag:{OWNER_TAG}", "Values": [OWNER]}])[
                "SecurityGroups"]:
            if (found := of({t["Key"]: t["Value"] for t in group.get("Tags", [])})) is not None:
                found.security_group = group["GroupId"]
        for group in _pages(logs, "describe_log_groups", "logGroups", logGroupNamePrefix="/clowdr/"):
            tags = logs.list_tags_log_group(logGroupName=group["logGroupName"]).get("tags", {})
            if (found := of(tags)) is not None:
                found.log_group = group["logGroupName"]
        for reservation in ec2.describe_instances(Filters=[
                {"Name": f"tag:{OWNER_TAG}", "Values": [OWNER]},
                {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])[
                "Reservations"]:
            for instance in reservation["Instances"]:
                of({t["Key"]: t["Value"] for t in instance.get("Tags", [])})
        return sorted(runs.values(), key=lambda c: c.run_id)


def _pages(client: Any, operation: str, key: str, **kwargs: Any) -> list[Any]:
    return [item for page in client.get_paginator(operation).paginate(**kwargs) for item in page.get(key, [])]


def _default_vpc(ec2: Any) -> str:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise CloudError("the region has no default VPC: set cloud.vpc and cloud.subnets")
    return str(vpcs[0]["VpcId"])


def _stop_tasks(ecs: Any, cluster: str) -> None:
    for arn in _running_tasks(ecs, cluster):
        _ignore_missing(lambda: ecs.stop_task(cluster=cluster, task=arn, reason="clowdr: run over"))


def _running_tasks(ecs: Any, cluster: str) -> list[str]:
    try:
        arns = _pages(ecs, "list_tasks", "taskArns", cluster=cluster)
        if not arns:
            return []
        tasks = ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
    except Exception as exc:  # noqa: BLE001
        if _missing(exc):
            return []
        raise
    return [t["taskArn"] for t in tasks if t.get("lastStatus") != "STOPPED"]


def _terminate_instances(ec2: Any, run_id: str, resources: Resources, deadline: float) -> None:
    """EC2 workers and scheduler (EC2Cluster) of the run, found by tag, terminated and waited for."""
    def alive() -> list[str]:
        found = ec2.describe_instances(Filters=[{"Name": f"tag:{RUN_TAG}", "Values": [run_id]}, {
            "Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped", "shutting-down"]}])
        return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]

    ids = alive()
    if ids:
        resources.step("terminating the run's instances")
        ec2.terminate_instances(InstanceIds=ids)
        resources._until(deadline, "waiting for the run's instances to terminate", lambda: not alive())


def _delete_group(ec2: Any, group: str) -> bool:
    try:
        ec2.delete_security_group(GroupId=group)
    except Exception as exc:  # noqa: BLE001
        if _missing(exc):
            return True
        if _code(exc) == "DependencyViolation":
            return False
        raise
    return True


def _code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _missing(exc: BaseException) -> bool:
    code = _code(exc)
    return ("NotFound" in code or code in ("NoSuchEntity", "ResourceNotFoundException", "ClusterNotFoundException",
                                           "InvalidGroup.NotFound") or "not found" in str(code).lower())


def _ignore_missing(call: Callable[[], Any]) -> Any:
    """A delete of what is already gone (a second teardown, a cleanup racing one) is not an error."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001
        if _missing(exc) or type(exc).__name__ in ("ClusterNotFoundException", "NoSuchEntityException"):
            return None
        raise
