"""Stage ``segment`` (rules/segment.smk: ``split``, ``train``, ``predict``): MONAI + torch.

Data flows one way: :mod:`.settings` -> :mod:`.split`, :mod:`.data`, :mod:`.losses` -> :mod:`.model`
(network construction and model files, used by both sides) -> :mod:`.train` and :mod:`.infer`. Training never
imports inference (import-linter contract). :mod:`.cascade` holds the coarse-to-fine helpers, :mod:`.curve` the
learning-curve table and plot.
"""
