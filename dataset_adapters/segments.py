"""Segment taxonomy: which recordings are prompted speech, sustained vowels, coughs or breaths.

Why: prompted-task audio (counting, recitation, reading, vowels) and cough/breath audio carry very
different artifacts (language, reading style, effort), so every analysis is done per segment group and
the groups are never pooled. This module is the one place that decides the group of a recording type.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SegmentType:
    """What a corpus's recording type means for analysis."""

    recording_type: str
    segment_group: str
    task: str
    prompted_task: bool


#: recording types -> (segment group, task, prompted task). The one table that decides a type's group.
_RULES: dict[tuple[str, ...], tuple[str, str, bool]] = {
    ("counting-normal", "counting-fast"): ("prompted_speech", "counting", True),
    ("recitation",): ("prompted_speech", "recitation", True),
    ("reading",): ("prompted_speech", "reading", True),
    ("vowel-a", "vowel-e", "vowel-o"): ("vowel", "sustained_vowel", True),
    ("cough-heavy", "cough-shallow", "cough", "three-cough"): ("cough", "cough", False),
    ("breathing-deep", "breathing-shallow", "breath", "exhalation"): ("breath", "breath", False),
}
SEGMENT_TYPES: dict[str, SegmentType] = {t: SegmentType(t, *rule) for types, rule in _RULES.items() for t in types}

#: Coswara's nine recording types, in the corpus's own order.
COSWARA_TYPES = (
    "breathing-deep",
    "breathing-shallow",
    "cough-heavy",
    "cough-shallow",
    "counting-fast",
    "counting-normal",
    "vowel-a",
    "vowel-e",
    "vowel-o",
)


def segment_fields(recording_type: str) -> dict:
    """The Recording-table columns a recording type decides: type, segment group, task, prompted."""
    seg = segment_of(recording_type)
    return {"recording_type": recording_type, "segment_group": seg.segment_group, "task": seg.task,
            "prompted_task": seg.prompted_task}


def segment_of(recording_type: str) -> SegmentType:
    """The segment type of a corpus recording type; unknown types go to group ``other``."""
    return SEGMENT_TYPES.get(recording_type, SegmentType(recording_type, "other", "other", False))
