# Postprocess: the predicted label map back onto the native reference grid, cleaned per class
# (components, holes, morphology); optional nnU-Net-style largest-component decision; DICOM-SEG export.


rule postprocess:
    input:
        pred="results/predict/sub-{subject}/sub-{subject}_pred.nii.gz",
        reference=get_reference_converted,
        human=get_postprocess_human_mask,
        decision=get_postprocess_decision,
    output:
        mask="results/postprocess/sub-{subject}/sub-{subject}_desc-auto_mask.nii.gz",
        sidecar="results/postprocess/sub-{subject}/sub-{subject}_desc-auto_mask.json",
        qc=report(
            "results/postprocess/sub-{subject}/sub-{subject}_qc.png",
            caption="../report/postprocess.rst",
            category="4. Postprocessing",
            subcategory="Automatic mask on the native grid",
            labels={"subject": "{subject}"},
        ),
    log:
        "logs/postprocess/sub-{subject}.log",
    benchmark:
        "logs/benchmarks/postprocess/sub-{subject}.tsv"
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


rule postprocess_decision:
    input:
        preds=get_decision_predictions,
        labels=get_decision_labels,
    output:
        decision="results/postprocess/largest_component_decision.json",
    log:
        "logs/postprocess_decision/postprocess_decision.log",
    benchmark:
        "logs/benchmarks/postprocess_decision/postprocess_decision.tsv"
    conda:
        "../envs/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        labels=CLASS_VALUES,
        connectivity=config["postprocess"]["connectivity"],
    script:
        "../scripts/postprocess_decision.py"


rule export_dicom_seg:
    input:
        mask="results/postprocess/sub-{subject}/sub-{subject}_desc-auto_mask.nii.gz",
        dicom=get_dicom_dir,
        reference=get_reference_converted,
    output:
        seg="results/postprocess/sub-{subject}/sub-{subject}_desc-auto_mask.dcm",
        sidecar="results/postprocess/sub-{subject}/sub-{subject}_desc-auto_mask.dcm.json",
    log:
        "logs/export_dicom_seg/sub-{subject}.log",
    benchmark:
        "logs/benchmarks/export_dicom_seg/sub-{subject}.tsv"
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
