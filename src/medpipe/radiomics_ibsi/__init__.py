"""IBSI-compliant image processing around pyradiomics.

* :mod:`medpipe.radiomics_ibsi.preprocess`: interpolation on the IBSI grid (centred on the input grid,
  trilinear image rounded to integers, trilinear mask kept at >= 0.5) and re-segmentation (range,
  outlier filtering) into separate morphological and intensity masks.
* :mod:`medpipe.radiomics_ibsi.extractor`: a pyradiomics feature extractor whose texture classes number
  fixed-bin-size bins from the lower bound of the re-segmentation range (IBSI) instead of from the ROI
  minimum aligned to a multiple of the bin width (pyradiomics), and which takes the two masks.
"""
