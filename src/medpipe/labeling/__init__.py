"""Stage labeling: smart-labeling rounds (predict -> a human corrects -> fine-tune), with the saving measured.

Round ``r`` trains on every label accepted so far (round 0 from scratch on the initial set, later rounds
fine-tuned from round ``r - 1``'s model), predicts the unlabelled pool, selects the next batch
(:mod:`medpipe.labeling.select`) and exports it for correction with a worklist (:mod:`medpipe.labeling.worklist`).
Corrected masks are checked and accepted (:mod:`medpipe.labeling.ingest`) and become labels of round ``r + 1``;
:mod:`medpipe.labeling.rounds` tabulates every round. :mod:`medpipe.labeling.campaign` reads the configuration.
The rules (``rules/labeling.smk``) train and predict with the segment stage's own adapters.
"""
