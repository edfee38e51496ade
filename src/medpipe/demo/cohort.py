"""The demo cohort: settings, generation of all subjects, manifest and subject sheet.

Layout under the output folder (``resources/demo`` by default)::

    dicom/demoNN/{T1w,T2w}/IM0001.dcm ...   DICOM MR series with planted fake PHI
    truth/demoNN/                           brainmask, lesion, lesion_parts, biasfield_{T1w,T2w},
                                            T1w_clean (NIfTI + sidecars), t2w_to_t1w_rigid.json,
                                            subject.json (every drawn parameter)
    truth/outcomes.tsv                      simulated binary outcome (medpipe.demo.outcome)
    truth/sites.tsv                         set, site and scanner profile of every subject
    labels/demoNN_lesion.nii.gz             the "human" label (= truth lesion: 1 enhancing rim, 2 necrotic core)
    subjects.tsv                            subject sheet: subject, dicom, label (+ set, site when the
                                            cohort has external subjects)
    phi.json                                every planted PHI string
    demo_manifest.json                      parameters + size and sha256 of every file

The manifest is written last; a folder whose manifest records the same parameters and whose
files are all present with the recorded sizes is up to date and is not regenerated.

External subjects: the last ``n_external`` subjects are acquired on a second scanner whose profile
(``external_shift``: more noise, a non-linear contrast change, a stronger bias field) survives N4 and
z-score normalisation, so the workflow's external-set metrics show a real domain shift. They are written
to the sheet as ``set: external``, ``site: demo-B``; the ``n_test`` subjects before them as ``set: test``,
``site: demo-A`` (an unshifted internal hold-out); the others as ``set: train``, ``site: demo-A``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medpipe import __version__
from medpipe.core.config import section_schema, with_defaults
from medpipe.core.errors import ConfigError, DataError
from medpipe.core.io import atomic_path, write_tsv
from medpipe.core.sidecar import package_versions, sha256_file, write_json
from medpipe.demo.dicom_series import FOV_CENTRE_MM, FOV_MM, make_grid
from medpipe.demo.outcome import write_outcomes
from medpipe.demo.profile_phi import PHI_TOKEN, planted_texts
from medpipe.demo.subject import REFERENCE_SCANNER, ScannerProfile, generate_subject

logger = logging.getLogger(__name__)

MANIFEST = "demo_manifest.json"
#: Marker proving the folder's dicom/, truth/ and labels/ belong to the generator (safe to replace).
MARKER = ".medpipe_demo"
OWNED = ("dicom", "truth", "labels")
#: Bump when the generated content changes for the same settings.
#: 2: truth/outcomes.tsv (simulated outcome); 3: external subjects (n_external, external_shift), truth/sites.tsv,
#: scanner profile in subject.json (site-A pixel data unchanged); 4: the human label holds the classes (1 rim, 2 core),
#: and an identifier is planted in every PS3.15 basic-profile attribute of the DICOM series (phi.json "profile").
GENERATOR_VERSION = 4
#: Sheet ``set`` and ``site`` of the demo's own subjects (scanner A) and of its external ones (scanner B).
INTERNAL_SITE = ("train", "demo-A")
EXTERNAL_SITE = ("external", "demo-B")
TEST_SITE = ("test", "demo-A")


def _default(key: str) -> Any:
    """Schema default of ``demo.<key>`` (config/schemas/config.schema.yaml, the one place it is kept)."""
    return section_schema("demo")["properties"][key]["default"]


def _spacing(value: Any) -> tuple[float, float, float]:
    return tuple(float(v) for v in value)  # type: ignore[return-value]


def _profile(value: Any) -> ScannerProfile:
    """``demo.external_shift`` (a mapping; missing keys take the schema defaults) as a :class:`ScannerProfile`."""
    if isinstance(value, ScannerProfile):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"demo.external_shift: must be a mapping, got {value!r}")
    filled = with_defaults(value, "demo", "external_shift")
    return ScannerProfile(**{key: float(v) for key, v in filled.items()})


#: How each ``demo:`` key is read from a config section.
_CONVERT: dict[str, Any] = {
    "n_subjects": int,
    "seed": int,
    "spacing_mm": _spacing,
    "n_external": int,
    "n_test": int,
    "external_shift": _profile,
}


@dataclass(frozen=True)
class DemoSettings:
    """Parameters of the demo cohort (config section ``demo:``); unset fields take the schema defaults."""

    n_subjects: int = field(default_factory=lambda: int(_default("n_subjects")))
    seed: int = field(default_factory=lambda: int(_default("seed")))
    spacing_mm: tuple[float, float, float] = field(default_factory=lambda: _spacing(_default("spacing_mm")))
    n_external: int = field(default_factory=lambda: int(_default("n_external")))
    n_test: int = field(default_factory=lambda: int(_default("n_test")))
    external_shift: ScannerProfile = field(default_factory=lambda: _profile(_default("external_shift")))

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None) -> DemoSettings:
        """Build from the ``demo:`` config section, raising :class:`ConfigError` naming a bad key."""
        section = dict(section or {})
        known = sorted(section_schema("demo")["properties"])
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise ConfigError(f"demo: unknown key(s) {unknown}; allowed: {', '.join(known)}")
        out = cls(**{key: _CONVERT[key](value) for key, value in section.items()})
        out.validate()
        return out

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the key and value when a setting is outside the schema's range."""
        section = {
            "n_subjects": self.n_subjects,
            "seed": self.seed,
            "spacing_mm": list(self.spacing_mm),
            "n_external": self.n_external,
            "n_test": self.n_test,
            "external_shift": self.external_shift.describe(),
        }
        with_defaults(section, "demo")
        if self.n_external + self.n_test >= self.n_subjects:
            raise ConfigError(
                f"demo.n_external: {self.n_external} (+ demo.n_test: {self.n_test}) must be smaller than "
                f"demo.n_subjects ({self.n_subjects}): the cohort needs at least one site-A (training) subject"
            )

    def sites(self) -> dict[str, tuple[str, str]]:
        """Subject -> (sheet ``set``, ``site``): the last ``n_external`` subjects are external."""
        subjects = subject_ids(self.n_subjects)
        first_external = self.n_subjects - self.n_external
        first_test = first_external - self.n_test
        return {
            s: EXTERNAL_SITE if i >= first_external else TEST_SITE if i >= first_test else INTERNAL_SITE
            for i, s in enumerate(subjects)
        }

    def scanner(self, subject: str) -> ScannerProfile:
        """The scanner profile ``subject`` is acquired with (:data:`REFERENCE_SCANNER` on site A)."""
        return self.external_shift if self.sites()[subject] == EXTERNAL_SITE else REFERENCE_SCANNER

    def parameters(self) -> dict[str, Any]:
        """Everything that determines the generated bytes (recorded in the manifest)."""
        return {
            "generator_version": GENERATOR_VERSION,
            "medpipe_version": __version__,
            "n_subjects": self.n_subjects,
            "seed": self.seed,
            "spacing_mm": [float(s) for s in self.spacing_mm],
            "n_external": self.n_external,
            "n_test": self.n_test,
            "external_shift": self.external_shift.describe(),
            "fov_mm": list(FOV_MM),
            "fov_centre_ras_mm": list(FOV_CENTRE_MM),
            "template": "nilearn MNI152 ICBM 2009a symmetric, 1 mm (brain mask, GM, WM)",
            "software": package_versions(("nilearn", "numpy", "scipy", "pydicom", "nibabel")),
        }


