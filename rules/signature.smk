# Radiomics outcome models per mask source and their paired DeLong comparison (config signature:).


rule signature:
    input:
        unpack(get_signature_inputs),
    output:
        oof="results/signature/source-{source}/oof.tsv",
        selection=report(
            "results/signature/source-{source}/selection.tsv",
            caption="../report/signature.rst",
            category="8. Outcome models",
            subcategory="Selected features",
            labels={"source": "{source}"},
        ),
        model="results/signature/source-{source}/model.json",
    log:
        "logs/signature/source-{source}.log",
    benchmark:
        "logs/benchmarks/signature/source-{source}.tsv"
    conda:
        "../envs/signature.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        settings=config["signature"],
        labelled=LABELLED,
        sets=SETS,
        seed=config["seed"],
    script:
        "../scripts/signature.py"


rule signature_compare:
    input:
        oof=expand("results/signature/source-{source}/oof.tsv", source=SIGNATURE_SOURCES),
    output:
        table=report(
            "results/signature/comparison.tsv",
            caption="../report/signature.rst",
            category="8. Outcome models",
            subcategory="Human vs automatic",
        ),
        roc=report(
            "results/signature/roc.png",
            caption="../report/signature.rst",
            category="8. Outcome models",
            subcategory="Human vs automatic",
        ),
        calibration=report(
            "results/signature/calibration.png",
            caption="../report/signature.rst",
            category="8. Outcome models",
            subcategory="Human vs automatic",
        ),
    log:
        "logs/signature/compare.log",
    benchmark:
        "logs/benchmarks/signature/compare.tsv"
    conda:
        "../envs/signature.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        sources=SIGNATURE_SOURCES,
        pairs=config["signature"]["compare"],
        level=config["signature"]["model"]["level"],
        ci=config["signature"]["model"]["ci"],
    script:
        "../scripts/signature_compare.py"
