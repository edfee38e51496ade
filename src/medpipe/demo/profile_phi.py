"""Identifiers planted in every attribute of the DICOM PS3.15 basic confidentiality profile of the demo series.

The demo cohort's series carry, beside the generator's own fake patient data, a planted value in every attribute
of the profile's table (:func:`medpipe.core.confidentiality.profile_tags`) that the generator does not set itself:
text VRs get ``MEDPIPEPHI<nnn>``, dates 1911-MM-DD, times and date-times with the 1911 mark, sequences one coded
item whose value and meaning hold the token; two private groups get one attribute each. Series Description and
Protocol Name keep the sequence name first (the demo configs select ``^T1w``) and end with the token.

Left out: UIDs (the pipeline's Retain UIDs Option keeps them by design; the demo's own are derived from the
settings) and attributes whose VR holds no greppable text (numbers, ages, binary). Every planted string is
recorded in ``phi.json``; no output of a run may hold any of them.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from medpipe.core.confidentiality import profile_tags

#: Token contained in every planted PHI string (dates cannot hold it; they are listed in phi.json).
PHI_TOKEN = "MEDPIPEPHI"
#: Text value representations planted with the token (16 characters at most: SH, AE and CS hold it).
TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"})
#: Private blocks planted with one attribute each: (group, creator, planted text).
PRIVATE = ((0x0009, "MEDPIPE PHI A", f"{PHI_TOKEN}P0009"), (0x0029, "MEDPIPE PHI B", f"{PHI_TOKEN}P0029"))
#: Attributes that keep the sequence name first (the selectors read it) -> the token they end with.
DESCRIPTIONS = {"SeriesDescription": f"{PHI_TOKEN}SE", "ProtocolName": f"{PHI_TOKEN}PR"}


def _value(vr: str, n: int) -> tuple[Any, str] | None:
    """Planted value of the ``n``-th profile attribute of ``vr`` and its text (None: nothing greppable)."""
    token = f"{PHI_TOKEN}{n:03d}"
    if vr in TEXT_VRS:
        return token, token
    if vr == "DA":
        return (text := f"1911{1 + n % 12:02d}{1 + n % 28:02d}"), text
    if vr == "TM":
        return (text := f"11{n % 60:02d}{n % 60:02d}.1911"), text
    if vr == "DT":
        return (text := f"1911{1 + n % 12:02d}{1 + n % 28:02d}111111.1911"), text
    if vr == "SQ":
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = token, "99PHI", f"{token} meaning"
        return [item], token
    return None


@cache
def profile_plants() -> dict[tuple[int, int], tuple[str, Any, str]]:
    """Tag -> (VR, value, text) of every profile attribute the demo plants (deterministic)."""
    plants: dict[tuple[int, int], tuple[str, Any, str]] = {}
    for n, tag in enumerate(profile_tags()):
        try:
            vr = dictionary_VR((tag[0] << 16) | tag[1]).split(" ")[0]
        except KeyError:
            continue
        planted = _value(vr, n)
        if planted is not None:
            plants[tag] = (vr, *planted)
    return plants


def plant_profile(ds: Dataset, description: str) -> None:
    """Plant every profile attribute ``ds`` does not hold yet, and the private blocks (:func:`planted_texts`).

    ``description`` (the sequence name) stays first in Series Description and Protocol Name.
    """
    for tag, (vr, value, _) in profile_plants().items():
        if (tag[0] << 16) | tag[1] not in ds:
            ds.add_new(tag, vr, [Dataset(item) for item in value] if vr == "SQ" else value)
    for keyword, token in DESCRIPTIONS.items():
        setattr(ds, keyword, f"{description} {token}")
    for group, creator, text in PRIVATE:
        ds.private_block(group, creator, create=True).add_new(0x10, "LO", text)


def planted_texts() -> list[str]:
    """Every string :func:`plant_profile` can plant (recorded in ``phi.json`` for the output grep)."""
    texts = [text for _, _, text in profile_plants().values()]
    return sorted({*texts, *DESCRIPTIONS.values(), *(text for _, _, text in PRIVATE)})
