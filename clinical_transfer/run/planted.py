"""Planted truth of the synthetic demo: which SAE features the ``st`` voice-quality plant actually moves.

Why: the demo plants ``st`` in the audio (more jitter, shimmer and aspiration in vowels and counting),
not in any model's features, so "the planted features" are unknown until measured — and a robust
correlate of ``st`` need not be one the plant moves much (a weak one can ride on a feature that mostly
tracks pitch). The probe measures it directly: every st participant's voiced recordings are made twice
from the same random streams, as in the corpus and without the plant
(:func:`dataset_adapters.demo.planted_pairs`), and scored with the run's encoder and SAE. A feature's
*planted effect* is the mean on-minus-off change of its recording-mean activation, in units of the
between-participant SD of that activation in the analysed corpus (per segment group); ``|z| >= 1`` (the
plant moves it by at least one person-to-person SD), consistently across participants (signed-rank test),
makes it a *planted feature*. The report then says
which planted features the statistics found (recall) and what their evidence packets name.

Only a synthetic corpus can have this section: it needs the generator, never a person's audio.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from clinical_transfer.scoring import score_host
from dataset_adapters.demo import VOICED_TYPES, DemoConfig, planted_keys, planted_pairs
from dataset_adapters.segments import segment_of

PLANTED_Z = 1.0
"""|z| at or above which a feature is a planted feature (the plant moves it by >= 1 between-person SD)."""
MIN_ACTIVE = 0.05
"""A feature active in fewer of a group's recordings has no meaningful person-to-person SD: no z."""
ALPHA = 0.05
"""Family-wise level of the signed-rank test (Bonferroni over a group's tested features)."""
LABEL = "st"
BATCH = 32
COLUMNS = ["label", "segment_group", "feature", "planted_delta", "planted_z", "p_signed_rank", "planted",
           "n_participants", "n_pairs"]


def planted_response(cfg: DemoConfig, encoder, sae, features: pd.DataFrame, meta: pd.DataFrame,
                     progress: bool = True) -> pd.DataFrame:
    """Per segment group x feature: ``planted_delta`` (mean on - off activation over st participants, each
    the mean of their recordings in the group), ``planted_z`` (in units of the participant-level SD in
    ``features``/``meta``), ``p_signed_rank`` (Wilcoxon signed-rank over those participants' changes),
    ``planted`` and the counts behind them.

    A feature is *planted* when ``|z| >= PLANTED_Z`` and the change is consistent across participants
    (signed-rank p below 0.05 Bonferroni-divided by the features tested in the group). Why both: a sparse
    feature that fires strongly in a handful of recordings gets a large mean change from a few chance
    on/off flips (measured: z -1.6 from 3 of 33 participants, with no association in the corpus); the
    signed-rank test (normal approximation: the exact one runs a permutation per feature when changes tie)
    asks whether the plant moves it in most people, which is what "planted" means.

    ``features`` is the run's recordings x features table (``recording_id`` + ``feature_NNNNN`` columns,
    mean aggregation) and ``meta`` its analysis rows (``recording_id``, ``participant_id``,
    ``segment_group``).
    """
    d_sae = sae.cfg.d_sae
    deltas: dict[str, dict[int, list[np.ndarray]]] = {}
    batch: list[tuple[int, str, np.ndarray, np.ndarray]] = []

    def flush():
        scores = score_host(encoder, sae, [w for *_, on, off in batch for w in (on, off)])
        for j, (i, rtype, _, _) in enumerate(batch):
            on, off = np.zeros(d_sae), np.zeros(d_sae)
            on[scores[2 * j].features] = scores[2 * j].mean
            off[scores[2 * j + 1].features] = scores[2 * j + 1].mean
            deltas.setdefault(segment_of(rtype).segment_group, {}).setdefault(i, []).append(on - off)
        batch.clear()

    analysed = set(meta["segment_group"])  # a group the run does not analyse is not probed
    types = tuple(t for t in VOICED_TYPES if segment_of(t).segment_group in analysed)
    keys = planted_keys(cfg, types)
    for item in tqdm(planted_pairs(cfg, keys), total=len(keys), desc="planted-truth probe (st on/off pairs)",
                     unit="pair", disable=not progress):
        batch.append(item)
        if len(batch) == BATCH:
            flush()
    if batch:
        flush()
    table = features.set_index("recording_id")
    names = [f"feature_{j:05d}" for j in range(d_sae)]
    rows = []
    for group, by_person in sorted(deltas.items()):
        m = meta[meta["segment_group"] == group]
        values = table.reindex(m["recording_id"]).reindex(columns=names).fillna(0.0)
        active = (values != 0).mean().to_numpy()
        sd = values.groupby(m["participant_id"].to_numpy(), sort=True).mean().std().to_numpy()
        D = np.array([np.mean(ds, axis=0) for _, ds in sorted(by_person.items())])  # participants x features
        delta = D.mean(axis=0)
        ok = (active >= MIN_ACTIVE) & (sd > 0)
        z = np.where(ok, delta / np.where(ok, sd, 1.0), np.nan)
        p = np.full(d_sae, np.nan)
        moved = ok & (D != 0).any(axis=0)
        if moved.any():
            p[moved] = stats.wilcoxon(D[:, moved], axis=0, zero_method="wilcox", method="approx").pvalue
        n_tested = int(ok.sum())
        planted = (np.abs(np.nan_to_num(z)) >= PLANTED_Z) & (np.nan_to_num(p, nan=1.0) < ALPHA / max(n_tested, 1))
        rows.append(pd.DataFrame({"label": LABEL, "segment_group": group, "feature": names,
                                  "planted_delta": delta, "planted_z": z, "p_signed_rank": p, "planted": planted,
                                  "n_participants": len(D), "n_pairs": sum(len(v) for v in by_person.values())}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=COLUMNS)
