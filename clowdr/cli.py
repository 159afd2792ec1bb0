"""The command line: the original tool's four modes, options, short flags and choices.

This module imports nothing heavy (no Dask, no Boutiques, no dashboard): ``clowdr --help`` stays fast
and keeps working whatever happens to the dashboard stack.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

REGIONS = ["us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "eu-central-1", "eu-west-1",
           "eu-west-2", "eu-west-3", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-southeast-1",
           "ap-southeast-2", "ap-south-1", "sa-east-1"]


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with status 2 and one line, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", "-V", action="store_true", help="Toggles verbose output statements.")


def _descriptor_and_invocation(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("descriptor", help="Local path to the Boutiques descriptor of the tool to run "
                                           "(https://boutiques.github.io).")
    parser.add_argument("invocation", help="Local path to a Boutiques invocation, or a directory of invocations "
                                           "(one task each, in sorted file-name order). With --bids, one invocation.")


def _sweep_and_bids(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sweep", type=str, action="append", metavar="ID",
                        help="Parameter sweep over input ID: the invocation holds a list of values for it (a list of "
                             "lists for list inputs), one task per value. Repeat for a Cartesian product. "
                             "Not for directories of invocations.")
    parser.add_argument("--bids", "-b", action="store_true",
                        help="The tool is a BIDS app: one task per participant_label (and session_label).")


def makeparser() -> argparse.ArgumentParser:
    """The parser of the original tool, option for option."""
    parser = _Parser(prog="clowdr", description="Scalable deployment and provenance-rich wrapper for Boutiques "
                                                "tools locally, on clusters, and in the cloud.")
    modes = parser.add_subparsers(dest="mode", metavar="{local,cloud,share,task}", parser_class=_Parser,
                                  help="local: run on this machine or a cluster; cloud: run on AWS; "
                                       "share: explore provenance records; task: run task files by hand.")

    local = modes.add_parser("local", help="Run tasks on this machine (Dask LocalCluster) or a cluster.",
                             description="Run a Boutiques tool over one or many invocations with full provenance.")
    _descriptor_and_invocation(local)
    local.add_argument("provdir", help="Directory for clowdr's provenance records (must exist; reachable from "
                                       "every execution node).")
    _common(local)
    local.add_argument("--dev", "-d", action="store_true", help="Launch only the first task (or first group).")
    local.add_argument("--workdir", "-w", action="store",
                       help="Working directory of every task (default: one directory per task in the run).")
    local.add_argument("--volumes", "-v", action="append",
                       help="Volume to mount in the tool's container, as in 'docker -v': /host/path:/container/path.")
    local.add_argument("--groupby", "-g", type=int, action="store",
                       help="Run tasks in groups of this many, one after the other on one worker.")
    _sweep_and_bids(local)
    local.add_argument("--setup", action="store_true",
                       help="Write the run's metadata, launch nothing, print the run directory.")
    local.add_argument("--cluster", "-c", choices=["slurm"], action="store",
                       help="Submit to this scheduler instead of running on this machine.")
    local.add_argument("--clusterargs", "-a", action="store",
                       help="Comma-separated key:value scheduler settings, split on the first ':' "
                            "(e.g. time:4:00,mem:2048,account:ABC).")
    local.add_argument("--jobname", "-n", action="store", help="Name of the jobs submitted to the cluster.")
    local.add_argument("--simg", "-s", action="store",
                       help="Singularity image file to use for a tool whose descriptor names a container.")
    local.add_argument("--user", "-u", action="store_true",
                       help="Run the Docker container as the current user (docker run -u uid:gid).")
    local.add_argument("--rerun", "-R", choices=["all", "failed", "incomplete"], action="store",
                       help="Rerun tasks of an earlier run (needs --run_id): all, failed (non-zero exit), or "
                            "incomplete (no summary). Earlier attempts are kept.")
    local.add_argument("--run_id", action="store",
                       help="The run to rerun: its directory name in provdir (YYYY-mm-dd_HH-MM-SS-XXXXXXXX).")
    local.add_argument("--s3", action="store", help="Amazon S3 location of remote data: s3://{bucket}/{path}.")
    local.set_defaults(func=_run_local)

    cloud = modes.add_parser("cloud", help="Run tasks on Amazon Web Services.",
                             description="Run a Boutiques tool over invocations on AWS.")
    _descriptor_and_invocation(cloud)
    cloud.add_argument("provdir", help="S3 location for clowdr's provenance records: s3://{bucket}/{path}.")
    cloud.add_argument("s3", help="S3 location of the input data: s3://{bucket}/{path}.")
    cloud.add_argument("cloud", choices=["aws"], help="Which cloud to deploy on.")
    cloud.add_argument("credentials", help="File of AWS credentials with access to the S3 locations.")
    _common(cloud)
    cloud.add_argument("--dev", "-d", action="store_true", help="Launch only the first task.")
    cloud.add_argument("--region", "-r", choices=REGIONS, default="us-east-1", help="AWS region.")
    _sweep_and_bids(cloud)
    cloud.set_defaults(func=_run_cloud)

    share = modes.add_parser("share", help="Explore and share provenance records in a web dashboard.",
                             description="Serve a dashboard of the runs in a provenance directory.")
    share.add_argument("provdir", help="Local or S3 provenance directory.")
    share.add_argument("--debug", "-d", action="store_true", help="Debug mode for the web server (verbose logs).")
    _common(share)
    share.add_argument("--host", default="127.0.0.1",
                       help="Address to listen on (default 127.0.0.1: only this machine can connect).")
    share.add_argument("--port", type=_port, default=0, help="Port to listen on (default: a free port).")
    share.add_argument("--export", metavar="FILE.html", action="store",
                       help="Write the dashboard as one self-contained HTML file instead of serving it.")
    share.set_defaults(func=_run_share)

    task = modes.add_parser("task", help="Run task files (task-N.json) on this machine.",
                            description="Run clowdr task files by hand, with full provenance.")
    task.add_argument("tasklist", nargs="+", help="One or more task-N.json files.")
    _common(task)
    task.add_argument("--provdir", "-p", action="store", help="Where to write the provenance records.")
    task.add_argument("--local", "-l", action="store_true", help="Data and provenance are local (no S3 transfer).")
    task.add_argument("--workdir", "-w", action="store", help="Working directory of the tasks.")
    task.add_argument("--volumes", "-v", action="append", help="Volume to mount in the tool's container.")
    task.set_defaults(func=_run_task)
    return parser


def _run_local(args: argparse.Namespace) -> int:
    from clowdr.engine import LocalRequest, run_local

    options = {k: v for k, v in vars(args).items() if k not in ("mode", "func")}
    options["volumes"] = options["volumes"] or []
    options["sweep"] = options["sweep"] or []
    outcome = run_local(LocalRequest(**options))
    if outcome.job_script:
        print(outcome.job_script)
    print(outcome.run.meta)
    return outcome.exit_status


def _run_cloud(args: argparse.Namespace) -> int:
    from clowdr import driver

    options = {k: v for k, v in vars(args).items() if k not in ("mode", "func")}
    return driver.cloud(**options)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {port}")
    return port


def _run_share(args: argparse.Namespace) -> int:
    from clowdr import driver

    def announce(url: str) -> None:
        print(f"clowdr share: serving {args.provdir} at {url} (Ctrl-C to stop)", flush=True)

    try:
        status = driver.share(args.provdir, debug=args.debug, verbose=args.verbose, host=args.host, port=args.port,
                              export=args.export, announce=announce)
    except KeyboardInterrupt:
        return 0
    if args.export:
        print(args.export)
    return status


def _run_task(args: argparse.Namespace) -> int:
    from clowdr import driver

    options = {k: v for k, v in vars(args).items() if k not in ("mode", "func", "tasklist")}
    return driver.runtask(args.tasklist, **options)


def main(args: list[str] | None = None) -> int:
    """Parse, run, and turn clowdr's errors into one line on stderr and an exit status."""
    parser = makeparser()
    argv = sys.argv[1:] if args is None else args
    if not argv:
        parser.print_help()
        return 0
    namespace = parser.parse_args(argv)
    if namespace.mode is None:
        parser.print_help()
        return 2
    from clowdr.progress import ProgressLogHandler

    handler = ProgressLogHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    logging.getLogger("clowdr").setLevel(logging.INFO if getattr(namespace, "verbose", False) else logging.WARNING)
    func: Callable[[argparse.Namespace], int] = namespace.func
    from clowdr.errors import ClowdrError

    try:
        return func(namespace)
    except ClowdrError as exc:
        one_line = str(exc).replace("\r", "\\r").replace("\n", "\\n")   # user text never breaks the line
        print(f"clowdr {namespace.mode}: {one_line}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("clowdr: interrupted; tasks without a summary can be run again with --rerun incomplete",
              file=sys.stderr)
        return 130


def main_exit() -> None:
    """Console-script entry point: the exit status of ``main``."""
    sys.exit(main())
