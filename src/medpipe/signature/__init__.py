"""Stage ``signature`` (rules/signature.smk: ``signature`` per mask source, ``signature_compare``).

Radiomics outcome models built from the features of one mask source (human, auto, ...) and the
paired comparison of two sources on the same subjects with DeLong's test.

:mod:`.outcomes`: read and validate the outcome table (subject, binary outcome, covariates);
:mod:`.features`: subject x feature matrix of one source from the radiomics long table, pre-selection
to a key set (e.g. reproducible features) and the correlation filter fitted inside training folds;
:mod:`.model`: penalised logistic regression in repeated stratified CV (OOF probabilities, DeLong AUC,
sensitivity/specificity, selection frequencies, 0.632+ bootstrap), ``fit_final`` and ``apply``;
:mod:`.compare`: threshold, sensitivity/specificity and ``compare_sources``;
:mod:`.delong`: AUC, DeLong variance/CI and the paired DeLong test
(Sun & Xu 2014); :mod:`.figures`: ROC curves and calibration plot. The radiomics table is read as a
file (:func:`medpipe.stats.agreement.read_features`-compatible TSV), never through another stage package.
"""
