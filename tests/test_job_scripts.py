"""What each scheduler's worker jobs ask for (``--setup`` prints the job script and submits nothing), line by line,
and the exact precedence of the settings: --clusterargs > the user's own dask config > the descriptor's
suggested-resources > clowdr's packaged defaults. No scheduler daemon is needed to print a job script."""
from __future__ import annotations

import json

import pytest

from conftest import EXAMPLES, write_json

ECHO, INVOCATIONS = EXAMPLES / "echo-tool.json", EXAMPLES / "invocations"
EVERYTHING = "time:4:00,mem:2048,cpus:2,account:ABC,queue:long,foo:bar"
# the directive lines of each scheduler for EVERYTHING and -n named, in the order they appear
EXPECTED = {
    "slurm": ["#SBATCH -J named", "#SBATCH -p long", "#SBATCH -A ABC", "#SBATCH -n 1", "#SBATCH --cpus-per-task=2",
              "#SBATCH --mem=2048M", "#SBATCH -t 04:00:00", "#SBATCH --foo=bar"],
    "sge": ["#$ -N named", "#$ -q long", "#$ -l mem_free=2048M", "#$ -l h_rt=04:00:00", "#$ -cwd", "#$ -j y",
            "#$ -foo bar", "#$ -pe smp 2", "#$ -A ABC"],
    "pbs": ["#PBS -N named", "#PBS -q long", "#PBS -A ABC", "#PBS -l select=1:ncpus=2:mem=2048mb",
            "#PBS -l walltime=04:00:00", "#PBS -l foo=bar"],
    "lsf": ["#BSUB -J named", "#BSUB -q long", '#BSUB -P "ABC"', "#BSUB -n 2", '#BSUB -R "span[hosts=1]"',
            "#BSUB -M 2148", "#BSUB -W 04:00", "#BSUB -foo bar"],
}
PREFIX = {"slurm": "#SBATCH", "sge": "#$", "pbs": "#PBS", "lsf": "#BSUB"}
# LSF's memory unit comes from lsf.conf on a real LSF host; fixed here. SGE needs a parallel environment for cpus > 1.
SETTINGS = {"DASK_JOBQUEUE__LSF__LSF_UNITS": "mb", "DASK_CLOWDR__SGE__PARALLEL_ENVIRONMENT": "smp"}


