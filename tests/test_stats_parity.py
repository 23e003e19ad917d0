"""The vectorised statistics equal the reference implementations (statsmodels, sklearn) to 1e-8."""

import numpy as np
import pytest
import statsmodels.api as sm
from sklearn.metrics import roc_auc_score
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.nonparametric import rank_compare_2indep

from clinical_transfer.stats.association import associate, associate_designs
from clinical_transfer.stats.design import confound_columns
from clinical_transfer.stats.effects import rank_effects
from tests.stats_data import clustered_table

RTOL = 1e-8


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    n, G, m = 240, 70, 12
    g = rng.integers(0, G, n)
    x = (rng.random(G) < 0.4).astype(float)[g]  # participant-level label
    import pandas as pd

    meta = pd.DataFrame({"age": rng.normal(40, 12, n), "sex": rng.choice(["f", "m"], n),
                         "wave": rng.choice(["a", "b", "c"], n), "dur": rng.gamma(2, 2, n)})
    C, names = confound_columns(meta, ["age", "sex", "wave", "dur"])
    assert names == ["age", "sex[m]", "wave[b]", "wave[c]", "dur"]
    F = rng.normal(size=(n, m)) + 0.4 * x[:, None] + 0.3 * C[:, :1] + rng.normal(size=G)[g][:, None]
    F[:, 0] += 100.0  # a large mean must not cost precision
    return x, F, C, g


def reference(x, F, C, g, cluster):
    rows = []
    X = np.column_stack([np.ones(len(x)), x] + ([C] if C is not None else []))
    for j in range(F.shape[1]):
        model = sm.OLS(F[:, j], X)
        r = model.fit(cov_type="cluster", cov_kwds={"groups": g}, use_t=True) if cluster else model.fit()
        rows.append((r.params[1], r.bse[1], r.tvalues[1], r.pvalues[1]))
    return np.array(rows).T


@pytest.mark.parametrize("cluster", [False, True])
@pytest.mark.parametrize("adjusted", [False, True])
def test_ols_parity(data, cluster, adjusted):
    x, F, C, g = data
    C = C if adjusted else None
    a = associate(x, F, C, g if cluster else None, chunk=5)
    beta, se, t, p = reference(x, F, C, g, cluster)
    np.testing.assert_allclose(a.beta, beta, rtol=RTOL)
    np.testing.assert_allclose(a.se, se, rtol=RTOL)
    np.testing.assert_allclose(a.t, t, rtol=RTOL)
    np.testing.assert_allclose(a.p, p, rtol=RTOL)


def test_float32_features_and_both_designs_in_one_pass(data):
    x, F, C, g = data
    F32 = F.astype(np.float32)
    adj, raw = associate_designs(x, F32, [C, None], g)
    beta, se, _, _ = reference(x, F32.astype(float), C, g, True)
    np.testing.assert_allclose(adj.beta, beta, rtol=RTOL)
    np.testing.assert_allclose(adj.se, se, rtol=RTOL)
    np.testing.assert_allclose(raw.beta, reference(x, F32.astype(float), None, g, True)[0], rtol=RTOL)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auroc_and_ci_equal_sklearn_and_statsmodels(dtype):
    rng = np.random.default_rng(3)
    n, m = 301, 30
    y = rng.random(n) < 0.35
    F = rng.normal(size=(n, m)) + 0.5 * y[:, None]
    F[:, :10] = np.maximum(F[:, :10], 0.0)  # SAE-like: many exact zeros (ties)
    F[:, 10:20] = np.round(F[:, 10:20])  # integer ties
    F[:3, 20], F[3:6, 20] = -0.0, 0.0  # signed zeros tie
    F = F.astype(dtype)
    e = rank_effects(F, y, chunk=7)
    for j in range(m):
        ref = rank_compare_2indep(F[y, j], F[~y, j])
        low, high = ref.conf_int()
        assert e.auroc[j] == pytest.approx(roc_auc_score(y, F[:, j]), abs=1e-12)
        assert e.auroc[j] == pytest.approx(ref.prob1, abs=1e-12)
        assert (e.low[j], e.high[j]) == pytest.approx((low, high), abs=1e-10)
    np.testing.assert_allclose(e.cliffs_delta, 2 * e.auroc - 1)


