"""N4 and skull-stripping benchmark on real data (default medpipe settings).

* N4 on dcm_qa_xa30 series 5 (raw, Ref/5_*.nii): Pearson correlation with series 6 (scanner-normalised,
  Ref/6_*.nii) inside the head (Otsu head mask of series 6), raw vs corrected; runtime.
* deepbet on Colin27 (vs ch2bet > 0) and the ITK KmeansTest pair: Dice for erode_mm = 0 (deepbet's own mask)
  and the default 1.0, and the runtime per case (CPU, 1 thread).

Run (repository root): OMP_NUM_THREADS=1 ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 \
    .venv/bin/python benchmarks/preprocess_n4_skullstrip.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medpipe.preprocess.n4 import foreground_mask, n4_correct
from medpipe.preprocess.skullstrip import skull_strip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = parser.parse_args()
    root = Path(args.shared)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ref = root / "dcm_qa_xa30" / "Ref"
        raw_path = next(ref.glob("5_*.nii"))
        norm = np.asarray(nib.load(next(ref.glob("6_*.nii"))).dataobj, dtype=np.float64)
        raw = np.asarray(nib.load(raw_path).dataobj, dtype=np.float64)
        t0 = time.perf_counter()
        n4_correct(
            raw_path,
            f"{tmp}/n4.nii.gz",
            f"{tmp}/f.nii.gz",
            f"{tmp}/q.png",
            subject="xa30",
            settings={},
            seed=1,
        )
        seconds = time.perf_counter() - t0
        corrected = nib.load(f"{tmp}/n4.nii.gz").get_fdata()
        head = foreground_mask(norm).astype(bool)
        print("| N4 on XA30 series 5 | r with series 6 inside head | seconds |\n|---|---|---|")
        print(f"| raw | {np.corrcoef(raw[head], norm[head])[0, 1]:.4f} | |")
        print(f"| N4 corrected | {np.corrcoef(corrected[head], norm[head])[0, 1]:.4f} | {seconds:.1f} |")
        print(f"\n(head mask: {int(head.sum())} voxels)\n")
        print("| case | erode_mm | Dice | seconds |\n|---|---|---|---|")
        cases = [
            ("Colin27 ch2", "colin27/ch2.nii.gz", "colin27/ch2bet.nii.gz"),
            (
                "ITK KmeansTest",
                "itk_kmeans/KmeansTest_T1UCharRaw.nii.gz",
                "itk_kmeans/KmeansTest_T1RawSkullStrip.nii.gz",
            ),
        ]
        for name, image, reference in cases:
            truth = np.asarray(nib.load(root / reference).dataobj) > 0
            for erode in (0.0, 1.0):
                t0 = time.perf_counter()
                skull_strip(
                    root / image,
                    f"{tmp}/m.nii.gz",
                    f"{tmp}/m.png",
                    subject="bench",
                    settings={"method": "deepbet", "erode_mm": erode},
                )
                seconds = time.perf_counter() - t0
                mask = np.asarray(nib.load(f"{tmp}/m.nii.gz").dataobj) > 0
                d = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
                print(f"| {name} | {erode} | {d:.4f} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
