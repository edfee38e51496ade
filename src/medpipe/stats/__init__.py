"""Stage ``stats`` (rules/stats.smk: ``reproducibility``, ``robustness``).

:mod:`.agreement`: CCC, ICC, Bland–Altman and retention per feature class between two mask sources;
:mod:`.robustness`: agreement under every perturbation and over all of them at once. Both read the radiomics
feature table through :func:`medpipe.stats.agreement.read_features` (a TSV file, not the radiomics package).
"""
