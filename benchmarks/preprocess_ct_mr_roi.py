"""CT -> MR T1 registration variants on the STS patients: is the 0.85 tumour-mask Dice reachable?

Companion of ``preprocess_registration.py`` (same perturbations: seed ``100 + case number``). The CT is
moved by a known random rigid transform and registered to the MR with ANTs (rigid, Mattes MI), this
time with the metric restricted to a neighbourhood of the MR tumour (``--margin`` mm around the mask;
a very large margin means the whole field of view) and optionally on a soft-tissue CT window
(-200..300 HU, so bone and air do not dominate the mutual information). The CT tumour mask is carried
through the found transform onto the MR grid and scored against the MR tumour mask (Dice).

Run (repository root)::

    ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 .venv/bin/python benchmarks/preprocess_ct_mr_roi.py \
        --margin 15 30 1000 --window none soft
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_registration import random_rigid

from medpipe.core.determinism import ants_deterministic
from medpipe.core.io import nib_to_ants
from medpipe.core.overlap import dice_score
from medpipe.preprocess.coregister import _initial_transform, apply_linear_transform


def register_case(root: Path, case: str, margin: float, window: str) -> float:
    """Dice of the registered CT tumour mask against the MR tumour mask."""
    import ants

    mr = nib.load(root / case / "MR_T1_image.nii.gz")
    ref = np.asarray(nib.load(root / case / "MR_T1_mask.nii.gz").dataobj) > 0
    ct = nib.load(root / case / "CT_image.nii.gz")
    ct_mask = nib.load(root / case / "CT_mask.nii.gz")
    as_float = nib.Nifti1Image(np.asarray(ct_mask.dataobj).astype(np.float32), ct_mask.affine)
    moved_ct, _ = random_rigid(ct, np.random.default_rng(100 + int(case[-3:])), default=-1000.0)
    moved_mask, _ = random_rigid(as_float, np.random.default_rng(100 + int(case[-3:])))
    moved_mask = nib.Nifti1Image((np.asarray(moved_mask.dataobj) > 0.5).astype(np.float32), moved_mask.affine)
    if window == "soft":
        moved_ct = nib.Nifti1Image(np.clip(np.asarray(moved_ct.dataobj, np.float32), -200, 300), moved_ct.affine)
    spacing = np.asarray(mr.header.get_zooms()[:3], float)
    roi = (ndimage.distance_transform_edt(~ref, sampling=spacing) <= margin).astype(np.float32)
    fixed, moving = nib_to_ants(mr), nib_to_ants(moved_ct)
    with tempfile.TemporaryDirectory() as tmp:
        init = _initial_transform(fixed, moving, "geometry", Path(tmp))
        ants_deterministic(3)
        result = ants.registration(
            fixed=fixed,
            moving=moving,
            type_of_transform="Rigid",
            initial_transform=init,
            mask=nib_to_ants(nib.Nifti1Image(roi, mr.affine)),
            aff_metric="mattes",
            aff_iterations=(200, 200, 100),
            aff_shrink_factors=(4, 2, 1),
            aff_smoothing_sigmas=(2, 1, 0),
            aff_random_sampling_rate=0.25,
            outprefix=f"{tmp}/r_",
        )
        warped = apply_linear_transform(moved_mask, mr, result["fwdtransforms"][0], interpolation="label") > 0
    return dice_score(warped, ref)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    parser.add_argument("--margin", type=float, nargs="+", default=[15.0, 30.0, 1000.0])
    parser.add_argument("--window", nargs="+", choices=["none", "soft"], default=["none", "soft"])
    args = parser.parse_args()
    root = Path(args.shared) / "ibsi_sts" / "nifti"
    cases = sorted(p.name for p in root.iterdir() if (p / "CT_image.nii.gz").exists())
    print(f"| margin (mm) | CT window | {' | '.join(cases)} | cases >= 0.85 |")
    print(f"|---|---|{'---|' * len(cases)}---|")
    for margin in args.margin:
        for window in args.window:
            scores = [register_case(root, c, margin, window) for c in cases]
            print(
                f"| {margin:g} | {window} | {' | '.join(f'{d:.3f}' for d in scores)} | "
                f"{sum(d >= 0.85 for d in scores)}/{len(scores)} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
