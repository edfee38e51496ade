# Validation of config and subject sheet, wildcard constraints and every input function.
import copy
from pathlib import Path

from snakemake.logging import logger

from medpipe.audit.failures import write_failures
from medpipe.audit.review import excluded_subjects
from medpipe.convert.classes import check_label_classes, evaluation_labels, whole_label
from medpipe.core.config import (
    allowed_values,
    check_radiomics_only,
    load_subject_sheet,
    nifti_inputs,
    native_images,
    native_mask_files,
    radiomics_images,
    validate_config,
)
from medpipe.core.determinism import export_job_environment
from medpipe.core.errors import ConfigError
from medpipe.core.records import uncertainty_path
from medpipe.core.resources import estimate_mem_mb
from medpipe.preprocess.template_stage import check_template_atlases
from medpipe.core.sidecar import sidecar_path
from medpipe.labeling.campaign import campaign_from_config
from medpipe.labeling.select import read_selection
from medpipe.radiomics.perturb import MASK_PERTURBATIONS
from medpipe.radiomics.regions import configured_regions
from medpipe.segment.split import assign_folds
from medpipe.signature.stage import check_signature_config

SCHEMAS = Path(workflow.basedir) / "config" / "schemas"

# The config as typed (config files and --config), before the schema's defaults: what a plan must keep.
TYPED_CONFIG = copy.deepcopy(dict(config))
validate_config(config, SCHEMAS / "config.schema.yaml")
SHEET = load_subject_sheet(
    config["subjects"],
    SCHEMAS / "subjects.schema.yaml",
    required_files=nifti_inputs(config),
    labelled_files=native_mask_files(config),
)

_UNKNOWN = sorted(set(config["label"]["geometry_subjects"]) - set(SHEET.index))
if _UNKNOWN:
    raise ConfigError(f"label.geometry_subjects: {_UNKNOWN} are not subjects of {config['subjects']}")
# Must be in the environment before each job's Python starts (ITK reads its thread count once).
JOB_ENVIRONMENT = export_job_environment(config["deterministic"])

EXCLUDED = excluded_subjects(config["review"]["signoff"])
SUBJECTS = sorted(s for s in SHEET.index if s not in EXCLUDED)
LABELLED = [s for s in SUBJECTS if SHEET.loc[s, "label"]]
# Sheet column `set`: only labelled `train` subjects are trained on (k-fold); labelled `test` and `external`
# subjects are segmented by the ensemble of all folds and scored per set.
TRAIN_SET = [s for s in LABELLED if SHEET.loc[s, "set"] == "train"]
# Sheet column `label2`: a second reader's mask of the labelled subject (inter-reader agreement, the ceiling).
SECOND_READER = [s for s in LABELLED if SHEET.loc[s, "label2"]]
SETS = {s: SHEET.loc[s, "set"] for s in SUBJECTS}
SITES = {s: SHEET.loc[s, "site"] for s in SUBJECTS}
SEQUENCES = list(config["sequences"])
REF = config["reference_sequence"]
MOVING = [s for s in SEQUENCES if s != REF]
# automatic_segmentation: false is a radiomics-only run: no split/train/predict/postprocess/evaluate jobs,
# features of the human masks only (validate_config refuses radiomics.sources auto there).
SEGMENT = config["automatic_segmentation"]
check_radiomics_only(config, SUBJECTS, LABELLED)
# segmentation.bundle: inference only with an exported model bundle, verified and checked against this run's
# config here, before any job (torch is imported only then).
# A job re-reads this file: it reads the record only (the main process verified the bundle before any job).
BUNDLE = None
if SEGMENT and config["segmentation"]["bundle"] and workflow.is_main_process:
    from medpipe.segment.compatible import bundle_for_run

    BUNDLE = bundle_for_run(config, SUBJECTS)
elif SEGMENT and config["segmentation"]["bundle"]:
    from medpipe.segment.bundle_record import read_bundle_unverified

    BUNDLE = read_bundle_unverified(config["segmentation"]["bundle"])
TRAIN = SEGMENT and bool(LABELLED) and BUNDLE is None  # this run trains its own fold models
# segmentation.plan: auto (a training run): rules fingerprint and plan write results/plan/, which normalise,
# train and predict read (medpipe.core.plan_record.planned_settings).
PLAN = "results/plan/plan.json" if TRAIN and config["segmentation"]["plan"] == "auto" else None
PLAN_FILES = [PLAN, "results/plan/fingerprint.json", "results/plan/plan.tsv"] if PLAN else []
# Domain-shift flags (medpipe.evaluate.shift) need a shift reference: this run's (fitted on its training set's
# cross-validated predictions) or the bundle's; a bundle exported without one gets no flags.
SHIFT_REFERENCE = None
if TRAIN and len(TRAIN_SET) >= 2:
    SHIFT_REFERENCE = "results/evaluate/shift_reference.json"
