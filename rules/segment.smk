# Segmentation: k-fold split by subject, one MONAI U-Net per fold, sliding-window prediction of every
# subject by the model(s) that never saw it. Models are protected: delete them by hand to retrain.
# The bundle rule packs the fold models into a portable, verifiable folder at the end of training.


# segmentation.plan: auto. The labelled training subjects' dataset fingerprint, and the plan made from it:
# every decision with its rule (medpipe.segment.plan); normalise, train and predict read plan.json.
rule fingerprint:
    input:
        unpack(get_fingerprint_inputs),
    output:
        fingerprint="results/plan/fingerprint.json",
    log:
        "logs/plan/fingerprint.log",
    benchmark:
        "logs/benchmarks/plan/fingerprint.tsv"
    conda:
        "../envs/segment.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 20),  # one subject's images at a time
        runtime=30,
    params:
        subjects=TRAIN_SET,
        channels=SEQUENCES,
    script:
        "../scripts/fingerprint.py"


rule plan:
    input:
        fingerprint="results/plan/fingerprint.json",
    output:
        plan="results/plan/plan.json",
        table=report(
            "results/plan/plan.tsv",
            caption="../report/plan.rst",
            category="3. Segmentation",
            subcategory="Plan",
        ),
    log:
        "logs/plan/plan.log",
    benchmark:
        "logs/benchmarks/plan/plan.tsv"
    conda:
        "../envs/segment.yaml"
    threads: 2  # the train rule's: the planned network's training steps are timed with them
    resources:
        mem_mb=8000,
        runtime=15,
    params:
        typed_config={k: TYPED_CONFIG.get(k, {}) for k in ("preprocess", "segmentation")},
        budget_minutes=config["segmentation"]["budget_minutes"],
        memory_mb=config["segmentation"]["plan_memory_mb"],
    script:
        "../scripts/plan.py"


rule split:
    output:
        folds="results/split/folds.json",
    log:
        "logs/split/split.log",
    conda:
        "../envs/segment.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        subjects=TRAIN_SET,
        k=config["segmentation"]["folds"],
        seed=config["seed"],
        val_fraction=config["segmentation"]["val_fraction"],
    script:
        "../scripts/split.py"


rule train:
    input:
        images=get_training_images,
        labels=get_training_labels,
        folds="results/split/folds.json",
        plan=get_plan,
    output:
        model=protected("results/train/fold-{fold}/model.pt"),
        sidecar="results/train/fold-{fold}/model.pt.json",
        curve="results/train/fold-{fold}/learning_curve.tsv",
        plot=report(
            "results/train/fold-{fold}/learning_curve.png",
            caption="../report/train.rst",
            category="3. Segmentation",
            subcategory="Learning curves",
            labels={"fold": "{fold}"},
        ),
    log:
        "logs/train/fold-{fold}.log",
    benchmark:
        "logs/benchmarks/train/fold-{fold}.tsv"
    conda:
        "../envs/segment.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=mem_mb_scaled(8000, 10),
        runtime=120,
    params:
        subjects=get_training_subjects,
        n_sequences=len(SEQUENCES),
        settings=config["segmentation"],
        seed=config["seed"],
        deterministic=config["deterministic"],
    script:
        "../scripts/train.py"


rule predict:
    input:
        images=get_case_images,
        models=get_fold_model,
        plan=get_plan,
    output:
        prob="results/predict/sub-{subject}/sub-{subject}_prob.nii.gz",
        prob_sidecar="results/predict/sub-{subject}/sub-{subject}_prob.json",
        pred="results/predict/sub-{subject}/sub-{subject}_pred.nii.gz",
        pred_sidecar="results/predict/sub-{subject}/sub-{subject}_pred.json",
        entropy="results/predict/sub-{subject}/sub-{subject}_entropy.nii.gz",
        entropy_sidecar="results/predict/sub-{subject}/sub-{subject}_entropy.json",
        uncertainty="results/predict/sub-{subject}/sub-{subject}_uncertainty.json",
        qc=report(
            "results/predict/sub-{subject}/sub-{subject}_qc.png",
            caption="../report/predict.rst",
            category="3. Segmentation",
            subcategory="Predictions and uncertainty",
            labels={"subject": "{subject}"},
        ),
    log:
        "logs/predict/sub-{subject}.log",
    benchmark:
        "logs/benchmarks/predict/sub-{subject}.tsv"
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


# Every fold's model with its sidecar and learning curve, the split, the preprocessing the models expect
# (from the normalise sidecars), a fingerprint of the training images, the CV summary, a manifest and a
# model card. Part of rule all when models are trained; `medpipe model verify results/bundle` checks it.
rule bundle:
    input:
        unpack(get_bundle_inputs),
    output:
        bundle=directory("results/bundle"),
    log:
        "logs/bundle/bundle.log",
    benchmark:
        "logs/benchmarks/bundle/bundle.tsv"
    conda:
        "../envs/segment.yaml"
    threads: 1
    resources:
        mem_mb=4000,  # one subject's images at a time (the fingerprint), not the whole cohort
        runtime=30,
    params:
        subjects=TRAIN_SET,
        channels=SEQUENCES,
        label_name=config["label"]["name"],
    script:
        "../scripts/bundle.py"
