"""One synthetic demo subject: anatomy, lesion, head motion, bias fields, noise, DICOM and truth.

Every random choice comes from ``numpy.random.default_rng([seed, index])``, so subject ``demo03``
is the same whatever the cohort size, and the same seed gives byte-identical files. An external
subject's :class:`ScannerProfile` is applied deterministically after the same draws (contrast, bias
amplitude and noise level are rescaled, nothing more is drawn), so a site-A subject does not depend on
how many external subjects the cohort has.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi
from scipy.spatial.transform import Rotation

from medpipe.core.geometry import LPS_RAS, Geometry
from medpipe.core.io import save_nifti
from medpipe.core.sidecar import write_json, write_sidecar
from medpipe.demo.anatomy import SIGNAL, Template, pick_lesion_centre, sample_template, tissue_signal
from medpipe.demo.dicom_series import (
    FOV_CENTRE_MM,
    DemoGrid,
    SeriesInfo,
    StudyInfo,
    demo_uid,
    write_series,
)
from medpipe.demo.lesion import Lesion, lesion_level_on_grid, make_lesion
from medpipe.demo.profile_phi import PHI_TOKEN

logger = logging.getLogger(__name__)

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

#: Signal units written to DICOM: T1w white matter and T2w CSF are about this value.
SIGNAL_SCALE = 1000.0
#: Sequence name -> (series number, TE ms, TR ms, flip angle deg).
SEQUENCES: dict[str, tuple[int, float, float, float]] = {
    "T1w": (1, 2.3, 2000.0, 9.0),
    "T2w": (2, 90.0, 3200.0, 90.0),
}
#: Gaussian point-spread function of the simulated acquisition (sigma, voxels).
PSF_SIGMA_VOX = 0.5


@dataclass(frozen=True)
class ScannerProfile:
    """How a scanner's images differ from the demo's reference (site-A) scanner; the identity by default.

    Attributes
    ----------
    noise_factor
        Multiplies the acquisition noise SD.
    gamma
        Contrast change of the clean signal: ``SIGNAL_SCALE * (x / SIGNAL_SCALE) ** gamma``.
    bias_factor
        Multiplies the bias-field amplitude.
    """

    noise_factor: float = 1.0
    gamma: float = 1.0
    bias_factor: float = 1.0

    def contrast(self, clean: F32) -> F32:
        """The clean signal as this scanner renders it (unchanged, same array, when ``gamma`` is 1)."""
        if self.gamma == 1.0:
            return clean
        x = np.maximum(clean, np.float32(0.0)) / np.float32(SIGNAL_SCALE)
        return (np.power(x, np.float32(self.gamma)) * np.float32(SIGNAL_SCALE)).astype(np.float32)

    def describe(self) -> dict[str, float]:
        """The profile as recorded in ``subject.json`` and ``truth/sites.tsv``."""
        return {"noise_factor": self.noise_factor, "gamma": self.gamma, "bias_factor": self.bias_factor}


#: The site-A scanner: images exactly as the generator made them before external subjects existed.
REFERENCE_SCANNER = ScannerProfile()


@dataclass(frozen=True)
class SubjectResult:
    """Paths written for one subject (relative to the staging root)."""

    subject: str
    phi: dict[str, str]
    files: list[Path]


def rigid(rotation_deg: F64, translation_mm: F64, centre_mm: F64) -> F64:
    """4x4 RAS map: rotate about ``centre_mm`` (x, y, z Euler angles, degrees), then translate."""
    m = np.eye(4)
    m[:3, :3] = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    m[:3, 3] = centre_mm + translation_mm - m[:3, :3] @ centre_mm
    return m


def bias_field(rng: np.random.Generator, shape: tuple[int, int, int], amplitude: float) -> F32:
    """Smooth field ``exp(p)``: ``p`` a random Legendre polynomial of degree <= 3, max |p| = amplitude."""
    basis = [np.polynomial.legendre.legvander(np.linspace(-1.0, 1.0, n), 3).T for n in shape]
    log = np.zeros(shape, dtype=np.float32)
    for a in range(4):
        for b in range(4 - a):
            plane = np.outer(basis[0][a], basis[1][b]).astype(np.float32)
            profile = np.zeros(shape[2])
            for c in range(4 - a - b):
                if a + b + c > 0:
                    profile += rng.normal(0.0, 1.0 / (a + b + c)) * basis[2][c]
            log += plane[:, :, None] * profile.astype(np.float32)[None, None, :]
    log -= log.mean()
    log *= amplitude / max(float(np.abs(log).max()), 1e-9)
    # quantised to 1/4096: exact in float32 and compresses well; the stored field is the applied one
    return (np.rint(np.exp(log) * 4096.0) / 4096.0).astype(np.float32)


def plant_phi(subject: str, rng: np.random.Generator) -> dict[str, str]:
    """Fake PHI for one subject; every value but the birth date contains :data:`PHI_TOKEN`."""
    nn = subject[-2:]
    birth = f"19{rng.integers(10, 40):02d}{rng.integers(1, 13):02d}{rng.integers(1, 29):02d}"
    return {
        "PatientName": f"{PHI_TOKEN}{nn}^Jane{nn}",
        "PatientID": f"{PHI_TOKEN}-ID-{nn}",
        "PatientBirthDate": birth,
        "AccessionNumber": f"{PHI_TOKEN}A{nn}",
        "InstitutionName": f"{PHI_TOKEN} General Hospital {nn}",
        "ReferringPhysicianName": f"{PHI_TOKEN}^Referrer{nn}",
        "OperatorsName": f"{PHI_TOKEN}^Operator{nn}",
    }


def _synthesise(
    template: Template,
    grid: DemoGrid,
    lesion: Lesion,
    world_to_template: F64,
    acquisition_to_subject: F64,
    sequence: str,
    layer_factor: float,
) -> tuple[F32, npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """Clean signal (SIGNAL_SCALE units), brain mask and lesion parts (1 rim, 2 core, 3 edema)."""
    maps = sample_template(template, grid.affine, grid.shape, world_to_template @ acquisition_to_subject, sequence)
    sig = tissue_signal(maps, sequence, layer_factor)
    level = lesion_level_on_grid(lesion, grid.affine, grid.shape, acquisition_to_subject)
    brain = maps.brain > 0.5
    parts = np.zeros(grid.shape, dtype=np.uint8)
    parts[(level < lesion.edema_level) & brain] = 3
    parts[(level < 1.0) & brain] = 1
    parts[(level < lesion.core_level) & brain] = 2
    s = SIGNAL[sequence]
    edema = parts == 3
    sig[edema] = 0.4 * sig[edema] + 0.6 * s["edema"]
    sig[parts == 1] = s["rim"]
    sig[parts == 2] = s["core"]
    clean = ndi.gaussian_filter(sig, PSF_SIGMA_VOX) * SIGNAL_SCALE
    return clean.astype(np.float32), brain.astype(np.uint8), parts


def _acquire(clean: F32, bias: F32, noise_sigma: float, rng: np.random.Generator) -> npt.NDArray[np.uint16]:
    """Biased, Rician-noisy magnitude image rounded to uint16."""
    real = clean * bias + np.float32(noise_sigma) * rng.standard_normal(clean.shape, dtype=np.float32)
    imag = np.float32(noise_sigma) * rng.standard_normal(clean.shape, dtype=np.float32)
    mag = np.sqrt(real * real + imag * imag)
    return np.clip(np.rint(mag), 0, 65535).astype(np.uint16)


def _transform_record(motion: F64, rot: F64, trans: F64, centre: F64) -> dict[str, Any]:
    inv = np.asarray(np.linalg.inv(motion), dtype=np.float64)

    def _m(a: F64) -> list[list[float]]:
        return [[round(float(v), 9) for v in row] for row in a]

    return {
        "description": (
            "Rigid head motion between the sequences. Both series share one DICOM grid; the T2w content is "
            "the T1w anatomy moved by 'motion_t1w_to_t2w'. 'world_t2w_to_t1w' maps a point of the T2w image "
            "(RAS mm) to the same anatomical point in the T1w image: p_T1w = world_t2w_to_t1w @ p_T2w."
        ),
        "space": "RAS mm (world coordinates of the DICOM grid, LPS flipped in x and y)",
        "world_t2w_to_t1w": _m(inv),
        "motion_t1w_to_t2w": _m(motion),
        "rotation_deg_xyz": [round(float(v), 6) for v in rot],
        "rotation_convention": "scipy Rotation.from_euler('xyz', degrees=True), about centre_mm",
        "translation_mm": [round(float(v), 6) for v in trans],
        "centre_mm": [round(float(v), 6) for v in centre],
        "ants_fixed_t1w_to_moving_t2w_lps": _m(LPS_RAS @ motion @ LPS_RAS),
        "ants_note": "ANTs registration of moving T2w onto fixed T1w recovers this LPS matrix (fixed -> moving).",
    }


@dataclass(frozen=True)
class _SubjectDraws:
    """Random parameters of one subject that do not depend on the sequence (drawn in a fixed order)."""

    scale: F64
    pose_deg: F64
    shift: F64
    world_to_template: F64
    layer_factor: float
    radius: float
    lesion: Lesion
    rot: F64
    trans: F64
    motion: F64


def _draw_subject(template: Template, rng: np.random.Generator, centre: F64) -> _SubjectDraws:
    """Draw head size and pose, head layer, lesion and T2w head motion (this order fixes the RNG stream).

    Parameters
    ----------
    template
        MNI template the anatomy is sampled from (lesion site).
    rng
        The subject's generator.
    centre
        Centre (RAS mm) of the scaling and of the rotations.

    Returns
    -------
    _SubjectDraws
        Every sequence-independent draw, and the transforms built from them.
    """
    scale = 0.97 * rng.uniform(0.95, 1.05, size=3)
    pose_deg = rng.uniform(-4.0, 4.0, size=3)
    shift = rng.uniform(-4.0, 4.0, size=3)
    scaling = np.diag([*scale, 1.0])
    scaling[:3, 3] = centre - scale * centre
    subject_from_template = rigid(pose_deg, shift, centre) @ scaling
    world_to_template = np.linalg.inv(subject_from_template)
    layer_factor = float(rng.uniform(0.85, 1.15))
    radius = float(rng.uniform(8.0, 16.0))
    lesion_centre = (subject_from_template @ np.append(pick_lesion_centre(template, rng, radius), 1.0))[:3]
    lesion = make_lesion(rng, lesion_centre, radius)
    rot = rng.uniform(-6.0, 6.0, size=3)
    trans = rng.uniform(-6.0, 6.0, size=3)
    motion = rigid(rot, trans, centre)
    return _SubjectDraws(scale, pose_deg, shift, world_to_template, layer_factor, radius, lesion, rot, trans, motion)


def _write_sequence(
    template: Template,
    grid: DemoGrid,
    draws: _SubjectDraws,
    rng: np.random.Generator,
    sequence: str,
    study: StudyInfo,
    root: Path,
    record: dict[str, Any],
    scanner: ScannerProfile = REFERENCE_SCANNER,
) -> list[Path]:
    """Synthesise and acquire one sequence; write its DICOM series, truth files and (T1w) the label.

    Parameters
    ----------
    template, grid
        Anatomy template and acquisition grid.
    draws
        The subject's sequence-independent draws.
    rng
        The subject's generator (bias field and noise are drawn from it, in this order).
    sequence
        A key of :data:`SEQUENCES`.
    study
        Study identity of the subject (PHI, UIDs, date).
    root
        Staging root (``dicom/``, ``truth/`` and ``labels/`` are written below it).
    record
        The subject record (``subject.json``); noise level and lesion volume are added in place.
    scanner
        The scanner's profile, applied after the draws: contrast of the clean signal, bias amplitude and
        noise SD (the stored clean image, bias field and noise level are the applied ones).

    Returns
    -------
    list of Path
        Every file written.
    """
    subject = str(record["subject"])
    number, te, tr, flip = SEQUENCES[sequence]
    geom = Geometry(grid.shape, grid.affine)
    to_subject = np.eye(4) if sequence == "T1w" else np.asarray(np.linalg.inv(draws.motion), dtype=np.float64)
    clean, brain, parts = _synthesise(
        template, grid, draws.lesion, draws.world_to_template, to_subject, sequence, draws.layer_factor
    )
    clean = scanner.contrast(clean)
    bias = bias_field(rng, grid.shape, float(rng.uniform(0.15, 0.3)) * scanner.bias_factor)
    noise = float(rng.uniform(0.02, 0.035)) * SIGNAL_SCALE * scanner.noise_factor
    image = _acquire(clean, bias, noise, rng)
    record[f"noise_sigma_{sequence}"] = round(noise, 6)
    series = SeriesInfo(sequence, number, demo_uid(study.uid_key, subject, sequence), te, tr, flip)
    files = write_series(image, grid, root / "dicom" / subject / sequence, study, series)
    outputs: dict[str, tuple[npt.NDArray[Any], str]] = {f"biasfield_{sequence}.nii.gz": (bias, "float32")}
    if sequence == "T1w":
        lesion_mask = ((parts == 1) | (parts == 2)).astype(np.uint8)
        record["lesion"]["volume_ml"] = round(float(lesion_mask.sum() * np.prod(grid.spacing)) / 1000, 4)
        outputs |= {
            "brainmask.nii.gz": (brain, "uint8"),
            "lesion.nii.gz": (lesion_mask, "uint8"),
            "lesion_parts.nii.gz": (parts, "uint8"),
            "T1w_clean.nii.gz": (clean, "float32"),
        }
        # The human label holds the two classes (1 enhancing rim, 2 necrotic core); a one-structure import
        # (label.classes unset) reads every non-zero voxel as the lesion.
        label_map = np.where(lesion_mask > 0, parts, 0).astype(np.uint8)
        label = root / "labels" / f"{subject}_lesion.nii.gz"
        files += _save(label_map, "uint8", label, geom, subject, {"what": "human lesion label (1 rim, 2 core)"})
    for name, (data, dtype) in outputs.items():
        files += _save(data, dtype, root / "truth" / subject / name, geom, subject, {"what": name.split(".")[0]})
    return files


def generate_subject(
    template: Template,
    grid: DemoGrid,
    index: int,
    seed: int,
    root: Path,
    uid_key: str,
    scanner: ScannerProfile = REFERENCE_SCANNER,
) -> SubjectResult:
    """Synthesise subject ``demo{index:02d}`` and write DICOM, truth and label under ``root``.

    ``scanner`` is the profile of the scanner it is acquired on (:data:`REFERENCE_SCANNER`: site A).
    """
    subject = f"demo{index:02d}"
    rng = np.random.default_rng([seed, index])
    centre = np.asarray(FOV_CENTRE_MM, dtype=np.float64)
    draws = _draw_subject(template, rng, centre)
    phi = plant_phi(subject, rng)
    study = StudyInfo(
        phi=phi,
        study_uid=demo_uid(uid_key, subject, "study"),
        frame_of_reference_uid=demo_uid(uid_key, subject, "frame"),
        study_date=f"2021{(index - 1) % 12 + 1:02d}15",
        uid_key=uid_key,
    )
    truth = root / "truth" / subject
    record: dict[str, Any] = {
        "subject": subject,
        "scale_xyz": draws.scale.round(6).tolist(),
        "pose_deg_xyz": draws.pose_deg.round(6).tolist(),
        "shift_mm": draws.shift.round(6).tolist(),
        "head_layer_factor": round(draws.layer_factor, 6),
        "lesion": draws.lesion.describe(),
        "scanner": scanner.describe(),
    }
    files: list[Path] = []
    for sequence in SEQUENCES:
        files += _write_sequence(template, grid, draws, rng, sequence, study, root, record, scanner)
    record["noise"] = "Rician (Gaussian noise on real and imaginary channels), sigma in DICOM units"
    transform = _transform_record(draws.motion, draws.rot, draws.trans, centre)
    files.append(write_json(transform, truth / "t2w_to_t1w_rigid.json"))
    files.append(write_json(record, truth / "subject.json"))
    logger.info(
        "%s: lesion radius %.1f mm, %.1f ml; T2w motion %s deg, %s mm",
        subject,
        draws.radius,
        record["lesion"]["volume_ml"],
        draws.rot.round(1).tolist(),
        draws.trans.round(1).tolist(),
    )
    return SubjectResult(subject, phi, files)


def _save(
    data: npt.NDArray[Any], dtype: str, path: Path, geom: Geometry, subject: str, parameters: dict[str, Any]
) -> list[Path]:
    save_nifti(data, geom.affine, path, dtype=dtype)
    side = write_sidecar(
        path,
        stage="demo",
        subject=subject,
        parameters=parameters,
        geometry=geom,
        packages=("nilearn", "pydicom", "scipy"),
    )
    return [path, side]