def subject_ids(n_subjects: int) -> list[str]:
    """Subject IDs of a cohort of ``n_subjects``: ``demo01``, ``demo02`` ..."""
    return [f"demo{i:02d}" for i in range(1, n_subjects + 1)]


def cohort_is_current(out_dir: str | Path, settings: DemoSettings) -> bool:
    """True when ``out_dir`` holds a complete cohort generated with ``settings``."""
    manifest = Path(out_dir) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if data.get("parameters") != settings.parameters():
        return False
    for rel, info in data.get("files", {}).items():
        path = Path(out_dir) / rel
        if not path.is_file() or path.stat().st_size != info.get("size"):
            return False
    return True


def _sheet_path(path: Path) -> str:
    """Path for the subject sheet: relative to the working directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def write_subject_sheet(out_dir: Path, subjects: list[str], sites: Mapping[str, tuple[str, str]] | None = None) -> Path:
    """Write ``subjects.tsv`` for the generated cohort (only when it changed).

    Columns subject, dicom, label, and ``set``, ``site`` when ``sites`` (subject -> (set, site), see
    :meth:`DemoSettings.sites`) is given.
    """
    rows = ["subject\tdicom\tlabel" + ("\tset\tsite" if sites else "")]
    for s in subjects:
        label = out_dir / "labels" / f"{s}_lesion.nii.gz"
        extra = "".join(f"\t{v}" for v in sites[s]) if sites else ""
        rows.append(f"{s}\t{_sheet_path(out_dir / 'dicom' / s)}\t{_sheet_path(label)}{extra}")
    path = out_dir / "subjects.tsv"
    text = "\n".join(rows) + "\n"
    if path.is_file() and path.read_text() == text:
        return path  # unchanged: keep the timestamp so Snakemake sees nothing new
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _sheet_sites(settings: DemoSettings) -> dict[str, tuple[str, str]] | None:
    """The sheet's set/site columns: only for a cohort with external subjects (else the sheet is unchanged)."""
    return settings.sites() if settings.n_external or settings.n_test else None


