# Radiomics: pyradiomics features of every image of radiomics.images (the N4-corrected sequences on the
# reference grid, or with grid: native the converted sequence on its own grid; the reference sequence when
# empty), each with its own params file, inside the human and the automatic masks (on the image's grid), with
# IBSI codes and provenance on every row; then one long table with an image column.
# Optional robustness sources: the human mask eroded / dilated / shifted, or the image with noise.


rule radiomics:
    input:
        image=get_radiomics_image,
        mask=get_radiomics_mask,
        params=get_radiomics_params,
    output:
        features="results/radiomics/sub-{subject}/sub-{subject}_img-{image}_mask-{source}_features.tsv",
    log:
        "logs/radiomics/sub-{subject}_img-{image}_mask-{source}.log",
    benchmark:
        "logs/benchmarks/radiomics/sub-{subject}_img-{image}_mask-{source}.tsv"
    conda:
        "../envs/radiomics.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(3000, 30),
        runtime=20,
    params:
        region=config["label"]["name"],
    script:
        "../scripts/radiomics.py"


# A derived region (radiomics.regions: the peritumoral ring) of every mask source, on the radiomics image's grid.
rule region_mask:
    input:
        mask=get_radiomics_mask,
        image=get_perturb_image_source,  # without the noise: the body a ring is clipped to
    output:
        mask="results/radiomics/sub-{subject}/sub-{subject}_img-{image}_mask-{source}_region-{region}_mask.nii.gz",
        sidecar="results/radiomics/sub-{subject}/sub-{subject}_img-{image}_mask-{source}_region-{region}_mask.json",
    log:
        "logs/region_mask/sub-{subject}_img-{image}_mask-{source}_region-{region}.log",
    benchmark:
        "logs/benchmarks/region_mask/sub-{subject}_img-{image}_mask-{source}_region-{region}.tsv"
    conda:
        "../envs/radiomics.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(1500, 20),
        runtime=5,
    params:
        definition=get_region_definition,
    script:
        "../scripts/region_mask.py"


# Features of a derived region: the radiomics rule on the region's mask, rows with region = its name.
use rule radiomics as radiomics_region with:
    input:
        image=get_radiomics_image,
        mask=get_region_mask,
        params=get_radiomics_params,
    output:
        features="results/radiomics/sub-{subject}/sub-{subject}_img-{image}_mask-{source}_region-{region}_features.tsv",
    log:
        "logs/radiomics/sub-{subject}_img-{image}_mask-{source}_region-{region}.log",
    benchmark:
        "logs/benchmarks/radiomics/sub-{subject}_img-{image}_mask-{source}_region-{region}.tsv"
    params:
        region=get_region_name,


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
        "logs/benchmarks/radiomics_table/radiomics_table.tsv"
    conda:
        "../envs/radiomics.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        structure=config["label"]["name"],
    script:
        "../scripts/radiomics_table.py"


rule perturb_mask:
    input:
        mask="results/convert/sub-{subject}/sub-{subject}_desc-human_mask.nii.gz",
    output:
        mask="results/radiomics/sub-{subject}/sub-{subject}_desc-{perturbation}_mask.nii.gz",
        sidecar="results/radiomics/sub-{subject}/sub-{subject}_desc-{perturbation}_mask.json",
    log:
        "logs/perturb_mask/sub-{subject}_{perturbation}.log",
    benchmark:
        "logs/benchmarks/perturb_mask/sub-{subject}_{perturbation}.tsv"
    conda:
        "../envs/radiomics.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(1000, 10),
        runtime=5,
    script:
        "../scripts/perturb_mask.py"


# The same perturbations of the human mask of an image read on its own grid (grid: native).
use rule perturb_mask as perturb_native_mask with:
    input:
        mask=get_image_human_mask,
    output:
        mask="results/radiomics/sub-{subject}/sub-{subject}_img-{image}_desc-{perturbation}_mask.nii.gz",
        sidecar="results/radiomics/sub-{subject}/sub-{subject}_img-{image}_desc-{perturbation}_mask.json",
    log:
        "logs/perturb_mask/sub-{subject}_img-{image}_{perturbation}.log",
    benchmark:
        "logs/benchmarks/perturb_mask/sub-{subject}_img-{image}_{perturbation}.tsv"


rule perturb_image:
    input:
        image=get_perturb_image_source,
        mask=get_image_human_mask,
    output:
        image="results/radiomics/sub-{subject}/sub-{subject}_desc-noise_{image}.nii.gz",
        sidecar="results/radiomics/sub-{subject}/sub-{subject}_desc-noise_{image}.json",
    log:
        "logs/perturb_image/sub-{subject}_{image}.log",
    benchmark:
        "logs/benchmarks/perturb_image/sub-{subject}_{image}.tsv"
    conda:
        "../envs/radiomics.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb_scaled(1000, 20),
        runtime=5,
    params:
        fraction=config["radiomics"]["noise_fraction"],
        seed=config["seed"],
    script:
        "../scripts/perturb_image.py"