elif BUNDLE is not None and (BUNDLE.root / "evaluate" / "shift_reference.json").is_file():
    SHIFT_REFERENCE = str(BUNDLE.root / "evaluate" / "shift_reference.json")
FOLDS = assign_folds(TRAIN_SET, config["segmentation"]["folds"], config["seed"]) if TRAIN else {}
N_FOLDS = config["segmentation"]["folds"]
SOURCES = [s for s in config["radiomics"]["sources"] if s == "auto" or LABELLED]
# Perturbed copies of the human mask (robustness analysis); each is one more radiomics mask source.
PERTURBATIONS = list(config["radiomics"]["perturbations"]) if LABELLED else []
# Outcome models (signature stage); the outcome table is validated at start like the subject sheet.
OUTCOMES = config["signature"]["outcomes"]
SIGNATURE_SOURCES = list(config["signature"]["sources"]) if OUTCOMES else []
if OUTCOMES:
    check_signature_config(
        config["signature"], subjects=SUBJECTS, labelled=LABELLED, sources=[*SOURCES, *PERTURBATIONS]
    )


def _workflow_path(path):
    """A relative config path found in the working directory, else in the workflow's folder."""
    p = Path(path)
    return str(p if p.is_absolute() or p.exists() else Path(workflow.basedir) / p)


# Images radiomics extracts from (radiomics.images; the reference sequence when empty) -> their params file.
RADIOMICS_IMAGES = {name: _workflow_path(p) for name, p in radiomics_images(config).items()}
# Those read on their own grid (grid: native) -> their own human mask file in the subject's folder, or None.
NATIVE_IMAGES = native_images(config)  # their own masks are checked with the sheet (native_mask_files)
# Label classes (label.classes: several structures per subject, one declared class too) as records for the label
# import; None without label.classes (the one structure label.name, a 0/1 mask, as before).
_CLASSES = check_label_classes(config)
LABEL_CLASSES = [c.to_dict() for c in _CLASSES] if config["label"]["classes"] else None
# Class name -> value in the masks (evaluation rows and the postprocess decision per class; {label.name: 1} for one
# structure), in value order; the DICOM-SEG export gets one segment per class (None: the one label_name segment).
CLASS_VALUES = {c.name: c.value for c in sorted(_CLASSES, key=lambda c: c.value)}
SEG_CLASSES = None if LABEL_CLASSES is None else CLASS_VALUES
# Evaluation rows -> the mask values they score: every class, with two or more classes the whole structure
# label.name (their union), then the BraTS-style unions of evaluate.regions; the shift flags read the whole one.
EVAL_LABELS = evaluation_labels(config, _CLASSES)
WHOLE_LABEL = whole_label(config, _CLASSES)
# Derived radiomics regions (radiomics.regions: a peritumoral ring around every mask source) -> definition;
# the structure's own rows are region label.name.
REGIONS = configured_regions(config)
# Template registration (preprocess.template): the built-in masks and the configured atlases, each brought back
# onto the native reference grid (checked at start: readable 3D label maps).
TEMPLATE = config["preprocess"]["template"]
TEMPLATE_ATLASES = [] if TEMPLATE["method"] == "none" else ["brain", "tissue", *TEMPLATE["atlases"]]
check_template_atlases({name: _workflow_path(p) for name, p in TEMPLATE["atlases"].items()})
if "reader2" in SOURCES and not SECOND_READER:
    raise ConfigError("radiomics.sources lists reader2, but no labelled subject has a label2 in the subject sheet")
if "reader2" in SOURCES and NATIVE_IMAGES:
    raise ConfigError(
        f"radiomics.sources reader2: the second reader's masks are on the reference grid, but radiomics.images "
        f"{sorted(NATIVE_IMAGES)} are read on their own grid (grid: native)"
    )
# Smart labeling (labeling.rounds > 0): round r trains on the initial set plus the corrected batches of rounds
# 0..r-1; which subjects those are is known once rule labeling_select (a checkpoint) has run for each round.
CAMPAIGN = None
if config["labeling"]["rounds"]:
    if not TRAIN:
        raise ConfigError(
            "labeling.rounds needs a run that trains its own models (automatic_segmentation true, labelled "
            "subjects, no segmentation.bundle)"
        )
    CAMPAIGN = campaign_from_config(
        config["labeling"],
        sheet_order=[s for s in SHEET.index if s in SUBJECTS],
        labelled=LABELLED,
        sets=SETS,
        seed=config["seed"],
    )
