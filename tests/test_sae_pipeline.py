"""Train -> save -> load -> eval on real GE2E states of the demo corpus, and the shipped default SAE."""

import json

import pytest

from clinical_transfer.cli import main
from clinical_transfer.sae.default import DEFAULT_DIR, load_default_sae


@pytest.fixture(scope="module")
def dump(tmp_path_factory, demo_small):
    out = tmp_path_factory.mktemp("acts")
    assert main(["activations", "--quiet", "--data-root", str(demo_small), "--salt", "test-salt-0123456789", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["encoder"] == "ge2e" and manifest["width"] == 256 and manifest["layer"] == 3
    assert manifest["n_recordings"]["train"] + manifest["n_recordings"]["heldout"] == 24 * 9 - 3
    return out


def test_train_save_load_eval(dump, tmp_path, capsys):
    sae_dir = tmp_path / "sae"
    assert main(["train-sae", "--quiet", "--activations", str(dump), "--out", str(sae_dir), "--expansion", "2",
                 "--k", "8", "--batch-size", "512", "--steps", "40", "--val-every", "20"]) == 0
    assert main(["eval-sae", "--sae", str(sae_dir / "sae.pt"), "--activations", str(dump),
                 "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "eval" / "test_eval" / "summary.json").read_text())
    assert f"FVE {summary['fve']:.4f}" in printed
    assert summary["l0"] == pytest.approx(8.0) and 0.3 < summary["fve"] < 1.0


def test_eval_refuses_an_sae_of_another_width(dump, tmp_path, capsys):
    from clinical_transfer.sae.formats import save_pt
    from tests.test_sae_model_formats import random_sae

    save_pt(random_sae(d_in=16), tmp_path / "small.pt")
    code = main(["eval-sae", "--sae", str(tmp_path / "small.pt"), "--activations", str(dump), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "reads width 16 but the encoder gives width 256" in err


def test_default_sae_ships_with_its_held_out_numbers():
    sae = load_default_sae()
    assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k, sae.cfg.architecture) == (256, 256, 4, "topk")
    summary = json.loads((DEFAULT_DIR / "summary.json").read_text())
    held = json.loads((DEFAULT_DIR / "test_eval" / "summary.json").read_text())
    assert summary["encoder"] == "ge2e" and summary["layer"] == 3
    assert held["fve"] > 0.8 and held["l0"] == pytest.approx(4.0)


def test_a_killed_dump_resumes_to_the_same_files_and_other_settings_are_refused(demo_small_recordings, tmp_path):
    """Dumping a 12B model's states over a corpus is hours of GPU: a dump killed after some shards goes on
    from its journal and ends byte-identical to an uninterrupted one (shards cut mid-recording included);
    the journal of another encoder layer or shard size is refused; a vanished recording is counted."""
    import hashlib

    from clinical_transfer.activations import PROGRESS, dump_activations
    from clinical_transfer.audio import read_files
    from clinical_transfer.encoders import get_encoder
    from clinical_transfer.errors import ClinicalTransferError

    recs = demo_small_recordings[demo_small_recordings["status"] == "ok"].head(40)
    enc = get_encoder("ge2e", layer=3)
    whole = dump_activations(recs, enc, tmp_path / "whole", shard_tokens=700, batch=4, progress=False)

    class Killed(Exception):
        pass

    def dying_reader(after):
        def read(sources):
            for i, item in enumerate(read_files(sources)):
                if i == after:
                    raise Killed
                yield item
        return read

    part = tmp_path / "part"
    for after in (13, 10):  # killed twice, each time after some shards were written (10 of those left)
        with pytest.raises(Killed):
            dump_activations(recs, enc, part, shard_tokens=700, batch=4, progress=False, reader=dying_reader(after))
        assert (part / PROGRESS).is_file() and not (part / "manifest.json").exists()
    journal = json.loads((part / PROGRESS).read_text())
    assert len(journal["shards"]) >= 3
    with pytest.raises(ClinicalTransferError) as e:
        dump_activations(recs, enc, part, shard_tokens=500, batch=4, progress=False)
    assert str(e.value) == (f"{part} holds an unfinished dump made with other settings (shard_tokens). Fix: use a "
                            "new --out, or pass --overwrite to start this one over.")
    read = []

    def counting(sources):
        for item in read_files(sources):
            read.append(item[0])
            yield item

    dump_activations(recs, enc, part, shard_tokens=700, batch=4, progress=False, reader=counting)
    assert not (part / PROGRESS).exists()
    assert 0 < len(read) < len(recs) - 13  # only what the shards did not hold yet was encoded again

    def files(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    assert files(part) == files(whole) and len(files(whole)) > 5

    gone = recs.copy()
    gone.loc[gone.index[5], "source"] = str(tmp_path / "vanished.wav")
    dump_activations(gone, enc, tmp_path / "gone", shard_tokens=700, batch=4, progress=False)
    manifest = json.loads((tmp_path / "gone" / "manifest.json").read_text())
    assert manifest["n_vanished"] == 1 and sum(manifest["n_recordings"].values()) == len(recs) - 1


def test_a_device_encoders_dump_equals_the_host_paths(tiny_gemma, demo_small_recordings, tmp_path):
    """The GPU path of a dump (states cast to float16 on the encoder's device, one copy per chunk) writes the
    same shards, byte for byte, as the host path (float32 per clip, cast on the host): run on the CPU with
    a tiny random Gemma 4, whose encoder has both."""
    import hashlib

    import torch

    from clinical_transfer.activations import dump_activations
    from clinical_transfer.encoders import get_encoder
    from tests.tiny_models import HostOnly

    class SaysGPU(HostOnly):  # reports a CUDA device: the GPU branch (big chunks, decode threads, shard
        device = torch.device("cuda")  # writer thread) runs, the arithmetic stays on the CPU

        def device_hidden_states(self, ys):
            return self._enc.device_hidden_states(ys)

    recs = demo_small_recordings[demo_small_recordings["status"] == "ok"].head(24)
    enc = get_encoder("gemma", model=str(tiny_gemma[0]), layer=4)
    device = dump_activations(recs, enc, tmp_path / "device", shard_tokens=300, batch=5, progress=False)
    host = dump_activations(recs, HostOnly(enc), tmp_path / "host", shard_tokens=300, batch=5, progress=False)
    # the GPU branch hands the encoder 256 clips at a time; its passes differ from 5-clip calls, and padded
    # batches differ in the last float bits, so it is compared with the same chunking on the plain path
    gpu_branch = dump_activations(recs, SaysGPU(enc), tmp_path / "gpu", shard_tokens=300, batch=5, progress=False)
    same_chunks = dump_activations(recs, enc, tmp_path / "chunks", shard_tokens=300, batch=256, progress=False)

    def files(folder):
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}

    assert files(device) == files(host) and len(files(host)) > 4
    assert files(gpu_branch) == files(same_chunks)
