"""The tiny workflow through a REAL single-node SLURM cluster with ``--profile profiles/slurm``.

``.ci/slurm/up.sh`` installs the Debian packages when missing (munge, slurmctld, slurmd, slurmdbd,
MariaDB), starts the daemons by hand on 127.0.0.1 and ``.ci/slurm/down.sh`` stops exactly those
daemons again. The run uses the cluster profile plus ``profiles/slurm-ci`` (no GPU on the CI
node, 2 CPUs, short status polling). Evidence that every job went through SLURM comes from the
accounting database (``sacct``) and the plugin's per-job SLURM logs; the results must equal the
local run of the same workflow (``tiny_run``) file for file.

The SLURM run starts in the background right after collection (``tests/workflow/slurm_cluster.py``: most of
its wall time is waiting on the scheduler, which then overlaps the rest of the suite). It stops at the
evaluation summary and the DICOM-SEG exports (conversion, every preprocessing step, split, training,
prediction, post-processing, scoring): the radiomics of the tiny workflow take about half of its CPU time and
run unchanged in ``tiny_run``. On the 2-core CI node the group jobs run one after the other (each asks for
both CPUs).

Needs root (packages, daemons). Outside CI without root the module is skipped with the reason;
in CI (``CI=true``) that is an error. ``MEDPIPE_SKIP_SLURM=1`` skips it explicitly.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from medpipe.audit.verify import diff_runs
from tests.workflow import slurm_cluster
from tests.workflow.conftest import REPO, snakemake_cmd
from tests.workflow.slurm_cluster import PROFILES, SlurmRunner, targets, unavailable_reason

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

_SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
_RUN_ID = re.compile(r"SLURM run ID: (\S+)")


@pytest.fixture(scope="module")
def slurm_runner() -> Iterator[SlurmRunner]:
    """The SLURM run started in the background after collection (slurm_cluster), joined; the cluster is
    stopped after this module."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true" and os.environ.get("MEDPIPE_SKIP_SLURM") != "1":
            pytest.fail(f"SLURM test cannot run in CI: {reason}")
        pytest.skip(reason)
    runner = slurm_cluster.RUNNER or SlurmRunner().start()
    try:
        yield runner.wait()
    finally:
        runner.stop()
        slurm_cluster.RUNNER = None


@pytest.fixture(scope="module")
def slurm_env(slurm_runner: SlurmRunner) -> dict[str, str]:
    """Environment for SLURM clients while the local cluster is up."""
    return slurm_runner.env


@dataclass(frozen=True)
class SlurmRun:
    """A finished SLURM run: its working directory, output and the SLURM job IDs it submitted."""

    workdir: Path
    output: str
    run_id: str
    jobs: dict[str, Path]  # SLURM job ID -> the plugin's log of that job


@pytest.fixture(scope="module")
def slurm_run(slurm_runner: SlurmRunner) -> SlurmRun:
    """The tiny workflow run to completion through SLURM in a fresh copy of the tiny cohort."""
    if slurm_runner.error:
        pytest.fail(slurm_runner.error)
    output = slurm_runner.output
    run_ids = _RUN_ID.findall(output)
    jobs = {job_id: Path(log) for job_id, log in _SUBMITTED.findall(output)}
    assert len(run_ids) == 1, f"expected one SLURM run ID in the output, found {run_ids}"
    return SlurmRun(slurm_runner.workdir, output, run_ids[0], jobs)


def _job_stats(output: str) -> dict[str, int]:
    """Rule -> planned job count, from Snakemake's 'Job stats' table (no local rules are targeted)."""
    block = output.split("Job stats:", 1)[1].split("\ntotal", 1)[0]
    rows = re.findall(r"^(\w+)\s+(\d+)\s*$", block, flags=re.MULTILINE)
    return {rule: int(n) for rule, n in rows}


def _sacct(env: dict[str, str], job_ids: list[str]) -> dict[str, dict[str, str]]:
    """Accounting records (JobIDRaw, JobName, State, ExitCode, Comment) of the given jobs."""
    fields = ("JobIDRaw", "JobName", "State", "ExitCode", "Comment")
    proc = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-j", ",".join(job_ids), "-o", ",".join(fields)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    records = [dict(zip(fields, line.split("|"), strict=True)) for line in proc.stdout.splitlines() if line]
    return {r["JobIDRaw"]: r for r in records}


def test_every_job_went_through_slurm(slurm_run: SlurmRun, slurm_env: dict[str, str]) -> None:
    """Every non-local job was an sbatch job that SLURM accounted as COMPLETED for this run."""
    planned = _job_stats(slurm_run.output)
    stages = {"convert_sequence", "n4", "skullstrip", "train", "predict", "postprocess", "evaluate_subject"}
    assert stages <= set(planned), f"expected every stage in the run, planned: {planned}"
    # Group jobs (profiles/slurm bundles a subject's preprocessing) are one sbatch job each.
    assert 10 <= len(slurm_run.jobs) <= sum(planned.values())

    acct = _sacct(slurm_env, sorted(slurm_run.jobs))
    assert set(acct) == set(slurm_run.jobs), "sacct does not know every submitted job"
    for rec in acct.values():
        assert rec["State"] == "COMPLETED" and rec["ExitCode"] == "0:0", rec
        assert rec["JobName"] == slurm_run.run_id, rec
        assert rec["Comment"].startswith(("rule_", "group_")), rec
    # The plugin kept each job's SLURM log: the job ran snakemake's job step for its rule(s).
    rules_in_logs: set[str] = set()
    for job_id, log in slurm_run.jobs.items():
        assert log.name == f"{job_id}.log" and log.is_file(), log
        rules_in_logs |= set(re.findall(r"^(?:local)?rule (\w+):$", log.read_text(), flags=re.MULTILINE))
    assert set(planned) <= rules_in_logs, f"rules never seen in a SLURM job: {set(planned) - rules_in_logs}"


def test_gpu_rules_ask_for_no_gpu_on_the_ci_node(slurm_run: SlurmRun) -> None:
    """profiles/slurm-ci overrides the GPU request of train/predict (the CI node has none)."""
    assert "--gpus" not in slurm_run.output
    for log in slurm_run.jobs.values():
        text = log.read_text()
        if re.search(r"^rule (train|predict):$", text, flags=re.MULTILINE):
            assert re.search(r"resources: .*\bgpu=0\b", text), f"{log}: gpu not overridden"


def test_results_equal_the_local_run(slurm_run: SlurmRun, tiny_run: Path) -> None:
    """Running through SLURM changes where jobs run, not what they compute."""
    result = diff_runs(tiny_run / "results", slurm_run.workdir / "results")
    # The SLURM run made a subset of the stages (no radiomics, statistics, audit): "only_a" files.
    differing = [
        f"{d['path']}: {d['status']} ({d.get('reason', '')})" for d in result["differing"] if d["status"] != "only_a"
    ]
    compared = [s for s, v in result["stages"].items() if v["files"] > v["differing"]]
    assert {"convert", "n4", "skullstrip", "normalise", "train", "predict", "postprocess", "evaluate"} <= set(compared)
    assert not differing, "SLURM and local results differ:\n" + "\n".join(differing[:30])


def test_slurm_rerun_has_nothing_to_do(slurm_run: SlurmRun, slurm_env: dict[str, str]) -> None:
    proc = subprocess.run(
        ["timeout", "120", *snakemake_cmd(slurm_run.workdir, *PROFILES, "-n", *targets(slurm_run.workdir))],
        cwd=REPO,
        env=slurm_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
