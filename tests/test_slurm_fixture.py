"""How the SLURM tests choose their SLURM (tests/conftest.py ``slurm_plan``): start the project's own, reuse a
SLURM someone else configured that answers (a cluster's login node), or skip saying why. No daemon is started."""
from __future__ import annotations

import socket
from pathlib import Path

from conftest import SLURM_MARK, slurm_answers, slurm_plan


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_no_configuration_or_the_projects_own_is_started(tmp_path):
    conf = tmp_path / "slurm.conf"
    assert slurm_plan(conf)[0] == "start"
    conf.write_text(f"{SLURM_MARK}\nClusterName=clowdr-test\n")
    assert slurm_plan(conf)[0] == "start"


def test_someone_elses_configuration_whose_slurm_does_not_answer_is_skipped_with_the_reason(tmp_path):
    conf = tmp_path / "slurm.conf"          # as on a login node: written by the site, here naming a dead controller
    conf.write_text(f"ClusterName=site\nSlurmctldHost=nowhere(127.0.0.1)\nSlurmctldPort={_unused_port()}\n"
                    "AuthType=auth/munge\nNodeName=n1 CPUs=1 State=UNKNOWN\nPartitionName=p Nodes=n1 Default=YES\n")
    action, why = slurm_plan(conf)          # the real probe: scontrol ping against that configuration
    assert action == "skip" and str(conf) in why and "not written by scripts/slurm-up.sh" in why
    assert slurm_answers(conf) in why


def test_someone_elses_configuration_whose_slurm_answers_is_reused(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=site\n")
    asked: list[Path] = []
    action, why = slurm_plan(conf, answers=lambda path: asked.append(path))    # None: it answers
    assert action == "reuse" and asked == [conf] and "start nothing" in why
