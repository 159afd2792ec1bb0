"""Command lines with Boutiques' exact semantics, without Boutiques' per-launch costs.

The tool's command line comes from Boutiques' own substitution code (the code behind
``bosh exec simulate``), driven once per invocation on a prebuilt executor: no re-validation, no
``os.chdir``, no ``os.environ`` writes, no 0.5 s sleep. Container commands are built the way
``bosh exec launch`` builds them, with the working directory, environment and mounts made explicit.
"""
from __future__ import annotations

import glob
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from boutiques.localExec import LocalExecutor, addDefaultValues

from clowdr.errors import ClowdrError


class TaskSetupError(ClowdrError):
    """The task could not be started (missing mount, no container engine, ...)."""

    def __init__(self, message: str, container: bool = False) -> None:
        super().__init__(message)
        self.container = container      # the container engine is at fault, not the task's inputs


class _Substitution(LocalExecutor):
    """Boutiques' executor reduced to its substitution engine: built once per descriptor."""

    def __init__(self, descriptor: dict[str, Any]) -> None:  # noqa: D401 - deliberately skips the parent
        self._rkit = self._replaceKeysInTemplate
        self.desc_dict = descriptor
        self.inputs = descriptor["inputs"]
        outputs = descriptor.get("output-files") or []
        # Boutiques makes these absolute against the process cwd; here they are made absolute against the task's.
        self._absolute = {o["id"] for o in outputs if o.get("uses-absolute-path")}
        self.outputs = [{k: v for k, v in o.items() if k != "uses-absolute-path"} for o in outputs]
        self.groups = descriptor.get("groups") or []
        self.workdir = "."

    def _generateOutputFileNames(self) -> None:
        super()._generateOutputFileNames()
        for output_id in self._absolute:
            self.out_dict[output_id] = os.path.normpath(os.path.join(os.path.abspath(self.workdir), self.out_dict[output_id]))

    def _writeConfigurationFiles(self) -> None:
        """Boutiques writes configuration files into the process cwd; these go to the task's own directory."""
        for output in self.outputs:
            template = output.get("file-template")
            if template is None:
                continue
            stripped = output.get("path-template-stripped-extensions") or []
            lines = [self._rkit(line, use_flags=False, unfound_keys="clear", stripped_extensions=stripped,
                                is_output=False, escape_special_chars=True) for line in template]
            target = Path(self.workdir, self.out_dict[output["id"]])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(os.linesep.join(lines))

    def command_line(self, invocation: dict[str, Any], workdir: str) -> tuple[str, dict[str, str]]:
        """The command line and the output file paths (relative to ``workdir`` unless absolute)."""
        self.in_dict = addDefaultValues(self.desc_dict, dict(invocation))
        self.out_dict = {}
        self.workdir = workdir
        return self._generateCmdLineFromInDict(), dict(self.out_dict)


@dataclass
class ContainerOptions:
    """What the user chose about containers (``--volumes``, ``--user``, ``--simg``) plus engine settings."""

    volumes: list[str] = field(default_factory=list)
    user: bool = False
    simg: str | None = None
    docker: str = "docker"
    pull: str = "missing"


@dataclass
class Prepared:
    """Everything needed to spawn one task and to describe it afterwards."""

    command: str                      # the tool's command line, exactly as Boutiques generates it
    launch: str                       # what is actually spawned (the command, or the container command)
    env: dict[str, str]
    outputs: dict[str, str]           # output id -> path template result
    required_outputs: set[str]
    container_image: str | None = None
    container_engine: str | None = None
    cidfile: str | None = None        # docker writes the container id here: the sampler measures that container
    script: str | None = None         # container script to delete afterwards


