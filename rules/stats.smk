# Reproducibility of radiomics features between the human and the automatic masks:
# Lin's CCC (bootstrap CI), ICC(3,1) and ICC(2,1) (pingouin), Bland-Altman, retention per class.


rule reproducibility:
    input:
        features="results/radiomics/features.tsv",
    output:
        table=report(
            "results/stats/reproducibility.tsv",
            caption="../report/reproducibility.rst",
            category="7. Reproducibility",
            subcategory="Per-feature agreement",
        ),
        retention=report(
            "results/stats/retention_by_class.tsv",
            caption="../report/reproducibility.rst",
            category="7. Reproducibility",
            subcategory="Retention by image and class",
        ),
        plot=report(
            "results/stats/ccc.png",
            caption="../report/reproducibility.rst",
            category="7. Reproducibility",
            subcategory="Retention by image and class",
        ),
        by_set=report(
            "results/stats/retention_by_set.tsv",
            caption="../report/reproducibility.rst",
            category="7. Reproducibility",
            subcategory="Retention by set and site",
        ),
    log:
        "logs/reproducibility/reproducibility.log",
    benchmark:
        "logs/benchmarks/reproducibility/reproducibility.tsv"
    conda:
        "../envs/radiomics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        source_a=get_compared_source(0),
        source_b=get_compared_source(1),
        cutoff=config["stats"]["ccc_cutoff"],
        n_boot=config["stats"]["bootstrap"],
        seed=config["seed"],
        min_subjects=config["stats"]["min_subjects"],
        sets=SETS,
        sites=SITES,
    script:
        "../scripts/reproducibility.py"


# The same agreement between the two readers' masks (radiomics.sources reader2): the ceiling of human vs automatic.
rule reproducibility_readers:
    input:
        features="results/radiomics/features.tsv",
    output:
        table=report(
            "results/stats/readers/reproducibility.tsv",
            caption="../report/reproducibility.rst",
            category="7. Reproducibility",
            subcategory="Second reader vs first reader",
        ),
        retention=report(
            "results/stats/readers/retention_by_class.tsv",
            caption="../report/reproducibility.rst",
            category="7. Reproducibility",
            subcategory="Second reader vs first reader",
        ),
        plot=report(
            "results/stats/readers/ccc.png",
            caption="../report/reproducibility.rst",
            category="7. Reproducibility",
            subcategory="Second reader vs first reader",
        ),
        by_set="results/stats/readers/retention_by_set.tsv",
    log:
        "logs/reproducibility_readers/reproducibility_readers.log",
    benchmark:
        "logs/benchmarks/reproducibility_readers/reproducibility_readers.tsv"
    conda:
        "../envs/radiomics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        source_a="human",
        source_b="reader2",
        cutoff=config["stats"]["ccc_cutoff"],
        n_boot=config["stats"]["bootstrap"],
        seed=config["seed"],
        min_subjects=config["stats"]["min_subjects"],
        sets=SETS,
        sites=SITES,
    script:
        "../scripts/reproducibility.py"


rule robustness:
    input:
        features="results/radiomics/features.tsv",
    output:
        table=report(
            "results/stats/robustness.tsv",
            caption="../report/robustness.rst",
            category="7. Reproducibility",
            subcategory="Mask perturbations",
        ),
        by_class=report(
            "results/stats/robustness_by_class.tsv",
            caption="../report/robustness.rst",
            category="7. Reproducibility",
            subcategory="Mask perturbations",
        ),
        plot=report(
            "results/stats/robustness.png",
            caption="../report/robustness.rst",
            category="7. Reproducibility",
            subcategory="Mask perturbations",
        ),
    log:
        "logs/robustness/robustness.log",
    benchmark:
        "logs/benchmarks/robustness/robustness.tsv"
    conda:
        "../envs/radiomics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        perturbations=PERTURBATIONS,
        cutoff=config["stats"]["ccc_cutoff"],
        n_boot=config["stats"]["bootstrap"],
        seed=config["seed"],
        min_subjects=config["stats"]["min_subjects"],
    script:
        "../scripts/robustness.py"
