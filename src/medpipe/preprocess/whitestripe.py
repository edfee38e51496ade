"""WhiteStripe MR normalisation (Shinohara et al. 2014) with the field library ``intensity-normalization``.

WhiteStripe finds normal-appearing white matter (NAWM) from the histogram of the brain's intensities and
maps it to mean 0 and SD 1: ``(x - mean) / sd`` with ``mean`` and ``sd`` over the *white stripe*, the brain
voxels whose intensity quantile lies within ``whitestripe_width`` of the quantile of the white-matter mode.
The library (:class:`intensity_normalization.WhiteStripeNormalizer`, 3.0.1) finds the mode on a kernel
density estimate of the brain's histogram, per ``whitestripe_contrast``:

* ``T1``: the highest-intensity peak (white matter is the brightest tissue), after dropping the top 4 %
  of the brain's intensities;
* ``T2`` and ``FLAIR``: the largest peak (white matter is the largest tissue class).

The contrast is a setting, not guessed from the sequence name: set it per sequence
(``per_sequence: {T2w: {method: whitestripe, whitestripe_contrast: T2}}``). The default width 0.05 is the
paper's (a stripe of about 10 % of the brain's voxels). The mask given to the library is the skull-strip
brain mask, so the library does not guess the foreground; the whole image is transformed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from intensity_normalization import WhiteStripeNormalizer, create_image
from intensity_normalization.domain.exceptions import NormalizationError
from intensity_normalization.domain.models import Modality

from medpipe.core.errors import DataError

#: The library's modality per value of ``preprocess.normalise.whitestripe_contrast`` (the schema's enum).
CONTRASTS: dict[str, Modality] = {"T1": Modality.T1, "T2": Modality.T2, "FLAIR": Modality.FLAIR}

#: Distribution name of the library, as the sidecar records its version.
PACKAGE = "intensity-normalization"


@dataclass(frozen=True)
class WhiteStripe:
    """A fitted white stripe; intensities in the units of the image it was fitted on.

    ``low`` and ``high`` are the lowest and highest intensity inside the stripe, ``n_voxels`` its size and
    ``fraction`` its share of the brain mask.
    """

    contrast: str
    width: float
    mean: float
    sd: float
    low: float
    high: float
    n_voxels: int
    fraction: float
    normaliser: WhiteStripeNormalizer = field(repr=False, compare=False)

    def apply(self, data: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """``(data - mean) / sd`` over the whole image, by the library's transform."""
        out = self.normaliser.transform(create_image(np.asarray(data, dtype=np.float32))).get_data()
        return np.asarray(out, dtype=np.float32)

    def record(self) -> dict[str, Any]:
        """What the sidecar records: the stripe found, in the input image's intensity units."""
        return {
            "contrast": self.contrast,
            "width": self.width,
            "stripe_mean": self.mean,
            "stripe_sd": self.sd,
            "stripe_range": [self.low, self.high],
            "stripe_voxels": self.n_voxels,
            "stripe_fraction_of_mask": self.fraction,
            "units": "intensities of the input image (before normalisation)",
            "implementation": "intensity_normalization.WhiteStripeNormalizer",
        }


def fit_whitestripe(
    data: npt.NDArray[Any],
    mask: npt.NDArray[Any] | None,
    settings: Mapping[str, Any],
    *,
    subject: str | None = None,
    path: str | Path | None = None,
) -> WhiteStripe:
    """Find the white stripe of ``data`` inside ``mask`` (``settings``: resolved normalise settings).

    Parameters
    ----------
    data
        The image (or the brain's voxels when ``mask`` is ``None``).
    mask
        Brain mask of the same shape (nonzero = brain); ``None``: every voxel of ``data`` is brain.
    settings
        Resolved ``preprocess.normalise`` settings: ``whitestripe_width`` and ``whitestripe_contrast``.
    subject, path
        Named in errors.

    Raises
    ------
    DataError
        When the library finds no stripe, or one of constant intensity (SD 0), or one whose intensity range
        spans 0 (the library would then count the voxels outside the mask, which it reads as 0).
    """
    x = np.asarray(data, dtype=np.float32)
    brain = np.ones(x.shape, bool) if mask is None else np.asarray(mask) > 0
    contrast, width = str(settings["whitestripe_contrast"]), float(settings["whitestripe_width"])
    normaliser = WhiteStripeNormalizer(width=width, modality=CONTRASTS[contrast])
    try:
        normaliser.fit(create_image(x), create_image(brain.astype(np.float32)))
    except NormalizationError as err:
        raise DataError(
            f"WhiteStripe ({contrast}, width {width}) found no usable white stripe: {err}; check that "
            f"whitestripe_contrast matches the sequence and the brain mask, or widen whitestripe_width",
            subject=subject,
            path=path,
        ) from err
    stripe = normaliser.whitestripe_mask
    if stripe is None or normaliser.mean is None or normaliser.std is None:  # fit() sets all three
        raise DataError("WhiteStripe returned no stripe", subject=subject, path=path)
    if (stripe & ~brain).any():
        raise DataError(
            f"the white stripe ({contrast}) spans intensity 0, so the library would count the voxels outside the "
            "brain mask in it: WhiteStripe needs MR intensities > 0 in white matter (use zscore for shifted ones)",
            subject=subject,
            path=path,
        )
    values = x[stripe]
    return WhiteStripe(
        contrast=contrast,
        width=width,
        mean=float(normaliser.mean),
        sd=float(normaliser.std),
        low=float(values.min()),
        high=float(values.max()),
        n_voxels=int(values.size),
        fraction=float(values.size / brain.sum()),
        normaliser=normaliser,
    )