class CommandBuilder:
    """Turns invocations into ready-to-spawn commands for one descriptor."""

    def __init__(self, descriptor: dict[str, Any], container: ContainerOptions | None = None) -> None:
        self.descriptor = descriptor
        self.container = container or ContainerOptions()
        self._subst = _Substitution(descriptor)
        self.shell = descriptor.get("shell") or "/bin/sh"
        self._errors = {e["code"]: e["description"] for e in descriptor.get("error-codes", [])}

    def describe_exit(self, code: int | None) -> str | None:
        """The descriptor's description of an exit code, if it has one."""
        return self._errors.get(code) if code is not None else None

    def command_line(self, invocation: dict[str, Any], workdir: str = ".") -> str:
        """Exactly the command line ``bosh exec simulate`` prints for this invocation."""
        return self._subst.command_line(invocation, workdir)[0]

    def prepare(self, invocation: dict[str, Any], workdir: str, private_dir: str) -> Prepared:
        """Build the command for a task running in ``workdir``; ``private_dir`` holds clowdr's own scratch files."""
        command, outputs = self._subst.command_line(invocation, workdir)
        required = {o["id"] for o in self.descriptor.get("output-files") or [] if not o.get("optional")}
        env = self._environment(self._subst.in_dict)   # with defaults filled in, as Boutiques does
        image = (self.descriptor.get("container-image") or {}).get("image")
        if image is None:
            return Prepared(command, command, env, outputs, required)
        return self._containerised(command, invocation, workdir, private_dir, env, outputs, required)

    def _environment(self, invocation: dict[str, Any]) -> dict[str, str]:
        """Descriptor environment variables; a value naming an input's value-key takes that input's value."""
        by_key = {i.get("value-key"): i["id"] for i in self.descriptor["inputs"] if i.get("value-key")}
        env = {}
        for var in self.descriptor.get("environment-variables", []):
            value = var["value"]
            if value in by_key:
                value = invocation.get(by_key[value], value)
            env[var["name"]] = str(value)
        return env

    def _engine(self, con_type: str) -> tuple[str, str]:
        """Pick the engine as Boutiques does: docker for docker images when present, else singularity/apptainer."""
        if con_type == "docker" and shutil.which(self.container.docker):
            return "docker", self.container.docker
        for binary in ("singularity", "apptainer"):
            if shutil.which(binary):
                return "singularity", binary
        raise TaskSetupError("Could not find any container engine. "
                             "Make sure that Docker or Singularity/Apptainer is installed.", container=True)

    def _mounts(self, invocation: dict[str, Any], workdir: str) -> list[str]:
        """User volumes, the working directory, then every File input at its own path (Boutiques' automounts)."""
        mounts = []
        for volume in self.container.volumes:
            source, target = volume.split(":", 1)
            mounts.append(f"{os.path.abspath(source)}:{target}")
        mounts.append(f"{workdir}:{workdir}")
        existing = {m.split(":")[1] for m in mounts}
        files: list[str] = []
        for inp in self.descriptor["inputs"]:
            if inp["type"].lower() == "file" and inp["id"] in invocation:
                value = invocation[inp["id"]]
                files.extend(value if isinstance(value, list) else [value])
        files = [f for f in files if f not in existing]
        resolved = [os.path.realpath(os.path.join(workdir, f)) for f in files]
        missing = [p for p in resolved if not os.path.exists(p)]
        if missing:
            raise TaskSetupError(f"Missing local mount location: {missing}")
        mounts.extend(f"{p}:{Path(workdir, f).resolve().as_posix()}" for p, f in zip(resolved, files))
        return mounts

    def _containerised(self, command: str, invocation: dict[str, Any], workdir: str, private_dir: str,
                       env: dict[str, str], outputs: dict[str, str], required: set[str]) -> Prepared:
        con = self.descriptor["container-image"]
        con_type, image = con.get("type"), con["image"]
        kind, binary = self._engine(con_type)
        mounts = self._mounts(invocation, workdir)
        millis = int(time.time() * 1000)
        script = os.path.join(workdir, f"temp-{random.SystemRandom().randint(0, millis)}-{millis}.localExec.boshjob.sh")
        header = f"#!{self.shell}" + (" -l" if self.shell == "/bin/sh" else "")
        Path(script).write_text(header + os.linesep + command)
        os.chmod(script, 0o755)
        options = " ".join(con.get("container-opts") or [])
        options = options + " " if options else ""
        if kind == "docker":
            cidfile = os.path.join(private_dir, f"clowdr-{os.getpid()}-{millis}-{random.randrange(1 << 30)}.cid")
            user = " -u $(id -u):$(id -g)" if self.container.user else ""
            env_opts = "".join(f" -e {k}='{v}'" for k, v in env.items())
            launch = (f"{binary} run{user} --pull={self.container.pull} --cidfile={cidfile} --entrypoint={self.shell}"
                      f" --rm{env_opts} -v {' -v '.join(mounts)} -w {workdir} {options}{image} {script}")
            return Prepared(command, launch, {}, outputs, required, image, binary, cidfile, script)
        if self.container.simg:
            location = self.container.simg
        elif "://" in image:
            location = image
        else:
            location = ("docker://" if con_type == "docker" else con.get("index") or "shub://") + image
        env_prefix = "".join(f"SINGULARITYENV_{k}='{v}' " for k, v in env.items())
        launch = (f"{env_prefix}{binary} exec --cleanenv -B {' -B '.join(mounts)} -W {workdir} "
                  f"{options}{location} {script}")
        return Prepared(command, launch, {}, outputs, required, location, binary, None, script)


def find_outputs(prepared: Prepared, workdir: str) -> tuple[list[str], list[str]]:
    """Output files that exist (first glob match, as Boutiques) and the ids of required ones that do not."""
    found, missing = [], []
    for output_id, pattern in prepared.outputs.items():
        matches = sorted(glob.glob(os.path.join(workdir, pattern)))
        if matches:
            found.append(os.path.abspath(matches[0]))
        elif output_id in prepared.required_outputs:
            missing.append(output_id)
    return found, missing
