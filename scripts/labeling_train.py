"""Snakemake adapter: train the model of one labeling round (fine-tuned from the previous round's model)."""

from medpipe.core.logutil import script_logging
from medpipe.core.plan_record import planned_settings
from medpipe.labeling.campaign import round_training_settings
from medpipe.segment.train import train_fold

with script_logging(snakemake.log[0]):
    n = snakemake.params.n_sequences  # input.images is flat, subject-major, in sequence order
    images = list(snakemake.input.images)
    plan = snakemake.input.plan[0] if snakemake.input.plan else None  # segmentation.plan: auto
    segmentation = planned_settings(snakemake.params.settings, plan, "segmentation")
    train_fold(
        [images[i : i + n] for i in range(0, len(images), n)],
        list(snakemake.input.labels),
        snakemake.output.model,
        snakemake.output.curve,
        snakemake.output.plot,
        subjects=list(snakemake.params.subjects),
        fold=int(snakemake.wildcards.round),
        settings=round_training_settings(segmentation, snakemake.params.fine_tune, snakemake.input.get("init")),
        seed=snakemake.params.seed,
        deterministic=snakemake.params.deterministic,
        threads=snakemake.threads,
    )
