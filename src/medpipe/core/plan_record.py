"""The ``plan.json`` record: the planned settings of a run, written by the segment stage's ``plan`` rule and read
by every stage whose settings it decides (``preprocess`` for the grid and the normalisation, ``segment`` for the
network, the loss and training).

A plan is a list of :class:`Decision`: the config key it sets (``segmentation.train.patch_size``,
``preprocess.normalise.per_sequence.T1w``), its value, the rule that made it and its source (``plan``, or
``override`` when the user typed that key; the typed value wins). :func:`planned_settings` lays a plan's values
over a config section, so a stage reads planned and typed settings the same way.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from medpipe.core.config import deep_merge
from medpipe.core.errors import ConfigError

#: ``format`` of a plan record.
PLAN_FORMAT = "medpipe-plan-1"
#: Where a decision's value came from.
SOURCES = ("plan", "override")


@dataclass(frozen=True)
class Decision:
    """One planned setting: the config ``key`` it sets, its ``value``, the ``rule`` and its ``source``."""

    key: str
    value: Any
    rule: str
    source: str


def key_path(key: str) -> list[str]:
    """Config path of ``key``; a sequence name after ``per_sequence.`` stays one part."""
    head, sep, name = key.partition(".per_sequence.")
    return [*head.split("."), "per_sequence", name] if sep else key.split(".")


@dataclass(frozen=True)
class Plan:
    """Decisions (sorted by key) and the fingerprint numbers they were made from."""

    decisions: tuple[Decision, ...]
    inputs: dict[str, Any] = field(default_factory=dict)

    def value(self, key: str) -> Any:
        """Value of the decision on ``key`` (``KeyError`` when the plan has none)."""
        for d in self.decisions:
            if d.key == key:
                return d.value
        raise KeyError(key)

    def to_json(self) -> str:
        """``plan.json`` text: stable (sorted keys, decisions sorted by key), newline-terminated."""
        data = {"format": PLAN_FORMAT, "decisions": [asdict(d) for d in self.decisions], "inputs": self.inputs}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """Inverse of :meth:`to_json` (:class:`ConfigError` on another format)."""
        data = json.loads(text)
        if data.get("format") != PLAN_FORMAT:
            raise ConfigError(f"not a medpipe plan: format {data.get('format')!r}, expected {PLAN_FORMAT!r}")
        return cls(tuple(Decision(**d) for d in data["decisions"]), dict(data["inputs"]))

    def config(self) -> dict[str, Any]:
        """The plan's values as a nested config mapping (``{"segmentation": {"train": {...}}, ...}``)."""
        out: dict[str, Any] = {}
        for d in self.decisions:
            *parents, leaf = key_path(d.key)
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = copy.deepcopy(d.value)
        return out

    def table(self) -> list[dict[str, str]]:
        """Rows for a report: key, value (compact JSON), source, rule."""
        return [
            {"key": d.key, "value": json.dumps(d.value, separators=(", ", ": ")), "source": d.source, "rule": d.rule}
            for d in self.decisions
        ]


def read_plan(path: str | Path) -> Plan:
    """The plan in ``path`` (:class:`ConfigError` naming the file when it is not a medpipe plan)."""
    try:
        return Plan.from_json(Path(path).read_text())
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a readable medpipe plan ({exc})") from exc


def planned_settings(section: Mapping[str, Any], plan: str | Path | Plan | None, *keys: str) -> dict[str, Any]:
    """Config section ``keys`` (e.g. ``"segmentation"``, or ``"preprocess", "normalise"``) with the plan's values.

    Parameters
    ----------
    section
        The section as the run's config has it (defaults filled in).
    plan
        ``plan.json`` (path or record), or ``None``: ``section`` unchanged.
    keys
        Path of ``section`` in the config.

    Returns
    -------
    dict
        A copy of ``section`` with every planned key under ``keys`` set to the plan's value (which is the typed
        value where the user typed one).
    """
    if plan is None or plan == "":
        return copy.deepcopy(dict(section))
    record = plan if isinstance(plan, Plan) else read_plan(plan)
    node: Any = record.config()
    for key in keys:
        node = node.get(key, {}) if isinstance(node, Mapping) else {}
    return deep_merge(section, node)
