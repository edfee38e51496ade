"""Snakemake adapter: CCC / ICC / Bland-Altman per feature, retention per class, and per set and site."""

from medpipe.core.logutil import script_logging
from medpipe.stats.agreement import reproducibility_report
from medpipe.stats.by_set import retention_by_set_report

with script_logging(snakemake.log[0]):
    p, o = snakemake.params, snakemake.output
    kw = dict(source_a=p.source_a, source_b=p.source_b, cutoff=p.cutoff, n_boot=p.n_boot, seed=p.seed)
    table = reproducibility_report(
        snakemake.input.features, o.table, o.retention, o.plot, min_subjects=p.min_subjects, **kw
    )
    retention_by_set_report(
        snakemake.input.features,
        o.by_set,
        sets=p.sets,
        sites=p.sites,
        min_subjects=p.min_subjects,
        whole_table=table,
        **kw,
    )
