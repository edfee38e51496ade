"""pyradiomics extractor with IBSI bin numbering and separate morphological / intensity masks."""

from __future__ import annotations

import collections
import logging
from typing import Any

import numpy as np
import SimpleITK as sitk
from radiomics import firstorder, glcm, gldm, glrlm, glszm, imageoperations, ngtdm
from radiomics.featureextractor import RadiomicsFeatureExtractor

logger = logging.getLogger(__name__)

#: pyradiomics setting carrying the IBSI bin start into the feature classes (medpipe-only key).
BIN_START_KEY = "medpipeBinStart"


class _IbsiBinning:
    """Mixin: fixed-bin-size discretisation numbered from a fixed lower bound (IBSI).

    IBSI: ``X_d = floor((X - X_low) / w) + 1`` with ``X_low`` the re-segmentation range's lower bound.
    pyradiomics instead numbers from ``floor(min_ROI / w)``, which shifts every grey level and changes
    the features that depend on absolute grey levels (joint average, grey level emphases, ...).
    Without the setting, or with ``binCount``, pyradiomics' own discretisation is used.
    """

    settings: dict[str, Any]
    maskArray: np.ndarray  # noqa: N815 (pyradiomics attribute)
    coefficients: dict[str, Any]

    def _applyBinning(self, matrix: np.ndarray) -> np.ndarray:  # noqa: N802 (pyradiomics API)
        start = self.settings.get(BIN_START_KEY)
        if start is None or self.settings.get("binCount") is not None:
            return super()._applyBinning(matrix)  # type: ignore[misc]
        width = float(self.settings.get("binWidth", 25))
        values = matrix[self.maskArray]
        binned = np.floor((values - float(start)) / width).astype(int) + 1
        if binned.size and binned.min() < 1:
            raise ValueError(
                f"ROI intensity {values.min()} lies below the bin start {start}; "
                "re-segment with a range whose lower bound is the bin start"
            )
        out = np.zeros(matrix.shape, dtype=int)
        out[self.maskArray] = binned
        self.coefficients["grayLevels"] = np.unique(binned)
        self.coefficients["Ng"] = int(binned.max())
        return out


class IbsiFirstOrder(_IbsiBinning, firstorder.RadiomicsFirstOrder):
    """First order with IBSI bin numbering (entropy/uniformity do not depend on it)."""


class IbsiGLCM(_IbsiBinning, glcm.RadiomicsGLCM):
    """GLCM with IBSI bin numbering."""


class IbsiGLRLM(_IbsiBinning, glrlm.RadiomicsGLRLM):
    """GLRLM with IBSI bin numbering."""


class IbsiGLSZM(_IbsiBinning, glszm.RadiomicsGLSZM):
    """GLSZM with IBSI bin numbering."""


class IbsiGLDM(_IbsiBinning, gldm.RadiomicsGLDM):
    """GLDM (IBSI NGLDM) with IBSI bin numbering."""


class IbsiNGTDM(_IbsiBinning, ngtdm.RadiomicsNGTDM):
    """NGTDM with IBSI bin numbering."""


FEATURE_CLASSES: dict[str, type] = {
    "firstorder": IbsiFirstOrder,
    "glcm": IbsiGLCM,
    "glrlm": IbsiGLRLM,
    "glszm": IbsiGLSZM,
    "gldm": IbsiGLDM,
    "ngtdm": IbsiNGTDM,
}


class IbsiFeatureExtractor(RadiomicsFeatureExtractor):
    """pyradiomics extractor using :data:`FEATURE_CLASSES` and two masks.

    Filtered images (LoG, wavelet, ...) have no calibrated intensities, so their bins are numbered
    from the ROI minimum of the filtered image (the IBSI rule when no range is set).
    """

    def computeFeatures(  # noqa: N802 (pyradiomics API)
        self,
        image: sitk.Image,
        mask: sitk.Image,
        imageTypeName: str,
        **kwargs: Any,
    ) -> collections.OrderedDict[str, Any]:
        """Compute the enabled non-shape classes for one (filtered) image."""
        features: collections.OrderedDict[str, Any] = collections.OrderedDict()
        if kwargs.get(BIN_START_KEY) is not None and imageTypeName != "original":
            inside = sitk.GetArrayViewFromImage(mask) == kwargs.get("label", 1)
            roi = sitk.GetArrayViewFromImage(image)[inside]
            kwargs = {**kwargs, BIN_START_KEY: float(roi.min())}
        for class_name, names in self.enabledFeatures.items():
            if class_name.startswith("shape"):
                continue
            if class_name not in FEATURE_CLASSES:
                raise ValueError(f"feature class {class_name!r} is not supported by medpipe")
            feature_class = FEATURE_CLASSES[class_name](image, mask, **kwargs)
            for name in names or []:
                feature_class.enableFeatureByName(name)
            if not names:
                feature_class.enableAllFeatures()
            for name, value in feature_class.execute().items():
                features[f"{imageTypeName}_{class_name}_{name}"] = value
        return features

    def execute_masks(
        self, image: sitk.Image, morph_mask: sitk.Image, intensity_mask: sitk.Image
    ) -> collections.OrderedDict[str, Any]:
        """Shape features on ``morph_mask``, every other class on ``intensity_mask``.

        ``image`` is used as given (already normalised / interpolated by the caller); pyradiomics'
        own resampling and re-segmentation settings must be off.
        """
        settings = dict(self.settings)
        features: collections.OrderedDict[str, Any] = collections.OrderedDict()
        bbox, corrected = imageoperations.checkMask(image, morph_mask, **settings)
        if corrected is not None:
            raise ValueError("mask geometry differs from the image; refusing pyradiomics' mask correction")
        if settings.get("preCrop"):  # crop before filtering (padDistance voxels around the ROI)
            pad = int(settings.get("padDistance", 5))
            image, morph_mask = imageoperations.cropToTumorMask(image, morph_mask, bbox, padDistance=pad)
            intensity_mask = imageoperations.cropToTumorMask(intensity_mask, intensity_mask, bbox, padDistance=pad)[1]
            bbox, _ = imageoperations.checkMask(image, morph_mask, **settings)
        if "shape" in self.enabledFeatures:
            features.update(self.computeShape(image, morph_mask, bbox, **settings))
        bbox, _ = imageoperations.checkMask(image, intensity_mask, **settings)
        for image_type, custom in self.enabledImagetypes.items():
            args = {**settings, **(custom or {})}
            generator = getattr(imageoperations, f"get{image_type}Image")(image, intensity_mask, **args)
            for filtered, type_name, kwargs in generator:
                cropped, cropped_mask = imageoperations.cropToTumorMask(filtered, intensity_mask, bbox)
                features.update(self.computeFeatures(cropped, cropped_mask, type_name, **kwargs))
        return features
