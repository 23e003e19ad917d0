"""A thin corpus in Coswara's real metadata: tens of real participants over many collection waves, with
feature tables that carry no label information at all (the case that once gave 1,753 "robust" rows)."""

from pathlib import Path

import numpy as np
import pandas as pd

from dataset_adapters.coswara import CoswaraAdapter

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "coswara"
GROUPS = ("prompted_speech", "vowel", "cough", "breath")


def thin_corpus(n_waves=24, per_wave=2, m=200, reps=2, icc=0.5, seed=0):
    """Real Coswara participants (2 per wave over ``n_waves`` waves: a positive where the wave has one),
    ``reps`` recordings per segment group, pure-noise features with a participant random effect."""
    meta = CoswaraAdapter(SHARED).metadata()
    meta = meta[meta["covid_status"].notna() & meta["wave"].notna() & meta["age"].notna() & meta["sex"].notna()]
    rng = np.random.default_rng(seed)
    waves = sorted(meta["wave"].unique())
    pick = [waves[i] for i in np.linspace(0, len(waves) - 1, n_waves).astype(int)]
    people = []
    for w in pick:
        in_wave = meta[meta["wave"] == w].sort_values("participant_id")
        pos = in_wave[in_wave["covid_status"].str.startswith("positive")]
        neg = in_wave[in_wave["covid_status"] == "healthy"]
        chosen = list(pos["participant_id"][:1]) + list(neg["participant_id"][: per_wave - min(1, len(pos))])
        people += chosen
    people = meta.set_index("participant_id").loc[people].reset_index()
    rows = people.loc[people.index.repeat(len(GROUPS) * reps)].reset_index(drop=True)
    rows["segment_group"] = np.tile(np.repeat(GROUPS, reps), len(people))
    rows["recording_id"] = [f"rec{i:05d}" for i in range(len(rows))]
    P = len(people)
    effect = np.repeat(rng.normal(size=(P, m)), len(GROUPS) * reps, axis=0)
    F = np.sqrt(icc) * effect + np.sqrt(1 - icc) * rng.normal(size=(len(rows), m))
    features = pd.DataFrame(F, columns=[f"feature_{j:05d}" for j in range(m)])
    features.insert(0, "recording_id", rows["recording_id"])
    return features, rows
