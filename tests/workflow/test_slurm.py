"""The tiny workflow through a REAL single-node SLURM cluster with ``--profile profiles/slurm``.

``.ci/slurm/up.sh`` installs the Debian packages when missing (munge, slurmctld, slurmd, slurmdbd,
MariaDB), starts the daemons by hand on 127.0.0.1 and ``.ci/slurm/down.sh`` stops exactly those
daemons again. The run uses the cluster profile plus ``profiles/slurm-ci`` (no GPU on the CI
node, 2 CPUs, short status polling). Evidence that every job went through SLURM comes from the
accounting database (``sacct``) and the plugin's per-job SLURM logs; the results must equal the
local run of the same workflow (``tiny_run``) file for file.

The SLURM run stops at the evaluation summary and the DICOM-SEG exports (conversion, every
preprocessing step, split, training, prediction, post-processing, scoring): the radiomics of the
tiny workflow take about half of its CPU time and run unchanged in ``tiny_run``. On the 2-core CI node the
group jobs run one after the other (each asks for both CPUs): about 6-8 minutes uncontended, 16 measured
on a loaded machine, hence the 30-minute limit.

Needs root (packages, daemons). Outside CI without root the module is skipped with the reason;
in CI (``CI=true``) that is an error. ``MEDPIPE_SKIP_SLURM=1`` skips it explicitly.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from medpipe.audit.verify import diff_runs
from tests.workflow.conftest import BIN, REPO, snakemake_cmd

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

UP = REPO / ".ci" / "slurm" / "up.sh"
DOWN = REPO / ".ci" / "slurm" / "down.sh"
PROFILES = (
    "--workflow-profile",
    "none",
    "--profile",
    str(REPO / "profiles" / "slurm"),
    "--profile",
    str(REPO / "profiles" / "slurm-ci"),
)
#: Wall-clock limits (s): cluster start including a first package install, and the workflow run.
UP_TIMEOUT = 300
RUN_TIMEOUT = 1800

_SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")
_RUN_ID = re.compile(r"SLURM run ID: (\S+)")


def _unavailable_reason() -> str | None:
    if os.environ.get("MEDPIPE_SKIP_SLURM") == "1":
        return "MEDPIPE_SKIP_SLURM=1"
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "the local SLURM cluster needs root (Debian packages, daemons started by hand)"
    if shutil.which("dpkg-query") is None:
        return "the local SLURM cluster needs a Debian/Ubuntu system (apt)"
    return None


@pytest.fixture(scope="module")
def slurm_env() -> Iterator[dict[str, str]]:
    """Environment for SLURM clients while a local cluster is up; stops the cluster afterwards."""
    reason = _unavailable_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true" and os.environ.get("MEDPIPE_SKIP_SLURM") != "1":
            pytest.fail(f"SLURM test cannot run in CI: {reason}")
        pytest.skip(reason)
    state = Path(os.environ.get("MEDPIPE_SLURM_DIR", "/tmp/medpipe-slurm"))
    env = dict(os.environ, MEDPIPE_SLURM_DIR=str(state))
    try:
        up = subprocess.run(["timeout", str(UP_TIMEOUT), str(UP)], env=env, capture_output=True, text=True, check=False)
        if up.returncode != 0:
            pytest.fail(f"{UP} failed ({up.returncode}):\n{up.stdout[-3000:]}\n{up.stderr[-5000:]}")
        env["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        yield env
    finally:
        subprocess.run(["timeout", "60", str(DOWN)], env=env, capture_output=True, text=True, check=False)


@dataclass(frozen=True)
class SlurmRun:
    """A finished SLURM run: its working directory, output and the SLURM job IDs it submitted."""

    workdir: Path
    output: str
    run_id: str
    jobs: dict[str, Path]  # SLURM job ID -> the plugin's log of that job


@pytest.fixture(scope="module")
def slurm_run(slurm_env: dict[str, str], tiny_workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> SlurmRun:
    """The tiny workflow run to completion through SLURM in a fresh copy of the tiny cohort."""
    workdir = tmp_path_factory.mktemp("slurm")
    shutil.copytree(tiny_workdir / "resources", workdir / "resources")
    cmd = ["timeout", "-k", "30", str(RUN_TIMEOUT), *snakemake_cmd(workdir, *PROFILES, *_targets(workdir))]
    proc = subprocess.run(cmd, cwd=REPO, env=slurm_env, capture_output=True, text=True, check=False)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        pytest.fail(f"SLURM run failed ({proc.returncode}):\n{output[-8000:]}")
    run_ids = _RUN_ID.findall(output)
    jobs = {job_id: Path(log) for job_id, log in _SUBMITTED.findall(output)}
    assert len(run_ids) == 1, f"expected one SLURM run ID in the output, found {run_ids}"
    return SlurmRun(workdir, output, run_ids[0], jobs)


def _targets(workdir: Path) -> list[str]:
    """Everything up to the evaluation summary and each subject's DICOM-SEG export."""
    sheet = (workdir / "resources/demo/subjects.tsv").read_text().splitlines()[1:]
    subjects = [line.split("\t")[0] for line in sheet if line.strip()]
    assert subjects
    return [
        "results/evaluate/summary.tsv",
        *(f"results/postprocess/sub-{s}/sub-{s}_desc-auto_mask.dcm" for s in subjects),
    ]


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
        ["timeout", "120", *snakemake_cmd(slurm_run.workdir, *PROFILES, "-n", *_targets(slurm_run.workdir))],
        cwd=REPO,
        env=slurm_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Nothing to be done" in proc.stdout + proc.stderr