FAILED_JOBS = "logs/failed_jobs.tsv"  # written by the Snakefile's onerror handler
SHEET_PATHS = [v for column in ("dicom", "label", "label2") for v in SHEET[column] if v]  # redacted from its reasons


def _alternatives(values):
    return "|".join(values) if values else "(?!)"


wildcard_constraints:
    subject="[A-Za-z0-9]+",  # the sheet schema enforces it; an alternation of 1,000 IDs slows the DAG
    sequence=_alternatives(SEQUENCES),
    moving=_alternatives(MOVING),
    source=_alternatives([*allowed_values("radiomics", "sources"), *allowed_values("radiomics", "perturbations")]),
    perturbation=_alternatives(MASK_PERTURBATIONS),
    image=_alternatives(list(RADIOMICS_IMAGES)),
    region=_alternatives(list(REGIONS)),
    atlas=_alternatives(TEMPLATE_ATLASES),
    fold=r"\d+",
    round=r"\d+",


# --- resources -------------------------------------------------------------------------------


def mem_mb_scaled(base_mb, per_image_mib):
    """``mem_mb`` of a rule: at least ``base_mb``, more for large input images, more on each retry."""

    def _mem_mb(wildcards, input, attempt):
        return estimate_mem_mb(input, base_mb=base_mb, per_image_mib=per_image_mib, attempt=attempt)

    return _mem_mb


# --- convert ---------------------------------------------------------------------------------


def get_dicom_dir(wildcards):
    return SHEET.loc[wildcards.subject, "dicom"]


def get_sequence_source(wildcards):
    """The subject's DICOM folder, or the NIfTI file that the sequence's ``nifti`` selector names in it."""
    folder = SHEET.loc[wildcards.subject, "dicom"]
    nifti = config["sequences"][wildcards.sequence].get("nifti")
    return str(Path(folder) / nifti) if nifti else folder


def get_sequence_selector(wildcards):
    return config["sequences"][wildcards.sequence]


def get_label_source(wildcards):
    return SHEET.loc[wildcards.subject, "label"]


def get_label2_source(wildcards):
    return SHEET.loc[wildcards.subject, "label2"]


def get_reader_metrics(wildcards):
    """Per-subject second reader vs human metric tables (rule evaluate_reader2)."""
    return [f"results/evaluate/readers/sub-{s}_metrics.tsv" for s in SECOND_READER]


def get_label_frame_policy(wildcards):
    """label.frame_of_reference of this subject: geometry when listed in label.geometry_subjects."""
    label = config["label"]
    return "geometry" if wildcards.subject in label["geometry_subjects"] else label["frame_of_reference"]


def get_converted_sequence(wildcards):
    return f"results/convert/sub-{wildcards.subject}/sub-{wildcards.subject}_{wildcards.sequence}.nii.gz"


def get_reference_converted(wildcards):
    return f"results/convert/sub-{wildcards.subject}/sub-{wildcards.subject}_{REF}.nii.gz"


# --- preprocess ------------------------------------------------------------------------------


def get_coregister_brainmask(wildcards):
    """The reference's brain mask when sequences are aligned onto the brain-extracted reference."""
    if config["preprocess"]["coregister"]["fixed"] != "brain":
        return []
    return [f"results/skullstrip/sub-{wildcards.subject}/sub-{wildcards.subject}_brainmask.nii.gz"]


def get_n4_input(wildcards):
    if wildcards.sequence == REF:
        return get_converted_sequence(wildcards)
    return f"results/coregister/sub-{wildcards.subject}/sub-{wildcards.subject}_{wildcards.sequence}.nii.gz"


def get_converted_sidecar(wildcards):
    """Sidecar of the converted sequence: its modality record (medpipe.core.records.read_modality)."""
    return f"results/convert/sub-{wildcards.subject}/sub-{wildcards.subject}_{wildcards.sequence}.json"


def get_n4_settings(wildcards):
    """preprocess.n4 with only this sequence's per_sequence entry (editing another's does not re-run this job)."""
    n4 = config["preprocess"]["n4"]
    own = {k: v for k, v in n4["per_sequence"].items() if k == wildcards.sequence}
    return {**n4, "per_sequence": own}


def get_n4_reference(wildcards):
    return f"results/n4/sub-{wildcards.subject}/sub-{wildcards.subject}_{REF}.nii.gz"


