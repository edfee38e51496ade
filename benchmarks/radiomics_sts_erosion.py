"""Benchmark: radiomics reproducibility on the 38 STS patients, human masks vs one-voxel-eroded masks.

For every patient in ../shared/data/ibsi_sts/nifti with an MR T1 image and mask, features are
extracted (config/radiomics/mr.yaml, the pipeline's MR params) inside the clinicians' GTV mask
("human") and inside the same mask eroded by one voxel (6-connected structuring element, scipy;
source "eroded"). The per-feature agreement and the per-class retention table come from
medpipe.stats.agreement.reproducibility_report, exactly as in the pipeline.

Usage (from the repository root):
    OMP_NUM_THREADS=1 ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 \
    .venv/bin/python benchmarks/radiomics_sts_erosion.py --out /tmp/sts_erosion --jobs 2 \
        --markdown benchmarks/results/radiomics_sts_erosion.md
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from medpipe.core.io import save_nifti  # noqa: E402
from medpipe.radiomics.extract import collect, extract_features  # noqa: E402
from medpipe.stats.agreement import reproducibility_report  # noqa: E402


def _shared() -> Path:
    return Path(os.environ.get("MEDPIPE_SHARED", REPO.parent / "shared")) / "data" / "ibsi_sts" / "nifti"


def _one(args: tuple[str, Path, Path, Path]) -> tuple[str, float]:
    patient, folder, out, params = args
    subject = patient.replace("_", "")
    image, mask = folder / "MR_T1_image.nii.gz", folder / "MR_T1_mask.nii.gz"
    img = nib.load(str(mask))
    human = np.asarray(img.dataobj) > 0
    eroded = ndimage.binary_erosion(human, structure=ndimage.generate_binary_structure(3, 1))
    eroded_path = save_nifti(eroded.astype(np.uint8), img.affine, out / "masks" / f"{subject}_eroded.nii.gz")
    start = time.perf_counter()
    for source, path in (("human", mask), ("eroded", eroded_path)):
        target = out / "features" / f"sub-{subject}_mask-{source}_features.tsv"
        if not target.exists():  # resume an interrupted benchmark
            extract_features(
                image,
                path,
                target,
                subject=subject,
                source=source,
                image_name="MR_T1",
                params_file=params,
                region="lesion",
            )
    return subject, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", type=Path, default=REPO / "config/radiomics/mr.yaml")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    folders = sorted(p for p in _shared().iterdir() if (p / "MR_T1_mask.nii.gz").exists())
    work = [(p.name, p, args.out, args.params) for p in folders]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        timings = dict(pool.map(_one, work))
    wall = time.perf_counter() - start
    features = collect(sorted((args.out / "features").glob("*.tsv")), args.out / "features.tsv")
    reproducibility_report(
        features,
        args.out / "reproducibility.tsv",
        args.out / "retention_by_class.tsv",
        args.out / "ccc.png",
        source_a="human",
        source_b="eroded",
        cutoff=0.80,
        n_boot=args.n_boot,
        seed=42,
    )
    retention = pd.read_csv(args.out / "retention_by_class.tsv", sep="\t")
    table = pd.read_csv(args.out / "reproducibility.tsv", sep="\t")
    lines = [
        "# Radiomics reproducibility: STS human masks vs one-voxel-eroded masks",
        "",
        f"Command: `{' '.join(['.venv/bin/python', *sys.argv])}`",
        f"Patients: {len(folders)} (MR T1, ../shared/data/ibsi_sts/nifti); params `{args.params.name}`; "
        f"CCC cutoff 0.80, {args.n_boot} bootstrap resamples, seed 42.",
        f"Extraction: {2 * len(folders)} extractions, wall {wall:.0f} s with {args.jobs} worker(s) "
        f"(median {np.median(list(timings.values())) / 2:.1f} s per extraction); "
        f"{platform.processor() or 'cpu'}, {os.cpu_count()} cores visible.",
        "",
        "## Retention by class (CCC >= 0.80)",
        "",
        retention.to_markdown(index=False, floatfmt=".3g"),
        "",
        "## Least reproducible original features (lowest CCC)",
        "",
        table[(table["image_type"] == "original") & (table["status"] == "ok")]
        .nsmallest(10, "ccc")[["feature", "ccc", "ccc_ci_low", "ccc_ci_high", "icc31", "icc21"]]
        .to_markdown(index=False, floatfmt=".3f"),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
