"""The HTML report renders in headless Chromium with no console errors (skipped where Chromium is absent;
.ci/run installs it from Debian's packages)."""

import shutil
import subprocess

import pytest

from clinical_transfer.reporting.render import render_html


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    import numpy as np
    import pandas as pd

    from clinical_transfer.reporting import figures

    out = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"segment_group": np.repeat(["vowel", "cough"], 50), "feature": [f"feature_{i:05d}" for i in range(50)] * 2,
                          "cohen_d_adj": rng.normal(0, 0.5, 100), "partial_r": rng.normal(0, 0.1, 100),
                          "q_adj": rng.uniform(1e-6, 1, 100), "t_adj": rng.normal(0, 3, 100),
                          "verdict": rng.choice(["robust correlate", "not significant"], 100)})
    figures.volcano(table, "st", out / "figures" / "v.png")
    md = ("> **X**\n\n# Title\n\n- a\n- b\n\n| a | b |\n|---|---|\n| 1 | <2> |\n\n![a volcano](figures/v.png)\n")
    return render_html(md, out)


def test_html_is_self_contained(report):
    html = report.read_text()
    assert html.count("data:image/png;base64,") == 1 and "figures/v.png" not in html.split("alt=")[0]
    assert "<td>&lt;2&gt;</td>" in html and '<div class="banner">X</div>' in html


def test_renders_in_headless_chromium_without_console_errors(report, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--window-size=1200,1600",
         f"--screenshot={shot}", report.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    assert console == [], console


def test_forest_rows_never_mix_in_positive_control_splits():
    import pandas as pd

    from clinical_transfer.reporting.figures import forest_rows

    splits = pd.DataFrame({"label": ["st", "age", "st"], "segment_group": ["vowel", "vowel", "cough"],
                           "feature": "feature_00001", "split_variable": "sex", "stratum": "male",
                           "beta": [0.2, 0.003, 0.1], "se": 0.01, "p": 0.01})
    rows = forest_rows(splits, "st", "vowel", "feature_00001")
    assert rows["beta"].tolist() == [0.2]