def get_template_grid_settings(wildcards):
    """What rule template's files depend on (registration settings do not re-make the template)."""
    return {k: TEMPLATE[k] for k in ("method", "resolution_mm", "brain_threshold")}


def get_template_atlas(wildcards):
    """The template-space label map that template_to_native brings back: built in (rule template), or an atlas."""
    if wildcards.atlas == "brain":
        return "results/template/template_desc-brain_mask.nii.gz"
    if wildcards.atlas == "tissue":
        return "results/template/template_desc-tissue_dseg.nii.gz"
    return _workflow_path(TEMPLATE["atlases"][wildcards.atlas])


def template_outputs(subjects):
    """Per subject: the reference in template space, the registration check and every label map back home."""
    if not TEMPLATE_ATLASES:
        return []
    outs = [f"results/template/sub-{s}/sub-{s}_registration.json" for s in subjects]
    outs += [f"results/template/sub-{s}/sub-{s}_space-template_{REF}.nii.gz" for s in subjects]
    return outs + [
        f"results/template/sub-{s}/sub-{s}_space-native_desc-{a}_dseg.nii.gz"
        for s in subjects
        for a in TEMPLATE_ATLASES
    ]


def _normalised(subject, sequence):
    return f"results/normalise/sub-{subject}/sub-{subject}_{sequence}.nii.gz"


def _label_on_grid(subject):
    return f"results/normalise/sub-{subject}/sub-{subject}_desc-human_mask.nii.gz"


# --- segment ---------------------------------------------------------------------------------


def get_plan(wildcards):
    """results/plan/plan.json when the run is planned (segmentation.plan: auto), else nothing."""
    return [PLAN] if PLAN else []


def get_fingerprint_inputs(wildcards):
    """The training subjects' images as they go into resampling (n4 output, on the reference grid), their
    converted images (whose sidecars hold the modality) and their human labels: rule fingerprint's inputs."""
    return {
        "images": [f"results/n4/sub-{s}/sub-{s}_{q}.nii.gz" for s in TRAIN_SET for q in SEQUENCES],
        "converted": [f"results/convert/sub-{s}/sub-{s}_{q}.nii.gz" for s in TRAIN_SET for q in SEQUENCES],
        "labels": [f"results/convert/sub-{s}/sub-{s}_desc-human_mask.nii.gz" for s in TRAIN_SET],
    }


def get_training_subjects(wildcards):
    return [s for s in TRAIN_SET if FOLDS[s] != int(wildcards.fold)]


def get_training_images(wildcards):
    return [_normalised(s, q) for s in get_training_subjects(wildcards) for q in SEQUENCES]


def get_training_labels(wildcards):
    return [_label_on_grid(s) for s in get_training_subjects(wildcards)]


def get_case_images(wildcards):
    return [_normalised(wildcards.subject, q) for q in SEQUENCES]


def get_bundle_inputs(wildcards):
    """Every fold's model (+ sidecar, learning curve), the split, the training images (+ normalise sidecars) and
    labels of the training set, and the evaluation summary (its cross-validation rows): the inputs of rule bundle."""
    if not TRAIN:
        raise ConfigError(
            "results/bundle needs models trained by this run: automatic_segmentation is false, no subject has "
            "a label, or the run uses segmentation.bundle"
        )
    folds = [f"results/train/fold-{k}" for k in range(N_FOLDS)]
    images = [_normalised(s, q) for s in TRAIN_SET for q in SEQUENCES]
    return {
        "models": [f"{f}/model.pt" for f in folds],
        "model_sidecars": [f"{f}/model.pt.json" for f in folds],  # read beside each model
        "curves": [f"{f}/learning_curve.tsv" for f in folds],
        "folds": "results/split/folds.json",
        "images": images,
        "image_sidecars": [str(sidecar_path(p)) for p in images],  # read beside each image
        "labels": [_label_on_grid(s) for s in TRAIN_SET],
        "cv_summary": "results/evaluate/summary.tsv",
        **({"shift_reference": SHIFT_REFERENCE} if SHIFT_REFERENCE else {}),
        **({"plan_files": PLAN_FILES[:2]} if PLAN else {}),
    }


def get_fold_model(wildcards):
    """Model(s) that never saw the subject: its held-out fold, or every fold for unlabelled, test and external
    subjects (every fold of segmentation.bundle in an inference-only run)."""
    if BUNDLE is not None:
        return [str(p) for p in BUNDLE.models]
    if wildcards.subject in FOLDS:
        return [f"results/train/fold-{FOLDS[wildcards.subject]}/model.pt"]
    return [f"results/train/fold-{k}/model.pt" for k in range(N_FOLDS)]


