# medpipe: DICOM -> segmentation -> metrics -> radiomics -> reproducibility report.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"


localrules:
    all,
    manifest,
    review_list,


include: "rules/convert.smk"
include: "rules/preprocess.smk"
include: "rules/segment.smk"
include: "rules/postprocess.smk"
include: "rules/evaluate.smk"
include: "rules/radiomics.smk"
include: "rules/stats.smk"
include: "rules/signature.smk"
include: "rules/labeling.smk"
include: "rules/audit.smk"


# A run that ends with failed jobs (--keep-going) lists them as a sign-off sheet: see medpipe.audit.failures.
onerror:
    write_failures(log, FAILED_JOBS, private_paths=SHEET_PATHS)


rule all:
    default_target: True
    input:
        get_final_outputs,
        "results/audit/manifest.json",
