"""Segment taxonomy: which recordings are prompted speech, sustained vowels, coughs or breaths.

Why: prompted-task audio (counting, recitation, reading, vowels) and cough/breath audio carry very
different artifacts (language, reading style, effort), so every analysis is done per segment group and
the groups are never pooled. This module is the one place that decides the group of a recording type.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Segment groups, in report order. ``other`` holds types no rule knows (reported, never pooled).
SEGMENT_GROUPS = ("prompted_speech", "vowel", "cough", "breath", "other")

#: Tasks a corpus may prompt. ``recitation``/``reading`` exist for corpora that have them.
TASKS = ("counting", "recitation", "reading", "sustained_vowel", "cough", "breath", "other")


@dataclass(frozen=True)
class SegmentType:
    """What a corpus's recording type means for analysis."""

    recording_type: str
    segment_group: str
    task: str
    prompted_task: bool


_TYPES = [
    SegmentType("counting-normal", "prompted_speech", "counting", True),
    SegmentType("counting-fast", "prompted_speech", "counting", True),
    SegmentType("recitation", "prompted_speech", "recitation", True),
    SegmentType("reading", "prompted_speech", "reading", True),
    SegmentType("vowel-a", "vowel", "sustained_vowel", True),
    SegmentType("vowel-e", "vowel", "sustained_vowel", True),
    SegmentType("vowel-o", "vowel", "sustained_vowel", True),
    SegmentType("cough-heavy", "cough", "cough", False),
    SegmentType("cough-shallow", "cough", "cough", False),
    SegmentType("cough", "cough", "cough", False),
    SegmentType("breathing-deep", "breath", "breath", False),
    SegmentType("breathing-shallow", "breath", "breath", False),
    SegmentType("breath", "breath", "breath", False),
]
SEGMENT_TYPES: dict[str, SegmentType] = {t.recording_type: t for t in _TYPES}

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


def segment_of(recording_type: str) -> SegmentType:
    """The segment type of a corpus recording type; unknown types go to group ``other``."""
    return SEGMENT_TYPES.get(recording_type, SegmentType(recording_type, "other", "other", False))
