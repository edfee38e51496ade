# Evaluate: per-subject metrics of the automatic vs the human mask on the native grid, then the
# summary over subjects (mean, SD, median, seeded bootstrap CI), box plots and best/median/worst cases.


rule evaluate_subject:
    input:
        auto="results/postprocess/sub-{subject}/sub-{subject}_desc-auto_mask.nii.gz",
        human="results/convert/sub-{subject}/sub-{subject}_desc-human_mask.nii.gz",
    output:
        metrics="results/evaluate/sub-{subject}/sub-{subject}_metrics.tsv",
    log:
        "logs/evaluate_subject/sub-{subject}.log",
    benchmark:
        "logs/benchmarks/evaluate_subject/sub-{subject}.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 30),
        runtime=10,
    params:
        labels=EVAL_LABELS,
    script:
        "../scripts/evaluate_subject.py"


rule evaluate_summary:
    input:
        tables=get_all_subject_metrics,
        qc=get_all_postprocess_qc,
    output:
        metrics="results/evaluate/metrics.tsv",
        summary=report(
            "results/evaluate/summary.tsv",
            caption="../report/evaluate_summary.rst",
            category="5. Evaluation",
            subcategory="Summary table",
        ),
        by_site=report(
            "results/evaluate/summary_by_site.tsv",
            caption="../report/evaluate_summary.rst",
            category="5. Evaluation",
            subcategory="Summary per site",
        ),
        plot=report(
            "results/evaluate/metrics_boxplot.png",
            caption="../report/evaluate_summary.rst",
            category="5. Evaluation",
            subcategory="Metrics per subject",
        ),
        cases=report(
            "results/evaluate/cases_best_median_worst.png",
            caption="../report/evaluate_summary.rst",
            category="5. Evaluation",
            subcategory="Best, median and worst case",
        ),
    log:
        "logs/evaluate_summary/evaluate_summary.log",
    benchmark:
        "logs/benchmarks/evaluate_summary/evaluate_summary.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        seed=config["seed"],
        n_boot=config["stats"]["bootstrap"],
        sets=SETS,
        sites=SITES,
    script:
        "../scripts/evaluate_summary.py"


# Second reader (sheet column label2): the same metrics of the second reader's mask against the first reader's,
# summarised like the automatic masks, and compared with them subject by subject (the readers' agreement is the
# ceiling the automatic method is read against).
rule evaluate_reader2:
    input:
        reader2="results/convert/sub-{subject}/sub-{subject}_desc-reader2_mask.nii.gz",
        human="results/convert/sub-{subject}/sub-{subject}_desc-human_mask.nii.gz",
    output:
        metrics="results/evaluate/readers/sub-{subject}_metrics.tsv",
    log:
        "logs/evaluate_reader2/sub-{subject}.log",
    benchmark:
        "logs/benchmarks/evaluate_reader2/sub-{subject}.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 30),
        runtime=10,
    params:
        labels=EVAL_LABELS,
    script:
        "../scripts/evaluate_reader2.py"


rule evaluate_readers_summary:
    input:
        tables=get_reader_metrics,
    output:
        metrics="results/evaluate/readers/metrics.tsv",
        summary=report(
            "results/evaluate/readers/summary.tsv",
            caption="../report/evaluate_readers.rst",
            category="5. Evaluation",
            subcategory="Second reader vs first reader",
        ),
        plot=report(
            "results/evaluate/readers/metrics_boxplot.png",
            caption="../report/evaluate_readers.rst",
            category="5. Evaluation",
            subcategory="Second reader vs first reader",
        ),
    log:
        "logs/evaluate_readers_summary/evaluate_readers_summary.log",
    benchmark:
        "logs/benchmarks/evaluate_readers_summary/evaluate_readers_summary.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        seed=config["seed"],
        n_boot=config["stats"]["bootstrap"],
        sets=SETS,
        sites=SITES,
    script:
        "../scripts/evaluate_readers_summary.py"


rule compare_readers:
    input:
        automatic="results/evaluate/metrics.tsv",
        reader2="results/evaluate/readers/metrics.tsv",
    output:
        table=report(
            "results/evaluate/readers/automatic_vs_second_reader.tsv",
            caption="../report/evaluate_readers.rst",
            category="5. Evaluation",
            subcategory="Automatic vs second reader",
        ),
    log:
        "logs/compare_readers/compare_readers.log",
    benchmark:
        "logs/benchmarks/compare_readers/compare_readers.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/compare_readers.py"


# Domain-shift flags: the training set's intensity profiles, grid range and volumes with thresholds calibrated on
# its cross-validated predictions (kept in the model bundle), then every subject scored against them.
rule shift_reference:
    input:
        unpack(get_shift_reference_inputs),
    output:
        reference="results/evaluate/shift_reference.json",
    log:
        "logs/shift_reference/shift_reference.log",
    benchmark:
        "logs/benchmarks/shift_reference/shift_reference.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        subjects=TRAIN_SET,
        sets=SETS,
        sites=SITES,
        channels=SEQUENCES,
        label=WHOLE_LABEL,
        settings=config["evaluate"]["shift"],
    script:
        "../scripts/shift_reference.py"


rule shift_flags:
    input:
        unpack(get_shift_flag_inputs),
    output:
        table=report(
            "results/evaluate/shift_flags.tsv",
            caption="../report/shift_flags.rst",
            category="5. Evaluation",
            subcategory="Internal vs external validation",
        ),
        performance=report(
            "results/evaluate/shift_performance.tsv",
            caption="../report/shift_flags.rst",
            category="5. Evaluation",
            subcategory="Internal vs external validation",
        ),
        plot=report(
            "results/evaluate/shift_flags.png",
            caption="../report/shift_flags.rst",
            category="5. Evaluation",
            subcategory="Internal vs external validation",
        ),
        records=shift_records(),
    log:
        "logs/shift_flags/shift_flags.log",
    benchmark:
        "logs/benchmarks/shift_flags/shift_flags.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        subjects=SUBJECTS,
        sets=SETS,
        sites=SITES,
        channels=SEQUENCES,
        label=WHOLE_LABEL,
    script:
        "../scripts/shift_flags.py"
