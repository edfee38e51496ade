"""The HTML report: a section per stage with images and captions, renders in headless Chromium, no PHI.

Two runs are checked: ``mini_run`` (a small Snakemake workflow made here, with fake stage rules plus
the real ``rules/audit.smk`` and ``report/workflow.rst``; ~30 s) and ``tiny_run`` (the real tiny
end-to-end workflow, from tests/workflow/conftest.py). Chromium comes from Debian (``apt-get install -y
chromium``); in CI a missing browser is an error, elsewhere the browser tests are skipped.
Screenshots and DOM dumps go to ``$MEDPIPE_TEST_ARTIFACTS/report/`` (default: pytest's tmp dir).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medpipe.audit.verify import cli_verify
from tests.workflow.conftest import REPO, run

pytestmark = pytest.mark.workflow

PLANTED_PHI = "DOE^JANE_MEDPIPEPHI_19700101"
#: results/ folders without QC images by design: fold list, the audit pages (HTML tables) and the model bundle
#: (weights, records and a markdown model card; its CV numbers are the evaluation summary in the report).
NO_IMAGE_STAGES = {"split", "audit", "bundle"}
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1400,1000",
    "--virtual-time-budget=10000",
]

MINI_SNAKEFILE = """
REPO = config["repo"]
report: REPO + "/report/workflow.rst"
SUBJECTS = ["01", "02"]
STAGES = ["convert", "n4", "predict"]

def get_uncertainty_files(wildcards):
    return [f"results/predict/sub-{s}/sub-{s}_uncertainty.json" for s in SUBJECTS]

def get_signoff(wildcards):
    return []
def get_manifest_inputs(wildcards):
    return [f"results/{st}/sub-{s}/sub-{s}_qc.png" for st in STAGES for s in SUBJECTS] + [
        "results/audit/flagged_cases.tsv"]

include: REPO + "/rules/audit.smk"

rule all:
    input: get_manifest_inputs, "results/audit/manifest.json"

rule stage:
    output:
        png=report("results/{stage}/sub-{subject}/sub-{subject}_qc.png", caption="caption.rst",
                   category="{stage}", labels={"subject": "{subject}"}),
        record="results/{stage}/sub-{subject}/sub-{subject}_uncertainty.json",
    benchmark: "logs/benchmarks/{stage}/sub-{subject}.tsv"
    run:
        import json
        import numpy as np
        from PIL import Image
        rng = np.random.default_rng(int(wildcards.subject))
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")).save(output.png)
        score = 0.1 * int(wildcards.subject)
        with open(output.record, "w") as fh:
            record = {"subject": wildcards.subject, "score": score, "threshold": 0.15, "flag": score > 0.15}
            json.dump(record, fh)
"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        msg = "chromium not found (install: apt-get update && apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + "; CI must install it")
        pytest.skip(msg)
    return path


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small workflow run with the real audit rules and front page, and its report."""
    work = tmp_path_factory.mktemp("mini")
    (work / "Snakefile").write_text(MINI_SNAKEFILE)
    (work / "caption.rst").write_text("QC image of stage {{ snakemake.wildcards.stage }} for one subject.\n")
    (work / "config.yaml").write_text(  # the keys rules/audit.smk reads (a real run gets them from the schema)
        f"repo: {REPO}\nsubjects: resources/subjects.tsv\nseed: 3\ndeterministic: true\nreview: {{signoff: null}}\n"
    )
    dicom = work / "resources" / PLANTED_PHI  # an export folder named after the patient
    for subject in ("01", "02"):
        (dicom / subject).mkdir(parents=True)
        (dicom / subject / "IM0001.dcm").write_bytes(b"DICM" + PLANTED_PHI.encode() + bytes(32))
    (work / "resources/subjects.tsv").write_text(
        "subject\tdicom\tlabel\n" + "".join(f"{s}\tresources/{PLANTED_PHI}/{s}\t\n" for s in ("01", "02"))
    )
    snakemake = str(REPO / ".venv/bin/snakemake") if (REPO / ".venv/bin/snakemake").exists() else "snakemake"
    run([snakemake, "--cores", "1", "--configfile", "config.yaml", "-q"], cwd=work, timeout=600)
    run(
        [snakemake, "--cores", "1", "--configfile", "config.yaml", "--report", "results/report.html"],
        cwd=work,
        timeout=600,
    )
    return work


@pytest.fixture(params=["mini_run", "tiny_run"])
def workdir(request: pytest.FixtureRequest) -> Path:
    path: Path = request.getfixturevalue(request.param)
    return path


def artifacts(name: str, tmp_path: Path) -> Path:
    root = Path(os.environ.get("MEDPIPE_TEST_ARTIFACTS", tmp_path)) / "report" / name
    root.mkdir(parents=True, exist_ok=True)
    return root


def report_data(html: str) -> tuple[dict, dict]:
    """The report's categories (category -> subcategory -> paths) and results (path -> entry)."""
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", html, re.S).group(1))
    results = json.loads(re.search(r"var results = (\{.*?\});\n", html, re.S).group(1))
    return categories, results


