# Radiomics: pyradiomics features of the N4-corrected reference sequence inside the human and the
# automatic masks (native grid), with IBSI codes and provenance on every row; then one long table.


rule radiomics:
    input:
        image=get_radiomics_image,
        mask=get_radiomics_mask,
        params=RADIOMICS_PARAMS,
    output:
        features="results/radiomics/sub-{subject}/sub-{subject}_mask-{source}_features.tsv",
    log:
        "logs/radiomics/sub-{subject}_mask-{source}.log",
    benchmark:
        "benchmarks/radiomics/sub-{subject}_mask-{source}.tsv"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(3000, 30),
        runtime=20,
    conda:
        "../envs/radiomics.yaml"
    script:
        "../scripts/radiomics.py"


rule radiomics_table:
    input:
        tables=get_all_feature_tables,
    output:
        table=report(
            "results/radiomics/features.tsv",
            caption="../report/radiomics_table.rst",
            category="6. Radiomics",
            subcategory="Feature table",
        ),
        overview=report(
            "results/radiomics/features_overview.png",
            caption="../report/radiomics_overview.rst",
            category="6. Radiomics",
            subcategory="Feature overview",
        ),
    log:
        "logs/radiomics_table/radiomics_table.log",
    benchmark:
        "benchmarks/radiomics_table/radiomics_table.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/radiomics.yaml"
    script:
        "../scripts/radiomics_table.py"