# --- postprocess -----------------------------------------------------------------------------


def get_postprocess_human_mask(wildcards):
    s = wildcards.subject
    return f"results/convert/sub-{s}/sub-{s}_desc-human_mask.nii.gz" if s in LABELLED else []


def get_postprocess_decision(wildcards):
    if config["postprocess"]["largest_component"] == "auto":
        return "results/postprocess/largest_component_decision.json"
    return []


def get_decision_predictions(wildcards):
    """Cross-validation predictions only: a post-processing choice is fitted on the training set, never on test
    or external subjects."""
    return [f"results/predict/sub-{s}/sub-{s}_pred.nii.gz" for s in TRAIN_SET]


def get_decision_labels(wildcards):
    return [_label_on_grid(s) for s in TRAIN_SET]


def get_all_postprocess_qc(wildcards):
    return [f"results/postprocess/sub-{s}/sub-{s}_qc.png" for s in LABELLED]


# --- evaluate / radiomics / stats ------------------------------------------------------------


def get_all_subject_metrics(wildcards):
    return [f"results/evaluate/sub-{s}/sub-{s}_metrics.tsv" for s in LABELLED]


def get_perturb_image_source(wildcards):
    """The radiomics image named by the image wildcard: the N4-corrected sequence on the reference grid, or the
    converted sequence on its own grid (grid: native)."""
    s, image = wildcards.subject, wildcards.image
    if image in NATIVE_IMAGES:
        return f"results/convert/sub-{s}/sub-{s}_{image}.nii.gz"
    return f"results/n4/sub-{s}/sub-{s}_{image}.nii.gz"


def get_radiomics_image(wildcards):
    """The radiomics image (:func:`get_perturb_image_source`), or its noisy copy for the noise source."""
    s, image = wildcards.subject, wildcards.image
    if wildcards.source == "noise":
        return f"results/radiomics/sub-{s}/sub-{s}_desc-noise_{image}.nii.gz"
    return get_perturb_image_source(wildcards)


def _human_mask_of(s, image):
    """The human mask on the grid of the radiomics image: the reference one, the image's own, or the reference
    one brought onto the image's own grid."""
    if image not in NATIVE_IMAGES:
        return f"results/convert/sub-{s}/sub-{s}_desc-human_mask.nii.gz"
    if NATIVE_IMAGES[image]:
        return f"results/convert/sub-{s}/sub-{s}_img-{image}_desc-human_mask.nii.gz"
    return f"results/coregister/sub-{s}/sub-{s}_{image}_desc-human_mask.nii.gz"


def get_image_human_mask(wildcards):
    return _human_mask_of(wildcards.subject, wildcards.image)


def get_image_label_source(wildcards):
    """The own human mask of a native-grid image: radiomics.images.<image>.mask in the subject's folder."""
    return str(Path(SHEET.loc[wildcards.subject, "dicom"]) / NATIVE_IMAGES[wildcards.image])


def get_native_mask_source(wildcards):
    """Rule native_mask: the reference-grid human or automatic mask to bring onto a sequence's own grid."""
    s = wildcards.subject
    if wildcards.source == "human":
        return f"results/convert/sub-{s}/sub-{s}_desc-human_mask.nii.gz"
    return f"results/postprocess/sub-{s}/sub-{s}_desc-auto_mask.nii.gz"


def get_radiomics_params(wildcards):
    return RADIOMICS_IMAGES[wildcards.image]


def get_radiomics_mask(wildcards):
    s, image, source = wildcards.subject, wildcards.image, wildcards.source
    if source == "reader2":  # reference-grid images only (checked at start)
        return f"results/convert/sub-{s}/sub-{s}_desc-reader2_mask.nii.gz"
    if source in ("human", "noise"):
        return _human_mask_of(s, image)
    native = "" if image not in NATIVE_IMAGES else f"img-{image}_"
    if source in PERTURBATIONS:
        return f"results/radiomics/sub-{s}/sub-{s}_{native}desc-{source}_mask.nii.gz"
    if native:
        return f"results/coregister/sub-{s}/sub-{s}_{image}_desc-auto_mask.nii.gz"
    return f"results/postprocess/sub-{s}/sub-{s}_desc-auto_mask.nii.gz"


def get_region_definition(wildcards):
    """``radiomics.regions.<region>`` (schema defaults applied) as a params function of rule region_mask."""
    return REGIONS[wildcards.region]


