"""The command line: the original tool's four modes, options, short flags and choices.

This module imports nothing heavy (no Dask, no Boutiques, no dashboard): ``clowdr --help`` stays fast
and keeps working whatever happens to the dashboard stack.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from clowdr import __version__
from clowdr.errors import LaunchStopped
from clowdr.report import LaunchReport, first_failures
from clowdr.request import LocalRequest, cli_options

REGIONS = ["us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "eu-central-1", "eu-west-1",
           "eu-west-2", "eu-west-3", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-southeast-1",
           "ap-southeast-2", "ap-south-1", "sa-east-1"]


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with status 2 and one line, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


class _Versions(argparse.Action):
    """``--version``: clowdr's version and its engine's, as ``run.json`` records them (from the installed
    packages' metadata: nothing is imported)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from clowdr.provenance import versions

        found = versions()
        print(f"clowdr {__version__}; engine: dask {found['dask']}, distributed {found['distributed']}; "
              f"boutiques {found['boutiques']}; python {found['python']}")
        parser.exit(0)


def _add(parser: argparse.ArgumentParser, flags: tuple[str, ...], name: str, help: str, **kwargs: object) -> None:
    if flags:
        parser.add_argument(*flags, dest=name, help=help, **kwargs)  # type: ignore[arg-type]
    else:
        parser.add_argument(name, help=help, **kwargs)  # type: ignore[arg-type]


def _from_request(parser: argparse.ArgumentParser, names: tuple[str, ...] | None = None) -> None:
    """Options declared once, in ``clowdr.request.LocalRequest``: all of them, or those ``names``."""
    for flags, name, help, kwargs in cli_options():
        if names is None or name in names:
            _add(parser, flags, name, help, **kwargs)


def makeparser() -> argparse.ArgumentParser:
    """The parser of the original tool, option for option."""
    parser = _Parser(prog="clowdr", description="Scalable deployment and provenance-rich wrapper for Boutiques "
                                                "tools locally, on clusters, and in the cloud.")
    parser.add_argument("--version", action=_Versions, nargs=0, default=argparse.SUPPRESS,
                        help="show clowdr's and its engine's versions and exit")
    modes = parser.add_subparsers(dest="mode", metavar="{local,cloud,share,task,cloud-cleanup}", parser_class=_Parser,
                                  help="local: run on this machine or a cluster; cloud: run on AWS; "
                                       "share: explore provenance records; task: run task files by hand; "
                                       "cloud-cleanup: delete what a killed cloud run left on AWS.")

    local = modes.add_parser("local", help="Run tasks on this machine (Dask LocalCluster) or a cluster.",
                             description="Run a Boutiques tool over one or many invocations with full provenance.")
    _from_request(local)
    local.set_defaults(func=_run_local)

    cloud = modes.add_parser("cloud", help="Run tasks on Amazon Web Services.",
                             description="Run a Boutiques tool over invocations on AWS.")
    _from_request(cloud, ("descriptor", "invocation"))
    cloud.add_argument("provdir", help="S3 location for clowdr's provenance records: s3://{bucket}/{path}.")
    cloud.add_argument("s3", help="S3 location of the input data: s3://{bucket}/{path}.")
    cloud.add_argument("cloud", choices=["aws"], help="Which cloud to deploy on.")
    cloud.add_argument("credentials", help="File of AWS credentials with access to the S3 locations.")
    _from_request(cloud, ("verbose", "dev"))
    cloud.add_argument("--region", "-r", choices=REGIONS, default="us-east-1", help="AWS region.")
    _from_request(cloud, ("sweep", "bids", "setup"))
    cloud.set_defaults(func=_run_cloud)

    cleanup = modes.add_parser("cloud-cleanup", help="Delete the AWS resources of cloud runs a killed client left.",
                               description="Find AWS resources by their clowdr:run tag and delete them.")
    cleanup.add_argument("credentials", nargs="?", help="File of AWS credentials (default: the standard chain).")
    cleanup.add_argument("--region", "-r", choices=REGIONS, help="AWS region (default: cloud.region).")
    cleanup.add_argument("--run_id", help="Only this run's resources (default: every clowdr run's).")
    cleanup.add_argument("--dry-run", action="store_true", help="Only list what would be deleted.")
    cleanup.set_defaults(func=_run_cleanup)

    share = modes.add_parser("share", help="Explore and share provenance records in a web dashboard.",
                             description="Serve a dashboard of the runs in a provenance directory.")
    share.add_argument("provdir", help="Local or S3 provenance directory.")
    share.add_argument("--debug", "-d", action="store_true", help="Debug mode for the web server (verbose logs).")
    _from_request(share, ("verbose",))
    share.add_argument("--host", default="127.0.0.1",
                       help="Address to listen on (default 127.0.0.1: only this machine can connect).")
    share.add_argument("--port", type=_port, default=0, help="Port to listen on (default: a free port).")
    share.add_argument("--export", metavar="FILE.html", action="store",
                       help="Write the dashboard as one self-contained HTML file instead of serving it.")
    share.set_defaults(func=_run_share)

    task = modes.add_parser("task", help="Run task files (task-N.json) on this machine.",
                            description="Run clowdr task files by hand, with full provenance.")
    task.add_argument("tasklist", nargs="+", help="One or more task-N.json files.")
    _from_request(task, ("verbose",))
    task.add_argument("--provdir", "-p", action="store", help="Where to write the provenance records.")
    task.add_argument("--local", "-l", action="store_true", help="Data and provenance are local (no S3 transfer).")
    _from_request(task, ("workdir", "volumes"))
    task.set_defaults(func=_run_task)
    return parser


def _options(args: argparse.Namespace, *leave: str) -> dict[str, object]:
    return {k: v for k, v in vars(args).items() if k not in ("mode", "func", *leave)}


def _run_local(args: argparse.Namespace) -> int:
    from clowdr.engine import run_local

    return _launch(LocalRequest.of(_options(args)), run_local)


def _run_cloud(args: argparse.Namespace) -> int:
    from clowdr.cloudrun import cloud_request, run_cloud

    return _launch(cloud_request(_options(args)), run_cloud)


def _run_cleanup(args: argparse.Namespace) -> int:
    from clowdr.cloudrun import cleanup

    for line in cleanup(args.credentials, args.region, args.run_id, args.dry_run):
        print(one_line(("would delete " if args.dry_run else "deleted ") + line))
    return 0


def _launch(request: LocalRequest, run: Callable[..., object]) -> int:
    from clowdr.errors import RecordError
    from clowdr.stopping import stop_on_signals

    try:
        outcome: Any = run(request, stop_on_signals())
    except (LaunchStopped, RecordError) as stopped:
        print(one_line(_stopped_line(request, stopped)), file=sys.stderr)
        if stopped.run_id:
            print(Path(request.provdir).resolve() / stopped.run_id / "clowdr")
        return stopped.exit_status
    if outcome.job_script:
        print(outcome.job_script)
    rerun = ("clowdr", "local", request.descriptor, request.invocation, request.provdir, "--rerun", "failed",
             "--run_id", outcome.run.run_id)
    shown = first_failures(outcome.run, outcome.run.read_run()["launches"][-1]["tasks"]) if outcome.failed else []
    _report(LaunchReport(outcome.run.run_id, outcome.succeeded, outcome.failed, outcome.failures or {}, shown, rerun,
                         setup_only=request.setup))
    print(outcome.run.meta)
    return outcome.exit_status


def _report(report: LaunchReport) -> None:
    """The end of a launch on stderr, terminal or not."""
    sys.stderr.write("".join(one_line(line) + "\n" for line in report.lines()))
    sys.stderr.flush()


def _stopped_line(request: LocalRequest, stopped: Exception) -> str:
    """One line: what stopped the launch, the run, and the command that runs what is left."""
    import shlex
    import signal

    number = getattr(stopped, "signal_number", None)
    run_id = getattr(stopped, "run_id", "")
    if isinstance(stopped, LaunchStopped):
        what = "clowdr: interrupted" + (f" by {signal.Signals(number).name}" if number else "")
    else:
        what = f"clowdr local: {stopped}"
    if not run_id:
        return what + ("" if not isinstance(stopped, LaunchStopped) else " before anything was written")
    if request.cluster == "cloud":       # clowdr cloud has no --rerun: the run's tasks are named, not a command
        return f"{what}; run {run_id}: {stopped}"
    again = " ".join(shlex.quote(str(a)) for a in ("clowdr", "local", request.descriptor, request.invocation,
                                                     request.provdir, "--rerun", "incomplete", "--run_id", run_id))
    if isinstance(stopped, LaunchStopped):
        return f"{what}; run {run_id}: {stopped}; to run them: {again}"
    return f"{what}; run {run_id}: tasks without a summary can be run again, once there is room, with: {again}"


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {port}")
    return port


def _run_share(args: argparse.Namespace) -> int:
    from clowdr.share.serve import share

    def announce(url: str) -> None:
        print(f"clowdr share: serving {args.provdir} at {url} (Ctrl-C to stop)", flush=True)

    try:
        status = share(args.provdir, debug=args.debug, host=args.host, port=args.port, export=args.export,
                       announce=announce)
    except KeyboardInterrupt:
        return 0
    if args.export:
        print(args.export)
    return status


def _run_task(args: argparse.Namespace) -> int:
    from clowdr.handrun import run_task_files

    def announce(line: str) -> None:
        print(one_line(f"clowdr task: {line}"), file=sys.stderr, flush=True)

    done = run_task_files(args.tasklist, provdir=args.provdir, workdir=args.workdir, volumes=args.volumes,
                          command=list(sys.argv), announce=announce)
    rerun = ("clowdr", "task", *done.failed_files) if done.failed else None
    _report(LaunchReport(done.run.run_id, done.succeeded, done.failed, done.failures, done.failed_tasks, rerun))
    print(done.run.meta)
    return done.exit_status


def one_line(text: str) -> str:
    """User text (a key, a path) as it is, except what would break or hide in the line: control characters, line
    and paragraph separators and lone surrogates are written as escapes (\\n, \\x00, \\u2028, \\ud800)."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


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
    from clowdr.lean import skip_unused_imports

    skip_unused_imports()
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
        print(f"clowdr {namespace.mode}: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("clowdr: interrupted; tasks without a summary can be run again with --rerun incomplete",
              file=sys.stderr)
        return 130


def main_exit() -> None:
    """Console-script entry point (and ``python -m clowdr``): the exit status of ``main``.

    Once ``main`` is over every record is on disk and closed: the exit handlers run, the streams are flushed,
    and the process ends without the interpreter's teardown of Dask's many modules and objects (~0.4 s of a
    one-task launch).
    """
    import atexit
    import os

    from clowdr.lean import parse_yaml_in_c, skip_unused_imports

    skip_unused_imports(launch=sys.argv[1:2] in (["local"], ["cloud"], ["task"]))
    parse_yaml_in_c()
    status = main()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            status = status or 1
    os._exit(status)
