"""Stage ``segment`` (rules/segment.smk: ``split``, ``train``, ``predict``, ``bundle``): MONAI + torch.

Data flows one way: :mod:`.settings` (schema defaults) -> :mod:`.split`, :mod:`.data`, :mod:`.losses` ->
:mod:`.model` (network construction and model files) -> :mod:`.sliding` (sliding-window probabilities of a
model) -> :mod:`.train` (with :mod:`.checkpoint` and :mod:`.validate`) and :mod:`.infer`. Training never imports
inference (import-linter contract). :mod:`.cascade` holds the coarse-to-fine helpers, :mod:`.curve` the
learning-curve table and plot. The per-case uncertainty record that :mod:`.infer` writes is defined in
:mod:`medpipe.core.records`. :mod:`.bundle` packs the fold models of a run into a verifiable folder (record:
:mod:`.bundle_record`; training fingerprint: :mod:`.fingerprint`; model card: :mod:`.card`; check of a new run's
config: :mod:`.compatible`). :mod:`.plan` turns a dataset fingerprint (:mod:`.dataset_fingerprint`) and a compute
budget into settings with the rule behind each (nnU-Net's rules: :mod:`.plan_rules`; patch, depth, batch and
cascade: :mod:`.plan_network`; timing on the machine: :mod:`.plan_measure`).
"""