def get_region_name(wildcards):
    """The ``region`` column of a derived region's feature rows: its name."""
    return wildcards.region


def get_region_mask(wildcards):
    """A derived region's mask; the noise source's is the human mask's (the noise is on the image, not the mask)."""
    s, image = wildcards.subject, wildcards.image
    source = "human" if wildcards.source == "noise" else wildcards.source
    return f"results/radiomics/sub-{s}/sub-{s}_img-{image}_mask-{source}_region-{wildcards.region}_mask.nii.gz"


def get_all_feature_tables(wildcards):
    """Every feature table: per image, mask source and subject, the structure's and each derived region's."""
    subjects = {"human": LABELLED, "auto": SUBJECTS, "reader2": SECOND_READER, **{p: LABELLED for p in PERTURBATIONS}}
    regions = ["", *(f"_region-{r}" for r in REGIONS)]
    return [
        f"results/radiomics/sub-{s}/sub-{s}_img-{image}_mask-{src}{region}_features.tsv"
        for image in RADIOMICS_IMAGES
        for src in [*SOURCES, *PERTURBATIONS]
        for s in subjects[src]
        for region in regions
    ]


def get_compared_source(index):
    """``radiomics.sources[index]`` as a params function of reproducibility (a [human]-only run lists one)."""

    def _source(wildcards):
        return config["radiomics"]["sources"][index]

    return _source


def get_uncertainty_files(wildcards):
    """Uncertainty records of predict, the template-registration checks, the human labels' sidecars (flagged
    when placed by geometry across frames of reference) and the domain-shift records of every subject."""
    records = [str(uncertainty_path("results", s)) for s in SUBJECTS] if SEGMENT else []
    records += [f"results/template/sub-{s}/sub-{s}_registration.json" for s in SUBJECTS] if TEMPLATE_ATLASES else []
    records += [f"results/convert/sub-{s}/sub-{s}_desc-human_mask.json" for s in LABELLED]  # placed by geometry
    return records + (shift_records() if SHIFT_REFERENCE else [])


def shift_records():
    """One domain-shift review record per subject (written by rule shift_flags)."""
    return [f"results/evaluate/shift/sub-{s}_shift.json" for s in SUBJECTS]


def _shift_case_inputs(subjects):
    """What the shift flags read per subject: native reference grid, normalised channels (their sidecars hold
    the intensity profiles), automatic mask and uncertainty record."""
    normalised = [_normalised(s, q) for s in subjects for q in SEQUENCES]
    return {
        "reference_images": [f"results/convert/sub-{s}/sub-{s}_{REF}.nii.gz" for s in subjects],
        "normalised": normalised,
        "normalised_sidecars": [str(sidecar_path(p)) for p in normalised],  # read beside each image
        "auto_masks": [f"results/postprocess/sub-{s}/sub-{s}_desc-auto_mask.nii.gz" for s in subjects],
        "uncertainty": [str(uncertainty_path("results", s)) for s in subjects],
    }


def get_shift_reference_inputs(wildcards):
    """The training subjects' facts and their cross-validated metrics: inputs of rule shift_reference."""
    return {**_shift_case_inputs(TRAIN_SET), "metrics": "results/evaluate/metrics.tsv"}


def get_shift_flag_inputs(wildcards):
    """Every subject's facts, the shift reference (this run's or the bundle's) and, when subjects are labelled,
    their metrics: inputs of rule shift_flags."""
    inputs = {**_shift_case_inputs(SUBJECTS), "reference": SHIFT_REFERENCE}
    if LABELLED:
        inputs["metrics"] = "results/evaluate/metrics.tsv"
    return inputs


def get_signature_inputs(wildcards):
    """Feature table, outcome table and (for signature.preselect) the stats tables that restrict the features."""
    inputs = {"features": "results/radiomics/features.tsv", "outcomes": OUTCOMES}
    how = config["signature"]["preselect"]
    if how in ("reproducible", "reproducible_and_robust"):
        inputs["reproducibility"] = "results/stats/reproducibility.tsv"
    if how in ("robust", "reproducible_and_robust"):
        inputs["robustness"] = "results/stats/robustness.tsv"
    return inputs


def get_signoff(wildcards):
    """The reviewer sign-off file (config review.signoff) as an input, so editing it re-makes the review page."""
    signoff = config["review"]["signoff"]
    return [signoff] if signoff else []


# --- labeling --------------------------------------------------------------------------------


def _round_dir(r):
    return f"results/labeling/round-{r}"