def write_sites(truth_dir: Path, settings: DemoSettings) -> Path:
    """Write ``truth_dir/sites.tsv``: subject, set, site and the scanner profile each subject was acquired with."""
    rows = []
    for subject, (subset, site) in settings.sites().items():
        rows.append({"subject": subject, "set": subset, "site": site, **settings.scanner(subject).describe()})
    return write_tsv(pd.DataFrame(rows), truth_dir / "sites.tsv")


def _prepare(out_dir: Path) -> Path:
    """Check the folder may be (re)written, clear old generator output, return the staging folder."""
    out_dir.mkdir(parents=True, exist_ok=True)
    owned = (out_dir / MARKER).exists() or (out_dir / MANIFEST).exists()
    present = [name for name in OWNED if (out_dir / name).exists()]
    if present and not owned:
        raise DataError(
            f"{present} exist but were not made by medpipe demo-data; choose an empty --out folder",
            path=out_dir,
        )
    (out_dir / MARKER).write_text("folder written by `medpipe demo-data`\n")
    (out_dir / MANIFEST).unlink(missing_ok=True)
    staging = out_dir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def generate_demo_cohort(out_dir: str | Path, settings: DemoSettings, *, force: bool = False) -> Path:
    """Generate the demo cohort in ``out_dir`` (skipped when already current) and return its subject sheet.

    Parameters
    ----------
    out_dir
        Output folder, e.g. ``resources/demo``.
    settings
        Cohort size, seed, voxel spacing, number of external subjects and their scanner profile.
    force
        Regenerate even when the folder is up to date.
    """
    from medpipe.demo.anatomy import load_template

    settings.validate()
    out = Path(out_dir)
    subjects = subject_ids(settings.n_subjects)
    if not force and cohort_is_current(out, settings):
        logger.info(
            "demo cohort in %s is up to date (%d subjects, seed %d): nothing to do",
            out,
            settings.n_subjects,
            settings.seed,
        )
        return write_subject_sheet(out, subjects, _sheet_sites(settings))
    start = time.perf_counter()
    staging = _prepare(out)
    grid = make_grid(settings.spacing_mm)
    logger.info(
        "generating %d demo subjects (%d external, seed %d) on grid %s at %s mm",
        settings.n_subjects,
        settings.n_external,
        settings.seed,
        grid.shape,
        list(settings.spacing_mm),
    )
    template = load_template()
    uid_key = json.dumps(settings.parameters(), sort_keys=True)
    phi: dict[str, dict[str, str]] = {}
    for index, subject in enumerate(subjects, start=1):
        scanner = settings.scanner(subject)
        phi[subject] = generate_subject(template, grid, index, settings.seed, staging, uid_key, scanner).phi
    write_outcomes(staging / "truth", subjects, settings.seed)
    write_sites(staging / "truth", settings)
    for name in OWNED:
        shutil.rmtree(out / name, ignore_errors=True)
        os.replace(staging / name, out / name)
    staging.rmdir()
    profile = planted_texts()
    strings = sorted({v for rec in phi.values() for v in rec.values()} | set(profile))
    note = (
        "Fake PHI planted in the DICOM headers: the patient data of `subjects`, and `profile`, one value in every "
        "attribute of the PS3.15 basic confidentiality profile the generator does not set itself (UIDs left out: "
        "the Retain UIDs Option keeps them) and in two private groups (medpipe.demo.profile_phi). Every value except "
        "the dates and times contains the token."
    )
    record = {"token": PHI_TOKEN, "note": note, "subjects": phi, "profile": profile, "all_strings": strings}
    write_json(record, out / "phi.json")
    sheet = write_subject_sheet(out, subjects, _sheet_sites(settings))
    files = {
        str(p.relative_to(out)): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for name in OWNED
        for p in sorted((out / name).rglob("*"))
        if p.is_file()
    }
    files["phi.json"] = {"size": (out / "phi.json").stat().st_size, "sha256": sha256_file(out / "phi.json")}
    write_json({"parameters": settings.parameters(), "subjects": subjects, "files": files}, out / MANIFEST)
    logger.info("demo cohort written to %s in %.1f s (%d files)", out, time.perf_counter() - start, len(files))
    return sheet
