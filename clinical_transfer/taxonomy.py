"""The project's shared vocabulary: segment groups, inventory statuses, split variables.

Why a module at the bottom of the layer stack: adapters decide a recording's segment group, the config
validates the groups a user asks for, statistics and figures order their output by them, and the
inventory counts statuses. Each of those layers may import this module; none of them may import the
others for a tuple of names.
"""

from __future__ import annotations

#: Segment groups, in report order. ``other`` holds recording types no rule knows (reported, never pooled).
SEGMENT_GROUPS = ("prompted_speech", "vowel", "cough", "breath", "other")

#: Groups analysed by default: each apart, never pooled (prompted speech and vowels carry task artifacts).
ANALYSED_GROUPS = ("prompted_speech", "vowel", "cough", "breath")

#: Inventory statuses, in the order reports list them.
STATUSES = ("ok", "missing", "unreadable", "silent", "too_short", "too_long")
#: A status an adapter may add: the corpus itself marks the recording unusable (COUGHVID's cough
#: classifier below its threshold). Listed after the others, only when it occurs.
EXCLUDED = "excluded"

#: Split variables of the robustness checks when neither the caller nor the corpus says otherwise.
#: Corpus-specific ones (Coswara's English proficiency) come from the adapter.
DEFAULT_STRATA = ("sex", "age_band", "wave", "quality")

#: Per-recording score aggregates over frames (see :mod:`clinical_transfer.store`).
AGGREGATIONS = ("mean", "frac_active", "max")
