# Preprocessing: co-registration, N4, skull stripping, normalisation onto the training grid.
# Input functions live in rules/common.smk.


rule coregister:
    input:
        moving=get_converted_sequence,
        fixed=get_reference_converted,
        brainmask=get_coregister_brainmask,
    output:
        image="results/coregister/sub-{subject}/sub-{subject}_{sequence}.nii.gz",
        sidecar="results/coregister/sub-{subject}/sub-{subject}_{sequence}.json",
        transform="results/coregister/sub-{subject}/sub-{subject}_{sequence}_xfm.mat",
        qc=report(
            "results/coregister/sub-{subject}/sub-{subject}_{sequence}_qc.png",
            caption="../report/coregister.rst",
            category="2. Preprocessing",
            subcategory="Co-registration",
            labels={"subject": "{subject}", "sequence": "{sequence}"},
        ),
    log:
        "logs/coregister/sub-{subject}_{sequence}.log",
    benchmark:
        "logs/benchmarks/coregister/sub-{subject}_{sequence}.tsv"
    wildcard_constraints:
        sequence=_alternatives(MOVING),
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 20),
        runtime=20,
    params:
        settings=config["preprocess"]["coregister"],
        seed=config["seed"],
    script:
        "../scripts/coregister.py"


# The human or automatic mask (reference grid) on a sequence's own grid, for radiomics of an image read
# there (radiomics.images.<image>.grid: native); the inverse of the sequence's co-registration.
rule native_mask:
    input:
        mask=get_native_mask_source,
        native=get_converted_sequence,
        transform="results/coregister/sub-{subject}/sub-{subject}_{sequence}_xfm.mat",
    output:
        mask="results/coregister/sub-{subject}/sub-{subject}_{sequence}_desc-{source}_mask.nii.gz",
        sidecar="results/coregister/sub-{subject}/sub-{subject}_{sequence}_desc-{source}_mask.json",
    log:
        "logs/native_mask/sub-{subject}_{sequence}_{source}.log",
    benchmark:
        "logs/benchmarks/native_mask/sub-{subject}_{sequence}_{source}.tsv"
    wildcard_constraints:
        sequence=_alternatives(MOVING),
        source="human|auto",
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 20),
        runtime=10,
    script:
        "../scripts/native_mask.py"


# N4 runs by modality (preprocess.n4.modalities, per_sequence); when off the image is passed through
# unchanged (same output files: a copy, a bias field of ones, the QC figure, sidecar "skipped": true).
rule n4:
    input:
        image=get_n4_input,
        converted=get_converted_sidecar,
    output:
        image="results/n4/sub-{subject}/sub-{subject}_{sequence}.nii.gz",
        sidecar="results/n4/sub-{subject}/sub-{subject}_{sequence}.json",
        field="results/n4/sub-{subject}/sub-{subject}_{sequence}_biasfield.nii.gz",
        qc=report(
            "results/n4/sub-{subject}/sub-{subject}_{sequence}_qc.png",
            caption="../report/n4.rst",
            category="2. Preprocessing",
            subcategory="N4 bias correction",
            labels={"subject": "{subject}", "sequence": "{sequence}"},
        ),
    log:
        "logs/n4/sub-{subject}_{sequence}.log",
    benchmark:
        "logs/benchmarks/n4/sub-{subject}_{sequence}.tsv"
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 40),
        runtime=15,
    params:
        settings=get_n4_settings,
        seed=config["seed"],
    script:
        "../scripts/n4.py"


rule skullstrip:
    input:
        image=get_n4_reference,
    output:
        mask="results/skullstrip/sub-{subject}/sub-{subject}_brainmask.nii.gz",
        sidecar="results/skullstrip/sub-{subject}/sub-{subject}_brainmask.json",
        qc=report(
            "results/skullstrip/sub-{subject}/sub-{subject}_brainmask_qc.png",
            caption="../report/skullstrip.rst",
            category="2. Preprocessing",
            subcategory="Skull stripping",
            labels={"subject": "{subject}"},
        ),
    log:
        "logs/skullstrip/sub-{subject}.log",
    benchmark:
        "logs/benchmarks/skullstrip/sub-{subject}.tsv"
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(4000, 60),
        runtime=15,
    params:
        settings=config["preprocess"]["skullstrip"],
    script:
        "../scripts/skullstrip.py"


