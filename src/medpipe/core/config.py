"""Validation of config.yaml and the subject sheet, before any job starts.

Both are checked against JSON Schemas in ``config/schemas``; defaults from the schema are filled
in, unknown keys are refused, and every problem is reported with the key (or sheet row) it is
about, all at once.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd
import yaml

from medpipe.core.errors import ConfigError
from medpipe.core.records import declared_modality

logger = logging.getLogger(__name__)

#: The schemas of the repository's ``config/schemas``: the one place a default or an allowed value lives.
#: medpipe runs from its repository (editable install beside the Snakefile), so the package finds them there.
SCHEMA_DIR = Path(__file__).resolve().parents[3] / "config" / "schemas"
CONFIG_SCHEMA = SCHEMA_DIR / "config.schema.yaml"
SUBJECTS_SCHEMA = SCHEMA_DIR / "subjects.schema.yaml"


def _with_defaults(cls: Any) -> Any:
    """Extend a jsonschema validator class so that it fills in ``default`` values."""
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if isinstance(instance, MutableMapping):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = _copy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


_Validator = _with_defaults(jsonschema.Draft7Validator)


def load_schema(path: str | Path) -> dict[str, Any]:
    """Read a YAML JSON-Schema file."""
    data: dict[str, Any] = yaml.safe_load(Path(path).read_text())
    return data


@functools.cache
def _config_schema() -> dict[str, Any]:
    if not CONFIG_SCHEMA.is_file():
        raise ConfigError(f"config schema not found at {CONFIG_SCHEMA}: run medpipe from its repository checkout")
    return load_schema(CONFIG_SCHEMA)


def sheet_sets() -> tuple[str, ...]:
    """The subject sheet's ``set`` values in report order (cross-validation, internal test, external).

    The enum of ``subjects.schema.yaml``, the one place they are listed.
    """
    return tuple(load_schema(SUBJECTS_SCHEMA)["properties"]["set"]["enum"])


def section_schema(*keys: str) -> dict[str, Any]:
    """The sub-schema of ``config.schema.yaml`` for the config section ``keys`` (e.g. ``"preprocess", "n4"``).

    ``"*"`` stands for any key of a mapping whose values share one schema (``"sequences", "*"``: one
    sequence's selector).
    """
    node = _config_schema()
    for i, key in enumerate(keys):
        props = node.get("properties", {})
        if key == "*" and isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif key in props:
            node = props[key]
        else:
            raise ConfigError(f"config schema has no section {'.'.join(keys[: i + 1])!r}", path=CONFIG_SCHEMA)
    return node


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Deep copy of ``base`` with ``over`` merged in (mappings recursively, other values replaced)."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def with_defaults(settings: Mapping[str, Any] | None, *keys: str) -> dict[str, Any]:
    """A validated copy of the config section ``keys`` with every default of the schema filled in.

    Functions called outside Snakemake (tests, benchmarks, the CLI) get the same defaults as a workflow
    run, because both come from the schema; no module keeps its own copy.

    Raises
    ------
    ConfigError
        Listing every invalid key as ``section.key: problem``.
    """
    instance: dict[str, Any] = _copy(dict(settings or {}))
    where = ".".join(keys)
    errors = sorted(_Validator(section_schema(*keys)).iter_errors(instance), key=lambda e: list(map(str, e.path)))
    if errors:
        lines = [f"  {where}.{_where(e, '')}".rstrip(".") + f": {e.message}" for e in errors]
        raise ConfigError("invalid settings:\n" + "\n".join(lines))
    return instance


def normalise_settings(settings: Mapping[str, Any], sequence: str | None) -> dict[str, Any]:
    """Normalisation settings of one sequence: schema defaults, ``settings``, then its ``per_sequence`` entry.

    The one rule, read by the normalise step (:mod:`medpipe.preprocess.normalise`) and by the model bundle's
    compatibility check (:mod:`medpipe.segment.compatible`).

    Parameters
    ----------
    settings
        A partial or complete ``config["preprocess"]["normalise"]``.
    sequence
        Sequence name whose ``per_sequence`` entry (a method name or a mapping of keys) applies; ``None`` for none.

    Returns
    -------
    dict
        The settings of that sequence, without ``per_sequence``.

    Raises
    ------
    ConfigError
        Naming an invalid key (unknown key or a value the schema does not allow).
    """
    merged = with_defaults(settings, "preprocess", "normalise")
    override = merged.pop("per_sequence").get(sequence, {}) if sequence else {}
    if isinstance(override, str):
        override = {"method": override}
    return {**merged, **override}


def allowed_values(*keys: str) -> list[Any]:
    """The ``enum`` of a config key in the schema (for the items of an array: the items' enum)."""
    node = section_schema(*keys)
    node = node.get("items", node)
    if "enum" not in node:
        raise ConfigError(f"config schema key {'.'.join(keys)!r} has no enum", path=CONFIG_SCHEMA)
    return list(node["enum"])


def _where(error: jsonschema.ValidationError, root: str) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else root


def validate_config(config: MutableMapping[str, Any], schema_path: str | Path) -> MutableMapping[str, Any]:
    """Validate ``config`` in place against the schema, filling defaults.

    Raises
    ------
    ConfigError
        Listing every invalid key as ``key.path: problem``.
    """
    validator = _Validator(load_schema(schema_path))
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  {_where(e, 'config')}: {e.message}" for e in errors]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    sequences = config.get("sequences", {})
    if config.get("reference_sequence") not in sequences:
        raise ConfigError(
            f"  reference_sequence: {config.get('reference_sequence')!r} is not one of the configured "
            f"sequences {sorted(sequences)}"
        )
    for name, selector in sequences.items():
        if selector.get("nifti"):  # a NIfTI file has no header to choose between several modalities
            declared_modality(selector.get("modality"), sequence=name)
    ref_nifti = sequences[config["reference_sequence"]].get("nifti")
    if ref_nifti and config.get("postprocess", {}).get("dicom_seg") and config["automatic_segmentation"]:
        raise ConfigError(
            f"  postprocess.dicom_seg: true needs a DICOM reference series, but sequences."
            f"{config['reference_sequence']}.nifti is {ref_nifti!r}; set postprocess.dicom_seg: false"
        )
    native_images(config)  # refuses an image that is not a sequence, a native grid for the reference
    preprocess = config.get("preprocess", {})
    no_brain_mask = preprocess.get("skullstrip", {}).get("method") == "none"
    if preprocess.get("coregister", {}).get("fixed") == "brain" and no_brain_mask:
        raise ConfigError(
            "  preprocess.coregister.fixed: brain aligns onto the brain-extracted reference, but "
            "preprocess.skullstrip.method is none (no brain mask); choose a skull-stripping method or fixed: image"
        )
    if preprocess.get("template", {}).get("method", "none") != "none" and no_brain_mask:
        raise ConfigError(
            f"  preprocess.template.method: {preprocess['template']['method']} registers the brain-extracted "
            "reference onto a skull-stripped template, but preprocess.skullstrip.method is none (no brain mask); "
            "choose a skull-stripping method or template method none"
        )
    if not config["automatic_segmentation"] and "auto" in config["radiomics"]["sources"]:
        raise ConfigError(
            "  radiomics.sources: lists 'auto', but automatic_segmentation is false (a radiomics-only run makes no "
            "automatic mask); set radiomics.sources: [human], or automatic_segmentation: true"
        )
    return config


#: The ``image`` value of the rows that pool every image in the per-image stats tables (not a sequence name).
POOLED_IMAGES = "all"


def radiomics_images(config: Mapping[str, Any]) -> dict[str, str]:
    """The images radiomics extracts from, each with its params file (``radiomics.images``, validated config).

    Returns
    -------
    dict
        Sequence name -> params file, in config order; ``{reference_sequence: radiomics.params}`` when
        ``radiomics.images`` is empty. An entry without ``params`` takes ``radiomics.params``.

    Raises
    ------
    ConfigError
        Naming an image that is not one of the configured sequences, or one named :data:`POOLED_IMAGES`.
    """
    radiomics = config["radiomics"]
    images = radiomics.get("images") or {config["reference_sequence"]: {}}
    sequences = sorted(config.get("sequences", {}))
    if POOLED_IMAGES in images:
        raise ConfigError(
            f"  radiomics.images: {POOLED_IMAGES!r} names the pooled rows of the per-image tables; rename that sequence"
        )
    unknown = [name for name in images if name not in sequences]
    if unknown:
        raise ConfigError(
            f"  radiomics.images: {unknown[0]!r} is not a sequence; radiomics extracts from the configured "
            f"sequences {sequences} (co-registered to reference_sequence {config['reference_sequence']!r})"
        )
    return {name: str((entry or {}).get("params") or radiomics["params"]) for name, entry in images.items()}


def native_images(config: Mapping[str, Any]) -> dict[str, str | None]:
    """The radiomics images read on their own grid (``radiomics.images.<name>.grid: native``).

    Returns
    -------
    dict
        Image (sequence) name -> its own human mask file (relative to the subject's folder), or None when the
        reference human mask is brought onto the image's grid instead; only images with ``grid: native``.

    Raises
    ------
    ConfigError
        ``grid: native`` for the reference sequence, or a ``mask`` on an image read on the reference grid.
    """
    radiomics_images(config)  # names checked there
    native: dict[str, str | None] = {}
    for name, entry in (config["radiomics"].get("images") or {}).items():
        entry = entry or {}
        grid, mask = entry.get("grid", "reference"), entry.get("mask")
        if grid == "native" and name == config["reference_sequence"]:
            raise ConfigError(
                f"  radiomics.images.{name}.grid: 'native' for the reference sequence; its grid is the reference "
                "grid already (leave grid out)"
            )
        if mask and grid != "native":
            raise ConfigError(
                f"  radiomics.images.{name}.mask: {mask!r} is a mask on the image's own grid, but the image is read "
                f"on the reference grid (grid: {grid!r}); set grid: native or remove mask"
            )
        if grid == "native":
            native[name] = mask or None
    return native


def check_radiomics_only(config: Mapping[str, Any], subjects: Sequence[str], labelled: Sequence[str]) -> None:
    """Start-of-run check of a radiomics-only run (``automatic_segmentation: false``); no-op otherwise.

    Parameters
    ----------
    config
        The validated workflow config.
    subjects
        Subjects of the run (subject sheet, minus the sign-off's exclusions).
    labelled
        Those with a human label: in a radiomics-only run the only ones that get features.

    Raises
    ------
    ConfigError
        When no subject has a label, so that the run would have no mask to extract features from.
    """
    if config["automatic_segmentation"]:
        return
    if not labelled:
        raise ConfigError(
            "automatic_segmentation is false (radiomics-only run) but no subject has a label: fill the sheet's "
            "label column (NIfTI mask, RTSTRUCT or DICOM-SEG)",
            path=config["subjects"],
        )
    unlabelled = sorted(set(subjects) - set(labelled))
    if unlabelled:
        logger.warning(
            "radiomics-only run (automatic_segmentation: false): %d subject(s) without a label get no features: %s",
            len(unlabelled),
            ", ".join(unlabelled),
        )


def nifti_inputs(config: Mapping[str, Any]) -> list[str]:
    """File names (relative to each subject's folder) that the ``nifti`` sequence selectors name."""
    return [str(sel["nifti"]) for sel in config.get("sequences", {}).values() if sel.get("nifti")]


def native_mask_files(config: Mapping[str, Any]) -> list[str]:
    """File names (relative to each labelled subject's folder) of the native-grid images' own human masks."""
    return [mask for mask in native_images(config).values() if mask]


def _missing_files(
    row: Mapping[str, Any], i: int, folder: Path, required: Sequence[str], labelled: Sequence[str]
) -> list[str]:
    """Sheet problems: files of the subject's folder that the config names and that are not there."""
    where = f"  row {i} ({row.get('subject', '?')}): folder {row['dicom']!r} has no"
    problems = [f"{where} {name!r} (a sequences.*.nifti file)" for name in required if not (folder / name).is_file()]
    if row["label"]:
        problems += [
            f"{where} {name!r} (a radiomics.images.*.mask file, needed for every subject with a label)"
            for name in labelled
            if not (folder / name).is_file()
        ]
    return problems


def load_subject_sheet(
    path: str | Path,
    schema_path: str | Path,
    *,
    base_dir: str | Path = ".",
    required_files: Sequence[str] = (),
    labelled_files: Sequence[str] = (),
) -> pd.DataFrame:
    """Read and validate the subject sheet; every referenced folder and file must exist.

    Parameters
    ----------
    path
        TSV with a header row (columns: subject, dicom and the optional label, label2, set, site).
    schema_path
        ``subjects.schema.yaml``.
    base_dir
        Directory that relative paths in the sheet are relative to (the working directory).
    required_files
        Files every subject's folder must hold (the ``nifti`` selectors, see :func:`nifti_inputs`).
    labelled_files
        Files the folder of every subject with a label must hold (the own human masks of the native-grid
        radiomics images, see :func:`native_mask_files`).

    Returns
    -------
    pandas.DataFrame
        Indexed by subject, with columns ``dicom``, ``label`` ('' when absent), ``set`` (``train`` unless
        given) and ``site`` ('' unless given).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            "subject sheet not found; for the demo run `medpipe demo-data` (or `make demo`) first",
            path=path,
        )
    sheet = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    schema = load_schema(schema_path)
    validator = _Validator(schema)
    # An empty cell of an optional column (label, set, site) takes the schema's default.
    optional = {k: v.get("default", "") for k, v in schema["properties"].items() if k not in schema["required"]}
    base = Path(base_dir)
    problems: list[str] = []
    rows: list[dict[str, Any]] = []
    for i, raw in enumerate(sheet.to_dict(orient="records"), start=2):
        row = {k: v for k, v in raw.items() if not (k in optional and v == "")}
        for error in validator.iter_errors(row):
            problems.append(f"  row {i} ({raw.get('subject', '?')}): {_where(error, 'row')}: {error.message}")
        row.update({k: v for k, v in optional.items() if k not in row})
        dicom = base / str(row.get("dicom", ""))
        if row.get("dicom") and not dicom.is_dir():
            problems.append(f"  row {i} ({row.get('subject', '?')}): dicom folder {row['dicom']!r} does not exist")
        elif row.get("dicom"):
            problems += _missing_files(row, i, dicom, required_files, labelled_files)
        for column in ("label", "label2"):
            if row[column] and not (base / row[column]).exists():
                problems.append(f"  row {i} ({row.get('subject', '?')}): {column} file {row[column]!r} does not exist")
        if row["label2"] and not row["label"]:
            problems.append(f"  row {i} ({row.get('subject', '?')}): label2 (a second reader) needs label (the first)")
        rows.append(row)
    subjects = [str(r.get("subject", "")) for r in rows]
    dups = sorted({s for s in subjects if subjects.count(s) > 1})
    if dups:
        problems.append(f"  duplicated subject IDs: {dups}")
    if not rows:
        problems.append("  the sheet has no subjects")
    if problems:
        raise ConfigError("invalid subject sheet:\n" + "\n".join(problems), path=path)
    return pd.DataFrame(rows).set_index("subject", drop=False)
