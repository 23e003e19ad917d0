"""benchmarks/gpu_check.py runs end to end on the CPU (its --quick and --gemma-random --tiny modes).

Why in CI: the GPU checks run on a lent machine once in a while, for minutes; a script that broke since
its last run wastes that run. Here every section of it runs on tiny models, and its JSON summary has every
figure #16 asks for. Nothing here needs a GPU, and no number here is a speed claim.
"""

import json
import subprocess
import sys

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def run(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=900)


def test_quick_checks_pass_on_the_cpu(tmp_path):
    done = run("--device", "cpu", "--quick", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "all GPU checks passed" in done.stdout


def test_gemma_random_tiny_writes_every_section(tmp_path):
    done = run("--gemma-random", "--tiny", "--device", "cpu", "--json", str(tmp_path / "gpu_check.json"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rep = json.loads((tmp_path / "gpu_check.json").read_text())
    for key in ("matmul_ceiling_tflops", "model", "one_off_s", "raw_capture", "inventory_s", "extract", "steady_state",
                "activation_dump"):
        assert key in rep, key
    assert rep["extract"]["device_aggregation_equals_numpy"] is True
    for precision in ("fp32", "tf32"):
        assert rep["extract"][precision]["recordings"] > 0
        assert rep["steady_state"][precision]["ratio_to_raw"] > 0
    assert "error" not in rep["steady_state"] and "error" not in rep["activation_dump"]
    assert rep["steady_state"]["inventory_ms_per_recording"]["serial"] > 0
    assert rep["activation_dump"]["audio_s_per_s"] > 0
    assert [s["setting"] for s in rep["raw_capture"]["settings"]][0] == "8 clips per pass (as shipped before)"
    prof = rep["raw_capture"]["kernel_profile"]
    assert "error" not in prof and prof["shares"]["matmul"] > 0 and 0.99 <= sum(prof["shares"].values()) <= 1.01
    assert len(prof["top"]) > 0 and "cudaStreamSynchronize" in prof["syncs"]
