"""Repository conventions that reviewers rely on: thin adapters, pinned envs, small modules."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
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
    return str(Path(sys.executable).parent / name)


def test_ruff_is_clean() -> None:
    proc = subprocess.run(
        [_tool("ruff"), "check", "src", "scripts", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_mypy_is_clean() -> None:
    proc = subprocess.run([_tool("mypy")], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]


STAGES = (
    "core",
    "convert",
    "preprocess",
    "segment",
    "postprocess",
    "evaluate",
    "radiomics",
    "stats",
    "signature",
    "labeling",
    "audit",
    "demo",
)


def test_package_is_one_package_per_stage() -> None:
    top = REPO / "src/medpipe"
    modules = sorted(p.name for p in top.glob("*.py"))
    assert modules == ["__init__.py", "cli.py"], f"top-level modules besides __init__/cli: {modules}"
    packages = sorted(p.name for p in top.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
    assert packages == sorted(STAGES)
    for rule_file in (REPO / "rules").glob("*.smk"):
        if rule_file.stem != "common":
            assert rule_file.stem in packages, f"rules/{rule_file.name} has no package medpipe.{rule_file.stem}"
            assert (REPO / "tests" / rule_file.stem).is_dir(), f"no tests/{rule_file.stem}/ for rules/{rule_file.name}"
    for pkg in packages:
        doc = ast.get_docstring(ast.parse((top / pkg / "__init__.py").read_text()))
        assert doc, f"medpipe.{pkg}: __init__.py needs a docstring saying which rules call it"
        if (REPO / "rules" / f"{pkg}.smk").is_file():
            assert f"rules/{pkg}.smk" in doc, f"medpipe.{pkg}: docstring must name rules/{pkg}.smk"


def _long_functions(path: Path, limit: int, root: Path = REPO) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        body = node.body[1:] if ast.get_docstring(node) is not None else node.body
        if body and (n := (body[-1].end_lineno or 0) - body[0].lineno + 1) > limit:
            found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_body_over_60_lines() -> None:
    long = [f for p in sorted((REPO / "src/medpipe").rglob("*.py")) for f in _long_functions(p, 60)]
    assert not long, "split these along their steps:\n" + "\n".join(long)


def test_long_function_check_counts_the_body_without_docstring(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text('def f():\n    """Doc.\n\n    More.\n    """\n' + "    x = 1\n" * 61)
    assert _long_functions(src, 60, tmp_path) == ["m.py:1 f (61 lines)"]
    assert _long_functions(src, 61, tmp_path) == []


def test_no_module_keeps_its_own_defaults() -> None:
    pattern = re.compile(r"^\s*_?[A-Z_]*DEFAULTS?\b[^=\n]*=", re.MULTILINE)
    offenders = [
        str(p.relative_to(REPO)) for p in (REPO / "src/medpipe").rglob("*.py") if pattern.search(p.read_text())
    ]
    assert not offenders, f"defaults belong in config/schemas/config.schema.yaml, not in {offenders}"


def _lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("lint-imports"), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_import_contracts_hold() -> None:
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "KEPT" in proc.stdout and "BROKEN" not in proc.stdout, proc.stdout[-2000:]


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("stats/agreement.py", "from medpipe.radiomics import extract", "independent of each other"),
        ("core/io.py", "import medpipe.audit.manifest", "core at"),
        ("segment/train.py", "from medpipe.segment import infer", "training never imports inference"),
        ("evaluate/metrics.py", "import snakemake", "does not import snakemake"),
    ],
)
def test_import_contracts_refuse_a_forbidden_import(tmp_path: Path, module: str, line: str, contract: str) -> None:
    shutil.copytree(REPO / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / "src/medpipe" / module, "a") as fh:
        fh.write(f"\n{line}  # noqa\n")
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(tmp_path / "src")}
    proc = _lint_imports(tmp_path, env)
    assert proc.returncode == 1, proc.stdout[-3000:]
    broken = " ".join(proc.stdout.split("Broken contracts")[-1].split())
    assert contract in broken, broken[:2000]


def test_code_is_formatted() -> None:
    dirs = ["src", "scripts", "tests", "benchmarks"]
    ruff = subprocess.run(
        [_tool("ruff"), "format", "--check", *dirs], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert ruff.returncode == 0, ruff.stdout[-3000:]
    smk = subprocess.run(
        [_tool("snakefmt"), "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert smk.returncode == 0, (smk.stdout + smk.stderr)[-3000:]


def test_job_benchmarks_are_written_under_logs() -> None:
    for smk in (REPO / "rules").glob("*.smk"):
        for path in re.findall(r'benchmark:\s*\n?\s*"([^"]+)"', smk.read_text()):
            assert path.startswith("logs/benchmarks/"), f"{smk.name}: benchmark file {path} belongs under logs/"
