# Smart labeling (config labeling:): per round, train on every label accepted so far (round 0 from scratch,
# later rounds fine-tuned from the previous round's model), predict the unlabelled pool and the held-out
# subjects, select the next batch, export it for correction, accept the corrections, tabulate every round.
# Training and prediction use the segment stage's own adapters; see medpipe.labeling.


rule labeling_train:
    input:
        unpack(get_labeling_train_inputs),
    output:
        model=protected("results/labeling/round-{round}/model.pt"),
        sidecar="results/labeling/round-{round}/model.pt.json",
        curve="results/labeling/round-{round}/learning_curve.tsv",
        plot="results/labeling/round-{round}/learning_curve.png",
    log:
        "logs/labeling_train/round-{round}.log",
    benchmark:
        "logs/benchmarks/labeling_train/round-{round}.tsv"
    conda:
        "../envs/segment.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=mem_mb_scaled(8000, 10),
        runtime=120,
    params:
        subjects=get_labeling_train_subjects,
        n_sequences=len(SEQUENCES),
        settings=config["segmentation"],
        fine_tune=config["labeling"]["fine_tune"],
        seed=config["seed"],
        deterministic=config["deterministic"],
    script:
        "../scripts/labeling_train.py"


rule labeling_predict:
    input:
        images=get_case_images,
        models=["results/labeling/round-{round}/model.pt"],  # a list: the predict adapter reads several
        plan=get_plan,
    output:
        prob="results/labeling/round-{round}/predict/sub-{subject}_prob.nii.gz",
        prob_sidecar="results/labeling/round-{round}/predict/sub-{subject}_prob.json",
        pred="results/labeling/round-{round}/predict/sub-{subject}_pred.nii.gz",
        pred_sidecar="results/labeling/round-{round}/predict/sub-{subject}_pred.json",
        entropy="results/labeling/round-{round}/predict/sub-{subject}_entropy.nii.gz",
        entropy_sidecar="results/labeling/round-{round}/predict/sub-{subject}_entropy.json",
        uncertainty="results/labeling/round-{round}/predict/sub-{subject}_uncertainty.json",
        qc="results/labeling/round-{round}/predict/sub-{subject}_qc.png",
    log:
        "logs/labeling_predict/round-{round}_sub-{subject}.log",
    benchmark:
        "logs/benchmarks/labeling_predict/round-{round}_sub-{subject}.tsv"
    conda:
        "../envs/segment.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=mem_mb_scaled(4000, 100),
        runtime=20,
    params:
        settings=config["segmentation"],
    script:
        "../scripts/predict.py"


rule labeling_native:
    input:
        pred="results/labeling/round-{round}/predict/sub-{subject}_pred.nii.gz",
        reference=get_reference_converted,
        decision=get_postprocess_decision,
    output:
        mask="results/labeling/round-{round}/native/sub-{subject}_desc-auto_mask.nii.gz",
        sidecar="results/labeling/round-{round}/native/sub-{subject}_desc-auto_mask.json",
        qc="results/labeling/round-{round}/native/sub-{subject}_qc.png",
    log:
        "logs/labeling_native/round-{round}_sub-{subject}.log",
    benchmark:
        "logs/benchmarks/labeling_native/round-{round}_sub-{subject}.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 30),
        runtime=10,
    params:
        settings=config["postprocess"],
    script:
        "../scripts/postprocess.py"


checkpoint labeling_select:
    input:
        uncertainty=get_labeling_pool_uncertainty,
    output:
        selection="results/labeling/round-{round}/selection.tsv",
    log:
        "logs/labeling_select/round-{round}.log",
    conda:
        "../envs/segment.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        pool=get_labeling_pool,
        explicit=get_labeling_explicit_batch,
        strategy=config["labeling"]["strategy"],
        batch_size=config["labeling"]["batch_size"],
        seed=config["seed"],
    script:
        "../scripts/labeling_select.py"