def labeling_batch(r):
    """Subjects selected for correction in round r (rule labeling_select's record, read once it ran)."""
    return read_selection(checkpoints.labeling_select.get(round=str(r)).output.selection)


def labeling_labelled(r):
    """Subjects round r trains on: the initial set, then each earlier round's batch in selection order."""
    subjects = list(CAMPAIGN.initial)
    for k in range(int(r)):
        subjects += labeling_batch(k)
    return subjects


def labeling_pool(r):
    """Candidates still unlabelled in round r, in sheet order."""
    done = set(labeling_labelled(r))
    return [s for s in CAMPAIGN.candidates if s not in done]


def _correction(r, s):
    """The corrected mask of subject s in round r: the corrections folder, or (simulate) its known label."""
    if CAMPAIGN.mode == "simulate":
        return f"results/convert/sub-{s}/sub-{s}_desc-human_mask.nii.gz"
    return str(CAMPAIGN.correction_file(int(r), s))


def get_labeling_train_inputs(wildcards):
    """Images and labels (on the training grid) of round r's subjects, the plan, and round r-1's model when
    fine-tuning: inputs of rule labeling_train."""
    r = int(wildcards.round)
    subjects = labeling_labelled(r)
    accepted_in = {s: k for k in range(r) for s in labeling_batch(k)}
    labels = [
        (
            f"{_round_dir(accepted_in[s])}/accepted/sub-{s}_space-train_mask.nii.gz"
            if s in accepted_in
            else _label_on_grid(s)
        )
        for s in subjects
    ]
    inputs = {"images": [_normalised(s, q) for s in subjects for q in SEQUENCES], "labels": labels}
    inputs["plan"] = get_plan(wildcards)
    if r > 0 and config["labeling"]["fine_tune"]["enabled"]:
        inputs["init"] = f"{_round_dir(r - 1)}/model.pt"
    return inputs


def get_labeling_train_subjects(wildcards):
    return labeling_labelled(int(wildcards.round))


def get_labeling_pool_uncertainty(wildcards):
    r = wildcards.round
    return [f"{_round_dir(r)}/predict/sub-{s}_uncertainty.json" for s in labeling_pool(int(r))]


def get_labeling_pool(wildcards):
    return labeling_pool(int(wildcards.round))


def get_labeling_explicit_batch(wildcards):
    return CAMPAIGN.explicit_batch(int(wildcards.round))


def get_labeling_worklist_files(wildcards):
    """Per subject of round r's batch: image to open, mask to edit, DICOM-SEG and where the correction goes."""
    r = wildcards.round
    batch = labeling_batch(int(r))
    files = {
        "images": {s: f"results/convert/sub-{s}/sub-{s}_{REF}.nii.gz" for s in batch},
        "masks": {s: f"{_round_dir(r)}/native/sub-{s}_desc-auto_mask.nii.gz" for s in batch},
        "corrections": {s: _correction(r, s) for s in batch},
        "dicom_segs": {},
    }
    if config["postprocess"]["dicom_seg"]:
        files["dicom_segs"] = {s: f"{_round_dir(r)}/native/sub-{s}_desc-auto_mask.dcm" for s in batch}
    return files


def get_labeling_worklist_inputs(wildcards):
    files = get_labeling_worklist_files(wildcards)
    return {key: list(files[key].values()) for key in ("images", "masks", "dicom_segs")}


def get_labeling_correction(wildcards):
    return _correction(wildcards.round, wildcards.subject)


def get_labeling_batch(wildcards):
    return labeling_batch(int(wildcards.round))


def get_labeling_accepted(wildcards):
    r = wildcards.round
    return [f"{_round_dir(r)}/accepted/sub-{s}_mask.nii.gz" for s in labeling_batch(int(r))]


def get_labeling_corrections_folder(wildcards):
    return None if CAMPAIGN.mode == "simulate" else str(CAMPAIGN.correction_folder(int(wildcards.round)))


def get_labeling_score_truth(wildcards):
    """What round r's prediction of a subject is scored against: the accepted correction of a batch subject,
    the human label of a held-out subject."""
    s, r = wildcards.subject, wildcards.round
    if s in CAMPAIGN.held_out:
        return f"results/convert/sub-{s}/sub-{s}_desc-human_mask.nii.gz"
    return f"{_round_dir(r)}/accepted/sub-{s}_mask.nii.gz"


_LABELING_WARNED = set()


