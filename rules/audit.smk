# Audit: cases flagged for human review, and the run manifest (last rule: hashes every output).


rule review_list:
    input:
        records=get_uncertainty_files,
        signoff=get_signoff,
    output:
        table=report(
            "results/audit/flagged_cases.tsv",
            caption="../report/review_list.rst",
            category="8. Audit",
            subcategory="Cases flagged for review",
        ),
        html=report(
            "results/audit/flagged_cases.html",
            caption="../report/review_list.rst",
            category="8. Audit",
            subcategory="Cases flagged for review",
        ),
    log:
        "logs/review_list/review_list.log",
    benchmark:
        "logs/benchmarks/review_list/review_list.tsv"
    conda:
        "../envs/audit.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        signoff=config["review"]["signoff"],
    script:
        "../scripts/review_list.py"


rule manifest:
    input:
        outputs=get_manifest_inputs,
        sheet=config["subjects"],
    output:
        manifest="results/audit/manifest.json",
        methods="results/audit/software_versions.rst",
        summary=report(
            "results/audit/manifest_summary.html",
            caption="../report/manifest.rst",
            category="8. Audit",
            subcategory="Run manifest",
        ),
    log:
        "logs/manifest/manifest.log",
    conda:
        "../envs/audit.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        benchmarks_dir="logs/benchmarks",
    script:
        "../scripts/manifest.py"
