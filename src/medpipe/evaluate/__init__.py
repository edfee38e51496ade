"""Stage ``evaluate`` (rules/evaluate.smk: ``evaluate_subject``, ``evaluate_summary``).

:mod:`.metrics`: overlap and surface metrics per subject and class, bootstrap summary, figures;
:mod:`.compare`: paired comparison of two metric tables (two models, or a model vs a second reader).
"""
