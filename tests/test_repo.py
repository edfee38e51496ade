"""Repository conventions that reviewers rely on: thin adapters, pinned envs, small modules."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _lock() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_lock_pins_everything_exactly() -> None:
    pins = _lock()
    assert pins["torch"] == "2.13.0"
    assert pins["snakemake"].startswith("9.")
    for line in (REPO / "requirements.lock").read_text().splitlines():
        assert line.startswith("#") or not line.strip() or "==" in line, line


@pytest.mark.parametrize("env", sorted((REPO / "envs").glob("*.yaml")), ids=lambda p: p.name)
def test_conda_envs_pin_the_lock_versions(env: Path) -> None:
    pins = _lock()
    spec = yaml.safe_load(env.read_text())
    pip_deps = [d for dep in spec["dependencies"] if isinstance(dep, dict) for d in dep.get("pip", [])]
    conda_deps = [d for d in spec["dependencies"] if isinstance(d, str)]
    assert any(d.startswith("python=3.11") for d in conda_deps), f"{env.name}: python must be 3.11"
    for dep in pip_deps:
        if dep.startswith("-"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)", dep)
        assert m, f"{env.name}: {dep!r} is not pinned with =="
        name = re.sub(r"\[.*\]", "", m.group(1)).lower().replace("_", "-")
        assert pins.get(name) == m.group(2), f"{env.name}: {name} {m.group(2)} != lock {pins.get(name)}"


def test_rules_use_existing_envs_and_scripts() -> None:
    for smk in (REPO / "rules").glob("*.smk"):
        text = smk.read_text()
        for env in re.findall(r'conda:\s*\n?\s*"([^"]+)"', text):
            assert (smk.parent / env).resolve().is_file(), f"{smk.name}: missing env {env}"
        for script in re.findall(r'script:\s*\n?\s*"([^"]+)"', text):
            assert (smk.parent / script).resolve().is_file(), f"{smk.name}: missing script {script}"


@pytest.mark.parametrize("script", sorted((REPO / "scripts").glob("*.py")), ids=lambda p: p.name)
def test_scripts_are_thin_adapters(script: Path) -> None:
    lines = [ln for ln in script.read_text().splitlines() if ln.strip()]
    assert len(lines) <= 30, f"{script.name} has {len(lines)} lines; logic belongs in src/medpipe"
    assert "script_logging(snakemake.log[0])" in script.read_text()


@pytest.mark.parametrize("module", sorted((REPO / "src/medpipe").rglob("*.py")), ids=lambda p: p.name)
def test_modules_stay_small(module: Path) -> None:
    n = len(module.read_text().splitlines())
    assert n <= 450, f"{module.relative_to(REPO)} has {n} lines; split it by concern"


def _tool(name: str) -> str:
    import sys

    return str(Path(sys.executable).parent / name)


def test_ruff_is_clean() -> None:
    import subprocess

    proc = subprocess.run(
        [_tool("ruff"), "check", "src", "scripts", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_mypy_is_clean() -> None:
    import subprocess

    proc = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
