"""Stage ``preprocess`` (rules/preprocess.smk: ``coregister``, ``n4``, ``skullstrip``, ``normalise``,
``resample_label``).

:mod:`.coregister` (ANTs rigid/affine co-registration), :mod:`.template` (affine + SyN template registration
and template masks back to native space), :mod:`.n4` (N4 bias-field correction), :mod:`.skullstrip` (deepbet
or threshold brain mask), :mod:`.normalise` (intensity normalisation onto the training grid).
``resample_label`` calls :func:`medpipe.core.resample.resample_label_like`.
"""
