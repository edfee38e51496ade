"""Stage ``radiomics`` (rules/radiomics.smk: ``perturb_mask``, ``perturb_image``, ``region_mask``, ``radiomics``,
``radiomics_region``, ``radiomics_table``).

* :mod:`.extract`: pyradiomics extraction with IBSI names and provenance, and the long feature table.
* :mod:`.ibsi`: IBSI mapping of pyradiomics features and the IBSI corrections.
* :mod:`.ibsi_preprocess`: interpolation on the IBSI grid (centred on the input grid, trilinear image rounded to
  integers, trilinear mask kept at >= 0.5) and re-segmentation into separate morphological and intensity masks.
* :mod:`.ibsi_extractor`: a pyradiomics extractor whose texture classes number fixed-bin-size bins from the lower
  bound of the re-segmentation range (IBSI), and which takes the two masks.
* :mod:`.ibsi2`: IBSI-2 phase-1 response-map tests of pyradiomics' LoG and wavelet filters, with the recorded result.
* :mod:`.ibsi2_phase2`: IBSI-2 phase-2 features of filtered images of the IBSI CT phantom, with the recorded result.
* :mod:`.ibsi2_labels`: the feature table's ``ibsi2_code``, ``ibsi2_filter`` and ``ibsi2_compliance`` columns.
* :mod:`.perturb`: one-voxel mask perturbations and seeded image noise (robustness sources).
* :mod:`.regions`: derived regions (``radiomics.regions``): the peritumoral ring of a mask, clipped to image or body.
* :mod:`.figures`: the report's feature overview figure.
"""
