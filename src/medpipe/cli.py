"""Command-line interface: ``medpipe demo-data``, ``sheet``, ``audit verify|diff`` and ``model export|verify``.

Thin over the package: each sub-command parses its arguments, sets up logging
(:func:`medpipe.core.logutil.configure`) and calls one medpipe function. Errors raised as
:class:`medpipe.core.errors.MedpipeError` are reported in one line with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medpipe import __version__
from medpipe.core.errors import ConfigError, MedpipeError
from medpipe.core.logutil import configure

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("config/config.yaml")


def _load_demo_section(path: Path | None) -> dict[str, Any]:
    """The ``demo:`` section of a config file (empty when no file is given and the default is absent)."""
    import yaml

    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return {}
        path = DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError("config file not found", path=path)
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config is not valid YAML: {exc}", path=path) from exc
    section = config.get("demo", {}) if isinstance(config, dict) else {}
    if not isinstance(section, dict):
        raise ConfigError(f"'demo' must be a mapping, got {section!r}", path=path)
    return section


def _cmd_demo_data(args: argparse.Namespace) -> int:
    from medpipe.demo import DemoSettings, generate_demo_cohort

    section = _load_demo_section(args.config)
    for key, value in (("n_subjects", args.n_subjects), ("seed", args.seed), ("spacing_mm", args.spacing_mm)):
        if value is not None:
            section[key] = value
    settings = DemoSettings.from_config(section)
    sheet = generate_demo_cohort(args.out, settings, force=args.force)
    logger.info("subject sheet: %s", sheet)
    return 0


def _cmd_sheet(args: argparse.Namespace) -> int:
    from medpipe.convert.sheet import make_subject_sheet

    make_subject_sheet(args.root, args.out, label=args.label, require=args.require)
    return 0


def _cmd_audit_verify(args: argparse.Namespace) -> int:
    audit = importlib.import_module("medpipe.audit.verify")  # imported here: heavy, and optional for demo-data
    return int(audit.cli_verify(args.results_dir, args.manifest))


def _cmd_audit_diff(args: argparse.Namespace) -> int:
    audit = importlib.import_module("medpipe.audit.verify")
    return int(audit.cli_diff(args.run_a, args.run_b, args.out))


def _cmd_model_export(args: argparse.Namespace) -> int:
    from medpipe.segment.bundle import export_run  # imported here: torch is heavy, and optional for demo-data

    export_run(args.results_dir, args.out, label_name=args.label_name)
    return 0


def _cmd_model_verify(args: argparse.Namespace) -> int:
    from medpipe.segment.bundle import verify_bundle

    digest = verify_bundle(args.bundle)
    logger.info("bundle %s is intact; its id (sha256 of manifest.json): %s", args.bundle, digest)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``medpipe`` argument parser."""
    parser = argparse.ArgumentParser(prog="medpipe", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"medpipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--log-file", type=Path, default=None, help="write the log here instead of stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_demo_data(sub)
    _add_sheet(sub)
    _add_audit(sub)
    _add_model(sub)
    return parser


_SubParsers = argparse._SubParsersAction  # the type of ``ArgumentParser.add_subparsers()``


def _add_demo_data(sub: _SubParsers[argparse.ArgumentParser]) -> None:
    """Add the ``demo-data`` sub-command.

    Parameters
    ----------
    sub
        Sub-parsers of the ``medpipe`` parser.
    """
    demo = sub.add_parser(
        "demo-data",
        help="generate the embedded demo cohort (DICOM + ground truth)",
        description="Generate the synthetic demo cohort; skipped when OUT already holds it.",
    )
    demo.add_argument("--out", type=Path, default=Path("resources/demo"), help="output folder (resources/demo)")
    demo.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"config file whose 'demo:' section gives the defaults ({DEFAULT_CONFIG})",
    )
    demo.add_argument("--n-subjects", type=int, default=None, help="number of subjects (config demo.n_subjects)")
    demo.add_argument("--seed", type=int, default=None, help="random seed (config demo.seed)")
    demo.add_argument(
        "--spacing-mm",
        type=float,
        nargs=3,
        default=None,
        metavar=("X", "Y", "Z"),
        help="voxel size in mm (config demo.spacing_mm)",
    )
    demo.add_argument("--force", action="store_true", help="regenerate even when the cohort is up to date")
    demo.set_defaults(func=_cmd_demo_data)


