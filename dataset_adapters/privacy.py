"""Columns no adapter carries into the Recording table: location, contact and free text.

Why one rule for every corpus: a label table travels with the run (inventory, design tables, evidence);
a postcode, an e-mail address, a GPS coordinate or a typed sentence identifies a person however
the participant id is pseudonymised. Adapters drop such columns on read and record how many they dropped.
"""

from __future__ import annotations

import re

import pandas as pd

#: Column names that carry a location, a contact or free text (matched case-insensitively, anywhere).
SENSITIVE = re.compile(
    r"(latitude|longitude|\blat\b|\blon\b|\blng\b|gps|geo|postcode|post_code|zip|address|city|town|street|"
    r"location|ip_addr|e_?mail|phone|contact|free_?text|_text\b|comment|note|description|other_specify|name\b)",
    re.IGNORECASE,
)
KEEP = frozenset({"file_name", "recording_type", "segment_type", "chest_location"})  # a body site, not a place


def sensitive_columns(columns) -> list[str]:
    """The columns among ``columns`` that :data:`SENSITIVE` names (file-name columns excepted)."""
    return [c for c in map(str, columns) if SENSITIVE.search(c) and c not in KEEP and not c.endswith("file_name")]


def drop_sensitive(table: pd.DataFrame, notes: list[str], what: str) -> pd.DataFrame:
    """``table`` without its sensitive columns; the count (never the values) goes into ``notes``."""
    bad = sensitive_columns(table.columns)
    if bad:
        notes.append(f"{len(bad)} location, contact or free-text column(s) of {what} not read ({', '.join(bad)})")
    return table.drop(columns=bad)