rule normalise:
    input:
        image="results/n4/sub-{subject}/sub-{subject}_{sequence}.nii.gz",
        brainmask="results/skullstrip/sub-{subject}/sub-{subject}_brainmask.nii.gz",
        plan=get_plan,
    output:
        image="results/normalise/sub-{subject}/sub-{subject}_{sequence}.nii.gz",
        sidecar="results/normalise/sub-{subject}/sub-{subject}_{sequence}.json",
        qc=report(
            "results/normalise/sub-{subject}/sub-{subject}_{sequence}_qc.png",
            caption="../report/normalise.rst",
            category="2. Preprocessing",
            subcategory="Intensity normalisation",
            labels={"subject": "{subject}", "sequence": "{sequence}"},
        ),
    log:
        "logs/normalise/sub-{subject}_{sequence}.log",
    benchmark:
        "logs/benchmarks/normalise/sub-{subject}_{sequence}.tsv"
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 15),
        runtime=10,
    params:
        settings=config["preprocess"]["normalise"],
        target_spacing_mm=config["preprocess"]["target_spacing_mm"],
    script:
        "../scripts/normalise.py"


rule resample_label:
    input:
        label="results/convert/sub-{subject}/sub-{subject}_desc-human_mask.nii.gz",
        reference=f"results/normalise/sub-{{subject}}/sub-{{subject}}_{REF}.nii.gz",
    output:
        label="results/normalise/sub-{subject}/sub-{subject}_desc-human_mask.nii.gz",
        sidecar="results/normalise/sub-{subject}/sub-{subject}_desc-human_mask.json",
    log:
        "logs/resample_label/sub-{subject}.log",
    benchmark:
        "logs/benchmarks/resample_label/sub-{subject}.tsv"
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(1000, 20),
        runtime=5,
    script:
        "../scripts/resample_label.py"


# Template registration (preprocess.template.method other than none): the template and its masks once, the
# brain-extracted reference onto it per subject (affine + SyN), the template's masks back onto the native grid.
rule template:
    output:
        image="results/template/template_T1w.nii.gz",
        brain="results/template/template_desc-brain_mask.nii.gz",
        tissue="results/template/template_desc-tissue_dseg.nii.gz",
    log:
        "logs/template/template.log",
    benchmark:
        "logs/benchmarks/template/template.tsv"
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        settings=get_template_grid_settings,
    script:
        "../scripts/template.py"


rule template_register:
    input:
        image=get_n4_reference,
        brainmask="results/skullstrip/sub-{subject}/sub-{subject}_brainmask.nii.gz",
        template="results/template/template_T1w.nii.gz",
        template_brain="results/template/template_desc-brain_mask.nii.gz",
    output:
        affine="results/template/sub-{subject}/sub-{subject}_xfm_affine.mat",
        warp="results/template/sub-{subject}/sub-{subject}_xfm_warp.nii.gz",
        inverse_warp="results/template/sub-{subject}/sub-{subject}_xfm_inversewarp.nii.gz",
        image=f"results/template/sub-{{subject}}/sub-{{subject}}_space-template_{REF}.nii.gz",
        sidecar=f"results/template/sub-{{subject}}/sub-{{subject}}_space-template_{REF}.json",
        record="results/template/sub-{subject}/sub-{subject}_registration.json",
        qc=report(
            "results/template/sub-{subject}/sub-{subject}_space-template_qc.png",
            caption="../report/template.rst",
            category="2. Preprocessing",
            subcategory="Template registration",
            labels={"subject": "{subject}"},
        ),
    log:
        "logs/template_register/sub-{subject}.log",
    benchmark:
        "logs/benchmarks/template_register/sub-{subject}.tsv"
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(3000, 60),
        runtime=30,
    params:
        settings=config["preprocess"]["template"],
        seed=config["seed"],
    script:
        "../scripts/template_register.py"


rule template_to_native:
    input:
        mask=get_template_atlas,
        native=get_n4_reference,
        affine="results/template/sub-{subject}/sub-{subject}_xfm_affine.mat",
        warp="results/template/sub-{subject}/sub-{subject}_xfm_warp.nii.gz",
        inverse_warp="results/template/sub-{subject}/sub-{subject}_xfm_inversewarp.nii.gz",
    output:
        mask="results/template/sub-{subject}/sub-{subject}_space-native_desc-{atlas}_dseg.nii.gz",
        sidecar="results/template/sub-{subject}/sub-{subject}_space-native_desc-{atlas}_dseg.json",
        qc=report(
            "results/template/sub-{subject}/sub-{subject}_space-native_desc-{atlas}_qc.png",
            caption="../report/template_to_native.rst",
            category="2. Preprocessing",
            subcategory="Template masks in native space",
            labels={"subject": "{subject}", "atlas": "{atlas}"},
        ),
    log:
        "logs/template_to_native/sub-{subject}_{atlas}.log",
    benchmark:
        "logs/benchmarks/template_to_native/sub-{subject}_{atlas}.tsv"
    wildcard_constraints:
        atlas=_alternatives(TEMPLATE_ATLASES),
    conda:
        "../envs/preprocess.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(2000, 20),
        runtime=10,
    script:
        "../scripts/template_to_native.py"