def _add_sheet(sub: _SubParsers[argparse.ArgumentParser]) -> None:
    """Add the ``sheet`` sub-command.

    Parameters
    ----------
    sub
        Sub-parsers of the ``medpipe`` parser.
    """
    sheet = sub.add_parser(
        "sheet",
        help="write a subject sheet for a folder of subject folders",
        description="One row per sub-folder of ROOT; subject ID = folder name without non-alphanumerics.",
    )
    sheet.add_argument("root", type=Path, metavar="ROOT", help="folder holding one folder per subject")
    sheet.add_argument("--out", type=Path, required=True, help="subject sheet (TSV) to write")
    sheet.add_argument("--label", default=None, help="file name of the human mask inside each subject folder")
    sheet.add_argument(
        "--require",
        action="append",
        default=[],
        metavar="FILE",
        help="file every subject folder must hold (repeatable); folders without it are skipped",
    )
    sheet.set_defaults(func=_cmd_sheet)


def _add_audit(sub: _SubParsers[argparse.ArgumentParser]) -> None:
    """Add the ``audit verify`` and ``audit diff`` sub-commands.

    Parameters
    ----------
    sub
        Sub-parsers of the ``medpipe`` parser.
    """
    audit = sub.add_parser("audit", help="verify or compare pipeline runs")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = audit_sub.add_parser("verify", help="re-hash RESULTS_DIR against its run manifest")
    verify.add_argument("results_dir", type=Path, metavar="RESULTS_DIR")
    verify.add_argument(
        "--manifest", type=Path, default=None, help="run manifest (default: the one inside RESULTS_DIR)"
    )
    verify.set_defaults(func=_cmd_audit_verify)
    diff = audit_sub.add_parser("diff", help="compare two runs file by file and stage by stage")
    diff.add_argument("run_a", type=Path, metavar="RUN_A")
    diff.add_argument("run_b", type=Path, metavar="RUN_B")
    diff.add_argument("--out", type=Path, default=None, help="write the comparison report here")
    diff.set_defaults(func=_cmd_audit_diff)


def _add_model(sub: _SubParsers[argparse.ArgumentParser]) -> None:
    """Add the ``model export`` and ``model verify`` sub-commands.

    Parameters
    ----------
    sub
        Sub-parsers of the ``medpipe`` parser.
    """
    model = sub.add_parser("model", help="export or verify a bundle of trained segmentation models")
    model_sub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    export = model_sub.add_parser(
        "export",
        help="bundle the fold models of a finished run",
        description="Copy every fold's model, sidecar and learning curve, the split, the preprocessing they expect, "
        "a training fingerprint and the CV summary into OUT, with a manifest and a model card.",
    )
    export.add_argument("results_dir", type=Path, metavar="RESULTS_DIR", help="the run's results folder")
    export.add_argument("out", type=Path, metavar="OUT", help="bundle folder to write (must not exist or be empty)")
    export.add_argument(
        "--label-name", default=None, help="name of the segmented structure (the run's config label.name)"
    )
    export.set_defaults(func=_cmd_model_export)
    verify = model_sub.add_parser("verify", help="re-hash a bundle against its manifest")
    verify.add_argument("bundle", type=Path, metavar="BUNDLE")
    verify.set_defaults(func=_cmd_model_verify)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medpipe`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    configure(args.log_file, level=logging.DEBUG if args.verbose else logging.INFO)
    try:
        status: int = args.func(args)
    except MedpipeError as exc:
        logger.error("%s", exc)
        return 2
    return status


if __name__ == "__main__":
    raise SystemExit(main())
