# Convert: DICOM series -> de-identified NIfTI (dcm2niix) or a NIfTI input re-written without header text,
# and the human label onto the reference grid.


rule convert_sequence:
    input:
        source=get_sequence_source,
    output:
        image="results/convert/sub-{subject}/sub-{subject}_{sequence}.nii.gz",
        sidecar="results/convert/sub-{subject}/sub-{subject}_{sequence}.json",
        deid="results/convert/sub-{subject}/sub-{subject}_{sequence}_deid.tsv",
        qc=report(
            "results/convert/sub-{subject}/sub-{subject}_{sequence}_qc.png",
            caption="../report/convert_sequence.rst",
            category="1. Conversion",
            subcategory="DICOM to NIfTI",
            labels={"subject": "{subject}", "sequence": "{sequence}"},
        ),
    log:
        "logs/convert_sequence/sub-{subject}_{sequence}.log",
    benchmark:
        "logs/benchmarks/convert_sequence/sub-{subject}_{sequence}.tsv"
    conda:
        "../envs/convert.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        selector=get_sequence_selector,
    script:
        "../scripts/convert_sequence.py"


rule convert_label:
    input:
        label=get_label_source,
        reference=get_reference_converted,
    output:
        mask="results/convert/sub-{subject}/sub-{subject}_desc-human_mask.nii.gz",
        sidecar="results/convert/sub-{subject}/sub-{subject}_desc-human_mask.json",
        qc=report(
            "results/convert/sub-{subject}/sub-{subject}_desc-human_mask_qc.png",
            caption="../report/convert_label.rst",
            category="1. Conversion",
            subcategory="Human label",
            labels={"subject": "{subject}"},
        ),
    log:
        "logs/convert_label/sub-{subject}.log",
    benchmark:
        "logs/benchmarks/convert_label/sub-{subject}.tsv"
    conda:
        "../envs/convert.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 20),
        runtime=10,
    params:
        roi=config["label"]["rtstruct_roi"],
        frame_of_reference=get_label_frame_policy,
        threshold=config["label"]["threshold"],
        classes=LABEL_CLASSES,
    script:
        "../scripts/convert_label.py"


# The second reader's mask (sheet column label2), imported exactly like the first reader's.
rule convert_reader2:
    input:
        label=get_label2_source,
        reference=get_reference_converted,
    output:
        mask="results/convert/sub-{subject}/sub-{subject}_desc-reader2_mask.nii.gz",
        sidecar="results/convert/sub-{subject}/sub-{subject}_desc-reader2_mask.json",
        qc=report(
            "results/convert/sub-{subject}/sub-{subject}_desc-reader2_mask_qc.png",
            caption="../report/convert_label.rst",
            category="1. Conversion",
            subcategory="Second reader",
            labels={"subject": "{subject}"},
        ),
    log:
        "logs/convert_reader2/sub-{subject}.log",
    benchmark:
        "logs/benchmarks/convert_reader2/sub-{subject}.tsv"
    conda:
        "../envs/convert.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 20),
        runtime=10,
    params:
        roi=config["label"]["rtstruct_roi"],
        frame_of_reference=get_label_frame_policy,
        threshold=config["label"]["threshold"],
        classes=LABEL_CLASSES,
    script:
        "../scripts/convert_label.py"


# The own human mask of a radiomics image read on its own grid (radiomics.images.<image>.mask, grid: native).
rule convert_image_label:
    input:
        label=get_image_label_source,
        reference="results/convert/sub-{subject}/sub-{subject}_{image}.nii.gz",
    output:
        mask="results/convert/sub-{subject}/sub-{subject}_img-{image}_desc-human_mask.nii.gz",
        sidecar="results/convert/sub-{subject}/sub-{subject}_img-{image}_desc-human_mask.json",
        qc=report(
            "results/convert/sub-{subject}/sub-{subject}_img-{image}_desc-human_mask_qc.png",
            caption="../report/convert_label.rst",
            category="1. Conversion",
            subcategory="Human label of each native-grid image",
            labels={"subject": "{subject}", "image": "{image}"},
        ),
    log:
        "logs/convert_image_label/sub-{subject}_{image}.log",
    benchmark:
        "logs/benchmarks/convert_image_label/sub-{subject}_{image}.tsv"
    conda:
        "../envs/convert.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 20),
        runtime=10,
    params:
        roi=config["label"]["rtstruct_roi"],
        frame_of_reference=get_label_frame_policy,
        threshold=config["label"]["threshold"],
        classes=LABEL_CLASSES,
    script:
        "../scripts/convert_label.py"
