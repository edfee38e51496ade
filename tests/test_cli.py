"""Tests of the ``medpipe`` command line (medpipe.cli)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from medpipe.cli import build_parser, main


def write_config(path: Path, demo: dict[str, object]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"seed": 1, "demo": demo}))
    return path


def test_demo_data_uses_config_defaults_and_command_line_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = write_config(tmp_path / "config.yaml", {"n_subjects": 5, "seed": 3, "spacing_mm": [6.0, 6.0, 6.0]})
    assert main(["demo-data", "--out", "resources/demo", "--config", str(cfg), "--n-subjects", "2"]) == 0
    out = tmp_path / "resources" / "demo"
    rows = [r.split("\t") for r in (out / "subjects.tsv").read_text().splitlines()]
    assert rows == [
        ["subject", "dicom", "label"],
        ["demo01", "resources/demo/dicom/demo01", "resources/demo/labels/demo01_lesion.nii.gz"],
        ["demo02", "resources/demo/dicom/demo02", "resources/demo/labels/demo02_lesion.nii.gz"],
    ]
    for _, dicom, label in rows[1:]:
        assert len(list(Path(dicom, "T1w").glob("IM*.dcm"))) == 30  # 180 mm / 6 mm
        assert Path(label).is_file()
    params = json.loads((out / "demo_manifest.json").read_text())["parameters"]
    assert (params["n_subjects"], params["seed"], params["spacing_mm"]) == (2, 3, [6.0, 6.0, 6.0])

    probe = out / "dicom" / "demo01" / "T2w" / "IM0010.dcm"
    before, content = probe.stat().st_mtime_ns, probe.read_bytes()
    sheet_time = (out / "subjects.tsv").stat().st_mtime_ns
    assert main(["demo-data", "--out", "resources/demo", "--config", str(cfg), "--n-subjects", "2"]) == 0
    assert probe.stat().st_mtime_ns == before  # up to date: not regenerated
    assert (out / "subjects.tsv").stat().st_mtime_ns == sheet_time  # Snakemake sees nothing new

    assert (
        main(
            [
                "demo-data",
                "--out",
                "resources/demo",
                "--config",
                str(cfg),
                "--n-subjects",
                "1",
                "--seed",
                "4",
                "--spacing-mm",
                "6",
                "6",
                "6",
            ]
        )
        == 0
    )
    params = json.loads((out / "demo_manifest.json").read_text())["parameters"]
    assert (params["n_subjects"], params["seed"]) == (1, 4)
    assert not (out / "dicom" / "demo02").exists()  # the old cohort was replaced, not mixed in
    assert (out / "dicom" / "demo01" / "T2w" / "IM0010.dcm").read_bytes() != content


def test_bad_config_stops_with_a_message_naming_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "config.yaml", {"n_subject": 2})
    out = ["demo-data", "--out", str(tmp_path / "demo")]
    assert main([*out, "--config", str(cfg)]) == 2
    assert "n_subject" in capsys.readouterr().err
    assert main([*out, "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert main([*out, "--config", str(cfg), "--n-subjects", "0"]) == 2
    assert not (tmp_path / "demo" / "dicom").exists()


def test_audit_commands_call_the_audit_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, tuple[object, ...]]] = []

    def cli_verify(results_dir: Path, manifest: Path | None) -> int:
        calls.append(("verify", (results_dir, manifest)))
        return 1

    def cli_diff(run_a: Path, run_b: Path, out: Path | None) -> int:
        calls.append(("diff", (run_a, run_b, out)))
        return 0

    fake = types.ModuleType("medpipe.audit.verify")
    fake.cli_verify = cli_verify  # type: ignore[attr-defined]
    fake.cli_diff = cli_diff  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "medpipe.audit.verify", fake)
    assert main(["audit", "verify", "results"]) == 1
    assert main(["audit", "verify", "results", "--manifest", "m.json"]) == 1
    assert main(["audit", "diff", "runA", "runB"]) == 0
    assert main(["audit", "diff", "runA", "runB", "--out", "d.md"]) == 0
    assert calls == [
        ("verify", (Path("results"), None)),
        ("verify", (Path("results"), Path("m.json"))),
        ("diff", (Path("runA"), Path("runB"), None)),
        ("diff", (Path("runA"), Path("runB"), Path("d.md"))),
    ]


def test_parser_rejects_incomplete_commands(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for argv in ([], ["audit"], ["audit", "diff", "only-one"], ["demo-data", "--spacing-mm", "1", "2"]):
        with pytest.raises(SystemExit) as exc:
            parser.parse_args(argv)
        assert exc.value.code == 2
    args = parser.parse_args(["demo-data"])
    assert args.out == Path("resources/demo") and args.n_subjects is None and args.config is None
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--version"])
    assert exc.value.code == 0
    assert "medpipe" in capsys.readouterr().out
