"""One STS case's radiomics through medpipe (:func:`medpipe.radiomics.extract.extract_features`: IBSI processing,
the feature table with IBSI-1 codes, IBSI-2 columns and provenance) or through bare pyradiomics with the same
settings (``RadiomicsFeatureExtractor`` on the same params, resampling to the same spacing with the same
interpolator). ``--repeat N`` runs N extractions in one process (per-case cost without the
process start-up and imports). Timed side by side as whole processes,
A (``--impl medpipe``) and B (``--impl pyradiomics``) in turn, 5 runs each, the ratio taken pair by pair; results in
``benchmarks/results/radiomics_overhead.md``.
"""

from __future__ import annotations

import argparse
import copy
import logging
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--impl", choices=["medpipe", "pyradiomics"], required=True)
    ap.add_argument("--case", default="STS_001")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "ibsi_sts" / "nifti"))
    ap.add_argument("--params", default=str(REPO / "config" / "radiomics" / "mr.yaml"))
    ap.add_argument("--spacing", type=float, help="override the resampling spacing (mm, isotropic)")
    ap.add_argument("--repeat", type=int, default=1, help="extractions in one process (amortises start-up)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    image = Path(args.data) / args.case / "MR_T1_image.nii.gz"
    mask = Path(args.data) / args.case / "MR_T1_mask.nii.gz"
    params = yaml.safe_load(Path(args.params).read_text())
    if args.spacing:
        params["medpipe"]["spacing_mm"] = [args.spacing] * 3
    for _ in range(args.repeat):
        _extract(args, image, mask, params)


def _extract(args: argparse.Namespace, image: Path, mask: Path, params: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        if args.impl == "medpipe":
            from medpipe.radiomics.extract import extract_features

            path = Path(tmp) / "params.yaml"
            path.write_text(yaml.safe_dump(params))
            extract_features(
                image,
                mask,
                Path(tmp) / "f.tsv",
                subject=args.case,
                source="human",
                image_name="T1",
                params_file=path,
                region="lesion",
            )
        else:
            from radiomics import featureextractor

            bare = copy.deepcopy(params)
            ibsi = bare.pop("medpipe")
            bare["setting"]["resampledPixelSpacing"] = ibsi["spacing_mm"]
            bare["setting"]["interpolator"] = "sitkLinear"
            featureextractor.RadiomicsFeatureExtractor(bare).execute(str(image), str(mask))


if __name__ == "__main__":
    main()
