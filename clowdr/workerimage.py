"""The ``docker build`` command of a worker image for a tool (``docker/Dockerfile.worker``), with this client's
own Python, dask, distributed and clowdr versions: the versions a cloud worker checks as it starts.

    python -m clowdr.workerimage TOOL_IMAGE TAG
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile.worker"


def build_args(tool_image: str) -> dict[str, str]:
    from clowdr.backends.cloud import client_versions

    versions = client_versions()
    return {"TOOL_IMAGE": tool_image, "PYTHON_VERSION": versions["python"], "DASK_VERSION": versions["dask"],
            "DISTRIBUTED_VERSION": versions["distributed"], "CLOWDR_VERSION": versions["clowdr"]}


def build_command(tool_image: str, tag: str) -> list[str]:
    command = ["docker", "build", "-f", str(DOCKERFILE), "-t", tag]
    for name, value in build_args(tool_image).items():
        command += ["--build-arg", f"{name}={value}"]
    return [*command, str(ROOT)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m clowdr.workerimage TOOL_IMAGE TAG", file=sys.stderr)
        return 2
    print(shlex.join(build_command(*args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