def test_q_values_equal_multipletests_bh():
    from clinical_transfer.stats import overlay

    features, meta = clustered_table(n_participants=120, m=25, effect={0: 0.8, 1: 0.5})
    res = overlay(features, meta, "st", ["sex", "age", "wave"], permutations=0, positive_controls=[])
    for _, fam in res.overlay.groupby("segment_group"):
        np.testing.assert_allclose(fam["q_adj"], multipletests(fam["p_adj"], method="fdr_bh")[1], rtol=1e-12)
        np.testing.assert_allclose(fam["q_raw"], multipletests(fam["p_raw"], method="fdr_bh")[1], rtol=1e-12)
        np.testing.assert_allclose(fam["q_adj_by"], multipletests(fam["p_adj"], method="fdr_by")[1], rtol=1e-12)


def test_threads_leave_every_bit_unchanged_and_chunking_the_values(data):
    """Worker threads take the same chunks, so results are bit-identical whatever their number; other
    chunk widths may change BLAS's summation order (last bits) but not the values."""
    x, F, C, g = data
    F32 = np.asfortranarray(np.tile(F, (1, 9)).astype(np.float32))  # 108 columns: several chunks
    ref = associate_designs(x, F32, [C, None], g, chunk=16, workers=1)
    for workers in (2, 3):
        for a, b in zip(ref, associate_designs(x, F32, [C, None], g, chunk=16, workers=workers)):
            assert np.array_equal(a.beta, b.beta) and np.array_equal(a.se, b.se)
    for chunk in (5, 108):
        for a, b in zip(ref, associate_designs(x, F32, [C, None], g, chunk=chunk, workers=2)):
            np.testing.assert_allclose(a.se, b.se, rtol=1e-12)
            np.testing.assert_allclose(a.beta, b.beta, rtol=1e-12)
    y = x == 1
    e1, e2 = rank_effects(F32, y, chunk=256, workers=1), rank_effects(F32, y, chunk=6, workers=3)
    assert np.array_equal(e1.auroc, e2.auroc) and np.array_equal(e1.low, e2.low)


def test_auroc_with_heavy_ties_and_a_positive_majority():
    """Large tie runs straddling both groups (SAE-like zeros, few distinct levels), more positives
    than negatives, and row counts that are not a multiple of the merge's four-row lock step."""
    rng = np.random.default_rng(11)
    n, m = 157, 23
    y = rng.random(n) < 0.7
    F = np.where(rng.random((n, m)) < 0.6, 0.0, rng.integers(-2, 3, (n, m)) * 0.5).astype(np.float32)
    F[:, 5] = 1.0  # constant: every pair is a tie
    e = rank_effects(F, y, chunk=5)
    for j in range(m):
        assert e.auroc[j] == pytest.approx(roc_auc_score(y, F[:, j]), abs=1e-12)
        if j != 5:
            ref = rank_compare_2indep(F[y, j], F[~y, j])
            assert (e.low[j], e.high[j]) == pytest.approx(ref.conf_int(), abs=1e-10)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_auroc_refuses_non_finite_values(bad):
    F = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    F[7, 1] = bad
    with pytest.raises(ValueError, match="rank effects need finite feature values"):
        rank_effects(F, np.arange(40) % 3 == 0)


def test_uneven_unsorted_string_clusters_and_row_major_features():
    """Cluster sizes 1..9 in shuffled order with string ids, n not a multiple of 4, a row-major float64
    matrix with a large mean: the compiled pass reorders rows by cluster internally."""
    rng = np.random.default_rng(5)
    n, m = 243, 7
    g = np.array([f"p{i}" for i in rng.integers(0, 60, n)])
    x = (rng.random(n) < 0.4).astype(float)
    C = rng.normal(size=(n, 3))
    F = np.ascontiguousarray(rng.normal(size=(n, m)) + 0.3 * x[:, None] + 50)
    adj = associate_designs(x, F, [C], g, chunk=3, workers=2)[0]
    beta, se, t, p = reference(x, F, C, np.unique(g, return_inverse=True)[1], True)
    for got, want in ((adj.beta, beta), (adj.se, se), (adj.t, t), (adj.p, p)):
        np.testing.assert_allclose(got, want, rtol=RTOL)
