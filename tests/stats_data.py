"""Generators of feature/metadata tables with known structure for the statistics tests."""

import numpy as np
import pandas as pd


def clustered_table(n_participants=300, reps=2, m=40, seed=0, effect=None, sex_effect=None, icc=0.5,
                    female_effect=None, wave_effect=None):
    """Participants with `reps` recordings each, one vowel and one cough, a participant random effect,
    a label `st` (independent), a label `asthma` that depends only on sex, and numeric/categorical confounds.
    ``female_effect``: extra `st` effect in women only (effect modification by sex); ``wave_effect``: an
    `st` effect in wave ``w1`` only."""
    rng = np.random.default_rng(seed)
    P = n_participants
    pid = np.repeat([f"id{i:04d}" for i in range(P)], reps)
    sex = np.repeat(rng.choice(["female", "male"], P), reps)
    age = np.repeat(rng.integers(18, 80, P), reps).astype(float)
    wave = np.repeat(rng.choice(["w1", "w2", "w3"], P), reps)
    st = np.repeat(rng.random(P) < 0.4, reps)
    asthma = np.repeat(rng.random(P) < np.where(sex[::reps] == "female", 0.75, 0.15), reps)
    n = P * reps
    F = np.sqrt(1 - icc) * rng.normal(size=(n, m)) + np.sqrt(icc) * np.repeat(rng.normal(size=(P, m)), reps, axis=0)
    if effect:
        for j, b in effect.items():
            F[:, j] += b * st
    if sex_effect:
        for j, b in sex_effect.items():
            F[:, j] += b * (sex == "female")
    for j, b in (female_effect or {}).items():
        F[:, j] += b * st * (sex == "female")
    for j, b in (wave_effect or {}).items():
        F[:, j] += b * st * (wave == "w1")
    features = pd.DataFrame(F, columns=[f"feat_{j}" for j in range(m)])
    features.insert(0, "recording_id", [f"rec{i:05d}" for i in range(n)])
    meta = pd.DataFrame({
        "recording_id": features["recording_id"], "participant_id": pid, "sex": sex, "age": age, "wave": wave,
        "st": st, "asthma": asthma, "segment_group": np.tile(["vowel", "cough"] * (reps // 2 + 1), P)[:n],
        "duration_s": rng.normal(3.0, 0.5, n),
    })
    return features, meta