def decoded_payloads(html: str) -> bytes:
    """Every base64 data URI of the report, decoded (embedded files are not greppable otherwise)."""
    blobs = re.findall(r"data:[^\"' ]*?;base64,([A-Za-z0-9+/=]+)", html)
    return b"\n".join(base64.b64decode(b) for b in blobs)


def phi_strings(workdir: Path) -> set[str]:
    planted = workdir / "resources/demo/phi.json"
    strings = {PLANTED_PHI, "MEDPIPEPHI"}
    if planted.is_file():
        data = json.loads(planted.read_text())
        strings |= {s for s in data.get("all_strings", []) if len(s) >= 4} | {data.get("token", "MEDPIPEPHI")}
    return strings


def test_report_renders_in_headless_chromium(workdir: Path, chromium: str, tmp_path: Path) -> None:
    report = workdir / "results/report.html"
    out = artifacts(workdir.name, tmp_path)
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    shot = subprocess.run(
        [*common, f"--screenshot={out / 'report.png'}", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shot.returncode == 0, shot.stderr[-3000:]
    dom = subprocess.run(
        [*common, "--enable-logging=stderr", "--v=0", "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert dom.returncode == 0, dom.stderr[-3000:]
    (out / "dom.html").write_text(dom.stdout)
    console_errors = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln and re.search(r"Uncaught|Error", ln)]
    assert console_errors == []
    pixels = np.asarray(Image.open(out / "report.png").convert("RGB"), dtype=np.int16)
    assert pixels.shape[:2] == (1000, 1400)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "screenshot looks blank"
    assert (np.abs(pixels - 255).sum(axis=2) > 60).mean() > 0.05, "screenshot is nearly all white"
    text = re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)\b.*?</\1>", " ", dom.stdout, flags=re.S))
    assert "medpipe run report" in text and "Methods" in text and "References" in text
    categories, _ = report_data(report.read_text())
    for category in categories:  # the rendered menu lists every section
        assert category in text, f"section {category!r} not rendered"


def test_report_has_a_section_per_stage(workdir: Path) -> None:
    html = (workdir / "results/report.html").read_text()
    categories, results = report_data(html)
    stages = {p.name for p in (workdir / "results").iterdir() if p.is_dir()} - NO_IMAGE_STAGES
    missing = []
    for stage in sorted(stages):
        entries = [
            results[p]
            for subs in categories.values()
            for paths in subs.values()
            for p in paths
            if p.startswith(f"results/{stage}/")
        ]
        if not any(
            e["mime_type"].startswith("image/") and re.sub(r"<[^>]+>", "", e["caption"]).strip() for e in entries
        ):
            missing.append(stage)
    assert missing == [], f"stages without a captioned image in the report: {missing}"
    audit = {Path(p).name for subs in categories.values() for paths in subs.values() for p in paths}
    assert {"manifest_summary.html", "flagged_cases.html", "flagged_cases.tsv"} <= audit
    desc = re.search(r'var workflow_desc = "(.*?)";\n', html, re.S).group(1)
    assert "Software." in desc and "Tool versions: snakemake" in desc and "[Li2016]" in desc


def test_run_verifies_and_holds_no_phi(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = workdir / "results"
    assert cli_verify(results, None) == 0, capsys.readouterr().out
    manifest = (results / "audit/manifest.json").read_text()
    on_disk = {p.relative_to(results).as_posix() for p in results.rglob("*") if p.is_file()}
    assert set(json.loads(manifest)["files"]) == on_disk - {
        "audit/manifest.json",
        "audit/manifest_summary.html",
        "report.html",
    }
    html = (results / "report.html").read_text()
    payloads = decoded_payloads(html)
    hits = [
        s
        for s in phi_strings(workdir)
        if s in manifest or s.lower() in html.lower() or s.lower().encode() in payloads.lower()
    ]
    assert hits == []