rule labeling_export_seg:
    input:
        mask="results/labeling/round-{round}/native/sub-{subject}_desc-auto_mask.nii.gz",
        dicom=get_dicom_dir,
        reference=get_reference_converted,
    output:
        seg="results/labeling/round-{round}/native/sub-{subject}_desc-auto_mask.dcm",
        sidecar="results/labeling/round-{round}/native/sub-{subject}_desc-auto_mask.dcm.json",
    log:
        "logs/labeling_export_seg/round-{round}_sub-{subject}.log",
    benchmark:
        "logs/benchmarks/labeling_export_seg/round-{round}_sub-{subject}.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 20),
        runtime=10,
    params:
        label_name=config["label"]["name"],
        classes=SEG_CLASSES,
    script:
        "../scripts/export_dicom_seg.py"


rule labeling_worklist:
    input:
        unpack(get_labeling_worklist_inputs),
        selection="results/labeling/round-{round}/selection.tsv",
    output:
        worklist=report(
            "results/labeling/round-{round}/worklist.tsv",
            caption="../report/labeling.rst",
            category="9. Smart labeling",
            subcategory="Worklists",
            labels={"round": "{round}"},
        ),
    log:
        "logs/labeling_worklist/round-{round}.log",
    conda:
        "../envs/segment.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        files=get_labeling_worklist_files,
    script:
        "../scripts/labeling_worklist.py"


rule labeling_accept:
    input:
        correction=get_labeling_correction,
        reference=get_reference_converted,
        prediction="results/labeling/round-{round}/native/sub-{subject}_desc-auto_mask.nii.gz",
        selection="results/labeling/round-{round}/selection.tsv",
    output:
        mask="results/labeling/round-{round}/accepted/sub-{subject}_mask.nii.gz",
        sidecar="results/labeling/round-{round}/accepted/sub-{subject}_mask.json",
    log:
        "logs/labeling_accept/round-{round}_sub-{subject}.log",
    benchmark:
        "logs/benchmarks/labeling_accept/round-{round}_sub-{subject}.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 20),
        runtime=10,
    params:
        batch=get_labeling_batch,
        n_classes=config["segmentation"]["num_classes"],
    script:
        "../scripts/labeling_accept.py"


rule labeling_ingest:
    input:
        accepted=get_labeling_accepted,
    output:
        table="results/labeling/round-{round}/accepted.tsv",
    log:
        "logs/labeling_ingest/round-{round}.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        batch=get_labeling_batch,
        folder=get_labeling_corrections_folder,
    script:
        "../scripts/labeling_ingest.py"


rule labeling_label_on_grid:
    input:
        label="results/labeling/round-{round}/accepted/sub-{subject}_mask.nii.gz",
        reference=f"results/normalise/sub-{{subject}}/sub-{{subject}}_{REF}.nii.gz",
    output:
        label="results/labeling/round-{round}/accepted/sub-{subject}_space-train_mask.nii.gz",
        sidecar="results/labeling/round-{round}/accepted/sub-{subject}_space-train_mask.json",
    log:
        "logs/labeling_label_on_grid/round-{round}_sub-{subject}.log",
    benchmark:
        "logs/benchmarks/labeling_label_on_grid/round-{round}_sub-{subject}.tsv"
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 15),
        runtime=10,
    script:
        "../scripts/resample_label.py"


rule labeling_score:
    input:
        auto="results/labeling/round-{round}/native/sub-{subject}_desc-auto_mask.nii.gz",
        human=get_labeling_score_truth,
    output:
        metrics="results/labeling/round-{round}/metrics/sub-{subject}_metrics.tsv",
    log:
        "logs/labeling_score/round-{round}_sub-{subject}.log",
    benchmark:
        "logs/benchmarks/labeling_score/round-{round}_sub-{subject}.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 30),
        runtime=10,
    params:
        labels=CLASS_VALUES,
    script:
        "../scripts/evaluate_subject.py"


rule labeling_rounds:
    input:
        unpack(get_labeling_rounds_inputs),
    output:
        table=report(
            "results/labeling/rounds.tsv",
            caption="../report/labeling.rst",
            category="9. Smart labeling",
            subcategory="Rounds",
        ),
        plot=report(
            "results/labeling/rounds.png",
            caption="../report/labeling.rst",
            category="9. Smart labeling",
            subcategory="Rounds",
        ),
    log:
        "logs/labeling_rounds/labeling_rounds.log",
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        status=get_labeling_status,
    script:
        "../scripts/labeling_rounds.py"