def labeling_progress():
    """Rounds run so far, rounds whose corrections are in, and each round's status. The campaign stops at the
    first round whose corrections are incomplete (human mode), listing the missing files."""
    ran, corrected, status = [], [], {}
    for r in range(CAMPAIGN.rounds):
        ran.append(r)
        if not labeling_pool(r):
            status[r] = "pool exhausted: every candidate is labelled"
            break
        batch = labeling_batch(r)
        missing = [] if CAMPAIGN.mode == "simulate" else [_correction(r, s) for s in batch]
        missing = [f for f in missing if not Path(f).exists()]
        if missing and r == CAMPAIGN.rounds - 1:
            status[r] = f"last round: batch exported for correction ({len(missing)} of {len(batch)} not corrected)"
            break
        if missing:
            status[r] = f"waiting for corrections: {len(missing)} of {len(batch)} missing: {', '.join(missing)}"
            if r not in _LABELING_WARNED:
                _LABELING_WARNED.add(r)
                logger.warning(
                    f"labeling: round {r} waits for corrections (worklist {_round_dir(r)}/worklist.tsv); "
                    f"missing: {', '.join(missing)}. The campaign stops here; run again once they are in place."
                )
            break
        corrected.append(r)
        status[r] = "corrected"
    return ran, corrected, status


def get_labeling_rounds_inputs(wildcards):
    """Per round run: model, training benchmark, learning curve, held-out metrics, selection and worklist;
    per corrected round: accepted.tsv and the batch's metrics: inputs of rule labeling_rounds."""
    ran, corrected, status = labeling_progress()
    selected = [r for r in ran if "pool exhausted" not in status[r]]
    held = list(CAMPAIGN.held_out)
    return {
        "models": [f"{_round_dir(r)}/model.pt" for r in ran],
        "benchmarks": [f"logs/benchmarks/labeling_train/round-{r}.tsv" for r in ran],
        "curves": [f"{_round_dir(r)}/learning_curve.tsv" for r in ran],
        "heldout_metrics": [f"{_round_dir(r)}/metrics/sub-{s}_metrics.tsv" for r in ran for s in held],
        "selections": [f"{_round_dir(r)}/selection.tsv" for r in selected],
        "worklists": [f"{_round_dir(r)}/worklist.tsv" for r in selected],
        "accepted": [f"{_round_dir(r)}/accepted.tsv" for r in corrected],
        "batch_metrics": [f"{_round_dir(r)}/metrics/sub-{s}_metrics.tsv" for r in corrected for s in labeling_batch(r)],
    }


def get_labeling_status(wildcards):
    return labeling_progress()[2]


# --- final targets ---------------------------------------------------------------------------


def get_final_outputs(wildcards=None):
    """Everything `rule all` asks for except the audit manifest (which hashes all of these)."""
    outs = [f"results/postprocess/sub-{s}/sub-{s}_desc-auto_mask.nii.gz" for s in SUBJECTS] if SEGMENT else []
    if SEGMENT and config["postprocess"]["dicom_seg"]:  # a radiomics-only run has no automatic mask to export
        outs += [f"results/postprocess/sub-{s}/sub-{s}_desc-auto_mask.dcm" for s in SUBJECTS]
    outs += ["results/radiomics/features.tsv", "results/audit/flagged_cases.tsv", *template_outputs(SUBJECTS)]
    if SEGMENT and LABELLED:
        outs += ["results/evaluate/summary.tsv"]
    if SECOND_READER:
        outs += ["results/evaluate/readers/summary.tsv"]
        outs += ["results/evaluate/readers/automatic_vs_second_reader.tsv"] if SEGMENT else []
    if TRAIN:
        outs += ["results/bundle", *PLAN_FILES]
    if SEGMENT and SHIFT_REFERENCE:
        outs += ["results/evaluate/shift_flags.tsv"]
    if "human" in SOURCES and "auto" in SOURCES and len(LABELLED) >= config["stats"]["min_subjects"]:
        outs += ["results/stats/reproducibility.tsv"]
    if "reader2" in SOURCES and len(SECOND_READER) >= config["stats"]["min_subjects"]:
        outs += ["results/stats/readers/reproducibility.tsv"]
    if PERTURBATIONS and len(LABELLED) >= config["stats"]["min_subjects"]:
        outs += ["results/stats/robustness.tsv"]
    if CAMPAIGN is not None:
        outs += ["results/labeling/rounds.tsv"]
    if OUTCOMES:
        outs += [f"results/signature/source-{s}/model.json" for s in SIGNATURE_SOURCES]
        outs += ["results/signature/comparison.tsv"] if config["signature"]["compare"] else []
    return outs


def get_manifest_inputs(wildcards):
    return get_final_outputs(wildcards)
