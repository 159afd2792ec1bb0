"""What ``clowdr local`` accepts, declared once: the CLI's options, the Python API's keywords and the engine's
request are all this dataclass (each field carries its flags and help).

Light on purpose (no Dask, no Boutiques): the CLI builds its parser from it.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from typing import Any

from clowdr.backends import SCHEDULERS
from clowdr.backends.jobqueue import parse_clusterargs
from clowdr.errors import InputError


def option(*flags: str, help: str, default: Any = None, **argparse: Any) -> Any:
    """A field that is also a CLI option (no flags: a positional argument)."""
    metadata = {"flags": flags, "help": help, "argparse": argparse}
    if argparse.get("action") == "append":
        return field(default_factory=list, metadata=metadata)
    return field(default=default, metadata=metadata)


def positional(help: str) -> Any:
    return field(metadata={"flags": (), "help": help, "argparse": {}})


@dataclass
class LocalRequest:
    """Everything ``clowdr local`` accepts (the same names as the original tool's options)."""

    descriptor: str = positional("Local path to the Boutiques descriptor of the tool to run "
                                 "(https://boutiques.github.io).")
    invocation: str = positional("Local path to a Boutiques invocation, or a directory of invocations (one task "
                                 "each, in sorted file-name order). With --bids, one invocation.")
    provdir: str = positional("Directory for clowdr's provenance records (must exist).")
    verbose: bool = option("--verbose", "-V", action="store_true", default=False,
                           help="Toggles verbose output statements.")
    dev: bool = option("--dev", "-d", action="store_true", default=False,
                       help="Launch only the first task (or first group).")
    workdir: str | None = option("--workdir", "-w",
                                 help="Working directory of every task (default: one directory per task in the "
                                      "run, or worker scratch space where workers share no filesystem).")
    volumes: list[str] = option("--volumes", "-v", action="append",
                                help="Volume to mount in the tool's container, as in 'docker -v': "
                                     "/host/path:/container/path.")
    groupby: int = option("--groupby", "-g", type=int, default=1,
                          help="Run tasks in groups of this many, one after the other on one worker.")
    sweep: list[str] = option("--sweep", action="append", metavar="ID",
                              help="Parameter sweep over input ID: the invocation holds a list of values for it (a "
                                   "list of lists for list inputs), one task per value. Repeat for a Cartesian "
                                   "product. Not for directories of invocations.")
    bids: bool = option("--bids", "-b", action="store_true", default=False,
                        help="The tool is a BIDS app: one task per participant_label (and session_label).")
    setup: bool = option("--setup", action="store_true", default=False,
                         help="Write the run's metadata, launch nothing, print the run directory.")
    cluster: str | None = option("--cluster", "-c", choices=list(SCHEDULERS),
                                 help="Submit to this scheduler instead of running on this machine.")
    clusterargs: str | None = option("--clusterargs", "-a",
                                     help="Comma-separated key:value scheduler settings, split on the first ':' "
                                          "(e.g. time:4:00,mem:2048,account:ABC).")
    jobname: str | None = option("--jobname", "-n", help="Name of the jobs submitted to the cluster.")
    simg: str | None = option("--simg", "-s",
                              help="Singularity image file to use for a tool whose descriptor names a container.")
    user: bool = option("--user", "-u", action="store_true", default=False,
                        help="Run the Docker container as the current user (docker run -u uid:gid).")
    rerun: str | None = option("--rerun", "-R", choices=["all", "failed", "incomplete"],
                               help="Rerun tasks of an earlier run (needs --run_id): all, failed (non-zero exit), "
                                    "or incomplete (no summary). Earlier attempts are kept.")
    run_id: str | None = option("--run_id",
                                help="The run to rerun: its directory name in provdir (YYYY-mm-dd_HH-MM-SS-XXXXXXXX).")
    s3: str | None = option("--s3", help="Amazon S3 location of remote data: s3://{bucket}/{path}.")
    retries: int | None = option("--retries", type=int, metavar="N",
                                 help="Run a task again up to N times after a failed attempt of a class "
                                      "retries.classes lists (default: retries.max in the config).")
    command: list[str] = field(default_factory=lambda: list(sys.argv))   # how it was launched, for run.json

    def check(self) -> None:
        """Option faults that need no file: one line each, before anything is read or written."""
        check_volumes(self.volumes)
        check_sweep(self.sweep)
        if self.retries is not None and self.retries < 0:
            raise InputError("--retries", f"must be 0 or more, got {self.retries}")
        if self.groupby is not None and self.groupby < 1:
            raise InputError("--groupby", f"must be a positive number of tasks, got {self.groupby}")
        if self.rerun and not self.run_id:
            raise InputError("--rerun", "needs --run_id, the run directory to rerun (YYYY-mm-dd_HH-MM-SS-XXXXXXXX)")
        if self.run_id and not self.rerun:
            raise InputError("--run_id", "only goes with --rerun all|failed|incomplete")
        parse_clusterargs(self.clusterargs)    # well-formed pairs even where no scheduler reads them
        if self.s3:
            from clowdr.staging import check_url

            check_url(self.s3)

    def recorded_options(self) -> dict[str, Any]:
        """The options as run.json records them (how it was launched is recorded apart; live objects never)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "command" and f.metadata.get("record", True)}

    def check_data(self) -> None:
        """The --s3 location can be listed (with the standard credential chain)."""
        from clowdr.staging import check_source

        check_source(self.s3 or "")

    def cloud_context(self) -> Any:
        """What a cloud back-end needs (nothing: this is a local request)."""
        return None

    def run_prefix(self, run_id: str) -> str | None:
        """The s3:// prefix of the run's records and outputs (None: they are local)."""
        return None

    @classmethod
    def of(cls, options: dict[str, Any]) -> "LocalRequest":
        """A request from CLI or API keywords: unset lists become empty, None keeps each field's default."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise TypeError(f"clowdr local: unknown option(s) {', '.join(unknown)}")
        values = {}
        for name, value in options.items():
            if value is None and known[name].default is not None:     # a list, a flag: keep its default
                continue
            values[name] = list(value) if isinstance(value, (list, tuple)) else value
        return cls(**values)


def cli_options() -> list[tuple[tuple[str, ...], str, str, dict[str, Any]]]:
    """(flags, name, help, argparse keywords) of every option, in declaration order, for the parser."""
    return [(f.metadata["flags"], f.name, f.metadata["help"], f.metadata["argparse"])
            for f in fields(LocalRequest) if "flags" in f.metadata]


def check_sweep(sweep: list[str]) -> None:
    """Each input is swept once: a repeated id would multiply the product by itself (every value run N times)."""
    seen: set[str] = set()
    for input_id in sweep:
        if input_id in seen:
            raise InputError("--sweep", f"'{input_id}' is given twice: each input is swept once")
        seen.add(input_id)


def check_volumes(volumes: list[str]) -> None:
    for volume in volumes:
        source, _, target = volume.partition(":")
        if not source or not target:
            raise InputError("--volumes", f"'{volume}' is not of the form /host/path:/container/path")


@dataclass
class CloudRequest(LocalRequest):
    """``clowdr cloud``: a local request plus where the data is, the AWS credentials and region; the cluster
    is the cloud back-end. ``provdir`` may be ``s3://`` (records are kept in a local mirror and uploaded)."""

    cloud: str = "aws"
    credentials: str | None = None
    region: str | None = None
    remote_provdir: str | None = None           # the s3:// PROVDIR, when provdir is its local mirror
    stop: Any = field(default=None, metadata={"record": False})     # the launch's stop request (start-up too)
    aws_session: Any = field(default=None, repr=False, metadata={"record": False})   # once loaded

    def __post_init__(self) -> None:
        self.cluster = "cloud"

    def check(self) -> None:
        super().check()
        if not self.s3:
            raise InputError("s3", "clowdr cloud needs the S3 location of the data (s3://bucket/prefix)")
        if self.remote_provdir:
            from clowdr.staging import check_url

            check_url(self.remote_provdir, "provdir")
        self.session()

    def session(self) -> Any:
        """The client's AWS session from the credentials file (loaded once; InputError for a bad file)."""
        if self.aws_session is None:
            from clowdr import config, credentials

            self.aws_session = credentials.load(self.credentials, self.region or config.get("cloud.region"))
        return self.aws_session

    def check_data(self) -> None:
        from clowdr.staging import check_source

        check_source(self.s3 or "", self.session().s3fs())
        if self.remote_provdir:
            check_source(self.remote_provdir, self.session().s3fs(), empty_ok=True)

    def output_prefix(self) -> str:
        """Where the run's outputs (and, with an s3:// PROVDIR, its records) go: PROVDIR, else
        ``cloud.outputs``, else ``clowdr-runs/`` in the data's bucket."""
        from clowdr import config
        from clowdr.storage import split_url

        if self.remote_provdir:
            return self.remote_provdir.rstrip("/")
        configured = config.get("cloud.outputs")
        return str(configured).rstrip("/") if configured else f"s3://{split_url(self.s3 or '')[0]}/clowdr-runs"

    def run_prefix(self, run_id: str) -> str | None:
        return f"{self.output_prefix()}/{run_id}"

    def cloud_context(self) -> Any:
        from clowdr.backends.cloud import CloudContext

        session = self.session()
        return CloudContext(session, self.s3 or "", self.output_prefix(), session.region or "us-east-1", self.stop)
