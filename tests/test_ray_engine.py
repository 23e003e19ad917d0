"""``--engine ray`` on a local Ray instance (2 CPUs, CPU actors): same store as one process, byte for
byte; a killed actor is restarted and the run completes identically; a second run does no encoder work."""

import builtins
from pathlib import Path

import numpy as np
import pytest

from clinical_transfer.errors import ClinicalTransferError
from clinical_transfer.run.commands import DataOptions, extract

ray = pytest.importorskip("ray", reason="the [cluster] extra (ray[data]) is installed by `make test`")

from clinical_transfer.run.ray_engine import RayOptions, _decode, _ray  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield RayOptions(workers=2, cpus_per_worker=0.5, cpus_per_decoder=0.5)
    ray.shutdown()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _extract(root, out, cache, engine="local", opts=None):
    return extract(DataOptions(None, str(root), None, False, None, "ray-test-salt-0123456789"), out, "ge2e", None, 3, None, None, "cpu",
                   (0, 1), str(cache), 16, False, False, engine=engine, ray_options=opts)[0]


@pytest.mark.slow
def test_ray_store_equals_single_process_and_survives_a_killed_actor(demo_small, tmp_path, local_ray):
    local = _extract(demo_small, tmp_path / "local", tmp_path / "c_local")
    on_ray = _extract(demo_small, tmp_path / "ray", tmp_path / "c_ray", "ray", local_ray)
    assert on_ray.encoded == local.encoded > 100 and on_ray.from_cache == 0
    assert _files(tmp_path / "ray") == _files(tmp_path / "local")  # index, aggregates and manifest
    again = _extract(demo_small, tmp_path / "ray2", tmp_path / "c_ray", "ray", local_ray)
    assert again.encoded == 0 and again.from_cache == local.encoded  # a second run does no encoder work
    marker = tmp_path / "killed"
    killed = RayOptions(workers=2, cpus_per_worker=0.5, cpus_per_decoder=0.5, kill_after=20, kill_marker=str(marker))
    _extract(demo_small, tmp_path / "ray_killed", tmp_path / "c_killed", "ray", killed)
    assert marker.read_text() == "killed"  # an actor really died mid-run
    assert _files(tmp_path / "ray_killed") == _files(tmp_path / "local")


def test_undecodable_audio_is_a_recorded_reason_not_a_retry():
    blobs = {"a.wav": b"RIFF....garbage", "b.wav": None}
    out = _decode({"key": np.array(["ka", "kb"]), "source": np.array(["a.wav", "b.wav"])},
                  lambda srcs: [(s, blobs[s]) for s in srcs], 16000)
    assert out["reason"][0].startswith("undecodable: ") and out["reason"][1] == "vanished since the inventory"
    assert len(out["waveform"][0]) == 0


def test_engine_ray_without_ray_is_one_clear_error(monkeypatch):
    real = builtins.__import__

    def no_ray(name, *a, **k):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ClinicalTransferError, match="--engine ray needs Ray, which is not installed") as e:
        _ray()
    assert "clinical-transfer[cluster]" in e.value.fix


@pytest.mark.slow
def test_run_overlay_engine_ray_gives_the_same_overlay_tables(demo_small, tmp_path, local_ray):
    from tests.conftest import run_corpus

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    local = run_corpus(tmp_path / "a", "coswara", demo_small, "st", ["age", "sex"], "vowel")
    on_ray = run_corpus(tmp_path / "b", "coswara", demo_small, "st", ["age", "sex"], "vowel",
                        extra_args=("--engine", "ray", "--workers", "2", "--cpus-per-worker", "0.5",
                                    "--cpus-per-decoder", "0.5"))
    tables = sorted(p.relative_to(local) for p in (local / "overlays").rglob("*") if p.is_file())
    assert len(tables) >= 2
    for rel in tables:
        assert (on_ray / rel).read_bytes() == (local / rel).read_bytes(), rel