def job_script(clowdr, provdir, scheduler, *args, env=None, descriptor=ECHO):
    result = clowdr("local", descriptor, INVOCATIONS, provdir, "--setup", "-c", scheduler, *args,
                    env={**SETTINGS, **(env or {})}, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not list(result.meta.glob("task-*-summary.json"))          # nothing ran
    return result.stdout


def directives(script: str, scheduler: str) -> list[str]:
    return [line for line in script.splitlines() if line.startswith(PREFIX[scheduler] + " ")]


@pytest.mark.parametrize("scheduler", sorted(EXPECTED))
def test_every_standard_key_becomes_the_schedulers_own_directive(clowdr, provdir, scheduler):
    script = job_script(clowdr, provdir, scheduler, "-a", EVERYTHING, "-n", "named")
    assert directives(script, scheduler) == EXPECTED[scheduler]
    lines = script.splitlines()
    assert "export CLOWDR_WALLTIME_SECONDS=14400" in lines             # what retirement before walltime reads
    worker = next(line for line in lines if "distributed.cli.dask_worker" in line)
    assert "--nthreads 1" in worker and "--preload clowdr.worker" in worker and "--no-dashboard" in worker


def test_htcondor_submit_description(clowdr, provdir):
    script = job_script(clowdr, provdir, "htcondor", "-a", "time:4:00,mem:2048,cpus:2,account:ABC,foo:bar",
                        "-n", "named")
    lines = script.splitlines()
    for line in ("batch_name = named", "RequestCpus = 2", "RequestMemory = floor(MY.DaskWorkerMemory / 1048576)",
                 "MY.DaskWorkerMemory = 2147483648", "MY.DaskWorkerCores = 1", "MY.DaskWorkerDisk = 1073741824",
                 "allowed_job_duration = 14400", "accounting_group = ABC", "foo = bar", "Executable = /bin/sh",
                 "Queue"):
        assert line in lines, line
    arguments = next(line for line in lines if line.startswith("Arguments = "))
    assert "export CLOWDR_WALLTIME_SECONDS=14400;" in arguments and "--preload clowdr.worker" in arguments


def test_htcondor_has_no_queues(clowdr, provdir):
    result = clowdr("local", ECHO, INVOCATIONS, provdir, "--setup", "-c", "htcondor", "-a", "queue:long")
    assert result.returncode == 2 and "no queues" in result.stderr
    assert list(provdir.iterdir()) == []


def test_sge_refuses_several_cpus_without_a_parallel_environment(clowdr, provdir):
    result = clowdr("local", ECHO, INVOCATIONS, provdir, "--setup", "-c", "sge", "-a", "cpus:4")
    assert result.returncode == 2 and "clowdr.sge.parallel-environment" in result.stderr
    assert list(provdir.iterdir()) == []


def suggesting(tmp_path, **resources):
    descriptor = json.loads(ECHO.read_text())
    descriptor["suggested-resources"] = resources
    return write_json(tmp_path / "suggesting.json", descriptor)


def test_suggested_resources_beat_the_packaged_defaults(clowdr, provdir, tmp_path):
    descriptor = suggesting(tmp_path, **{"cpu-cores": 2, "ram": 0.5, "walltime-estimate": 600})
    lines = directives(job_script(clowdr, provdir, "slurm", descriptor=descriptor), "slurm")
    assert {"#SBATCH --cpus-per-task=2", "#SBATCH --mem=512M", "#SBATCH -t 00:10:00"} <= set(lines)


def test_the_users_own_setting_beats_suggested_resources_even_when_it_equals_the_default(clowdr, provdir, tmp_path):
    """The user who writes the packaged value has still set it: known from the config layers, not by comparison."""
    descriptor = suggesting(tmp_path, **{"cpu-cores": 2, "walltime-estimate": 600})
    env = {"DASK_CLOWDR__SLURM__CPUS": "1", "DASK_CLOWDR__SLURM__WALLTIME": "01:00:00"}
    lines = directives(job_script(clowdr, provdir, "slurm", env=env, descriptor=descriptor), "slurm")
    assert "#SBATCH --cpus-per-task=1" in lines and "#SBATCH -t 01:00:00" in lines


def test_a_dask_config_file_counts_as_the_users_own(clowdr, provdir, tmp_path):
    config = tmp_path / "dask-config"
    config.mkdir()
    (config / "mine.yaml").write_text("clowdr:\n  slurm:\n    cpus: 1\n")
    descriptor = suggesting(tmp_path, **{"cpu-cores": 3})
    lines = directives(job_script(clowdr, provdir, "slurm", env={"DASK_CONFIG": str(config)}, descriptor=descriptor),
                       "slurm")
    assert "#SBATCH --cpus-per-task=1" in lines


def test_dask_jobqueues_own_settings_count_as_the_users(clowdr, provdir, tmp_path):
    descriptor = suggesting(tmp_path, **{"walltime-estimate": 600})
    env = {"DASK_JOBQUEUE__SLURM__WALLTIME": "03:00:00", "DASK_JOBQUEUE__SLURM__QUEUE": "long",
           "DASK_JOBQUEUE__SLURM__ACCOUNT": "lab"}
    lines = directives(job_script(clowdr, provdir, "slurm", env=env, descriptor=descriptor), "slurm")
    assert {"#SBATCH -t 03:00:00", "#SBATCH -p long", "#SBATCH -A lab"} <= set(lines)


def test_clusterargs_beat_everything(clowdr, provdir, tmp_path):
    descriptor = suggesting(tmp_path, **{"cpu-cores": 2, "walltime-estimate": 600})
    env = {"DASK_CLOWDR__SLURM__CPUS": "3", "DASK_JOBQUEUE__SLURM__WALLTIME": "03:00:00"}
    lines = directives(job_script(clowdr, provdir, "slurm", "-a", "cpus:4,time:0:30", env=env, descriptor=descriptor),
                       "slurm")
    assert "#SBATCH --cpus-per-task=4" in lines and "#SBATCH -t 00:30:00" in lines


def test_a_bad_configured_value_is_one_line_naming_the_setting(clowdr, provdir):
    result = clowdr("local", ECHO, INVOCATIONS, provdir, "--setup", "-c", "pbs",
                    env={"DASK_CLOWDR__PBS__WALLTIME": "soon"})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "clowdr.pbs.walltime" in result.stderr
    assert list(provdir.iterdir()) == []
