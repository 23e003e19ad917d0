"""Hostile and unlucky inputs (#12): each numbered case of the issue reproduced, and what happens now."""

import gzip
import io
import shutil
import tarfile

import pandas as pd

from dataset_adapters import get_adapter
from dataset_adapters.archive import find_parts, iter_members, read_sources
from dataset_adapters.demo import WAVES


def _copy(src, tmp_path):
    return shutil.copytree(src, tmp_path / "corpus")


def _tar(path, members):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


def test_case1_a_stray_file_beside_the_parts_is_reported_and_ignored(tmp_path, demo_small_tar):
    root = _copy(demo_small_tar, tmp_path)
    wave = sorted(WAVES)[1]
    aa = next(root.rglob(f"{wave}.tar.gz.aa"))
    shutil.copy(aa, aa.parent / f"{wave}.tar.gz.aa.bak")
    (aa.parent / f"{wave}.tar.gz.part").write_bytes(b"junk")
    adapter = get_adapter("coswara", root)
    got = adapter.recordings(progress=False)
    want = get_adapter("coswara", demo_small_tar).recordings(progress=False)
    pd.testing.assert_frame_equal(got, want.assign(source=want["source"].str.replace(str(demo_small_tar), str(root))))
    assert (got["status_reason"] == "file not found").sum() == 1  # only the planted missing file
    assert f"{wave}.tar.gz.aa.bak: not an archive part ({wave}.tar.gz.aa, .ab, ...), ignored" in adapter.notes
    assert f"{wave}.tar.gz.part: not an archive part ({wave}.tar.gz.aa, .ab, ...), ignored" in adapter.notes
    assert [p.name[-2:] for p in find_parts(aa.parent, wave).parts][:2] == ["aa", "ab"]


def test_case2_a_duplicate_member_name_uses_the_first_copy_everywhere(tmp_path):
    _tar(tmp_path / "D.tar.gz", [("D/a.wav", b"FIRST"), ("D/b.wav", b"B"), ("D/a.wav", b"SECOND")])
    parts = find_parts(tmp_path, "D").parts
    faults: list[str] = []
    assert list(iter_members(parts, faults=faults)) == [("D/a.wav", b"FIRST"), ("D/b.wav", b"B")]
    assert faults == ["D/a.wav: a second member with this name in D.tar.gz.. (first copy used)"]
    key = str(parts[0])
    # what scoring reads is what the inventory hashed: one yield, the first copy
    assert list(read_sources([f"{key}::D/a.wav"])) == [(f"{key}::D/a.wav", b"FIRST")]


def _broken(tmp_path, demo_small_tar, how):
    root = _copy(demo_small_tar, tmp_path)
    wave = sorted(WAVES)[2]
    ab = next(root.rglob(f"{wave}.tar.gz.ab"))
    ac = ab.with_name(f"{wave}.tar.gz.ac")
    if how == "missing":
        ab.unlink()
    elif how == "truncated":
        ab.write_bytes(ab.read_bytes()[:1000])
    elif how == "swapped":
        a, c = ab.read_bytes(), ac.read_bytes()
        ab.write_bytes(c)
        ac.write_bytes(a)
    adapter = get_adapter("coswara", root)
    return wave, adapter, adapter.recordings(progress=False)


def test_case5_a_missing_truncated_or_swapped_part_is_a_recorded_reason(tmp_path, demo_small_tar):
    clean = get_adapter("coswara", demo_small_tar).recordings(progress=False)
    for how in ("missing", "truncated", "swapped"):
        wave, adapter, got = _broken(tmp_path / how, demo_small_tar, how)
        assert len(got) == len(clean)  # no row lost
        lost = got[got["status_reason"].str.startswith("not read: archive", na=False)]
        assert len(lost) > 0 and (lost["wave"] == wave).all(), how
        assert lost["status_reason"].str.contains("a part is truncated, corrupt or out of order").all()
        others = got[got["wave"] != wave]
        pd.testing.assert_frame_equal(others.drop(columns="source"),
                                      clean[clean["wave"] != wave].drop(columns="source"))
        # what could be read before the fault was read
        assert (got[got["wave"] == wave]["status"] == "ok").sum() > 0, how
        if how == "missing":
            assert f"{wave}.tar.gz.ab is missing: the parts after it are not read" in adapter.notes


def _with_metadata(tmp_path, demo_small, edit):
    root = _copy(demo_small, tmp_path)
    path = root / "combined_data.csv"
    meta = pd.read_csv(path, dtype=str, keep_default_na=False)
    edit(meta).to_csv(path, index=False)
    return root


def test_case3_a_participant_id_column_never_replaces_the_corpus_id(tmp_path, demo_small, demo_small_recordings):
    def add_other_ids(m):
        return m.assign(participant_id=m["id"].iloc[::-1].to_numpy())

    root = _with_metadata(tmp_path, demo_small, add_other_ids)
    adapter = get_adapter("coswara", root)
    got = adapter.recordings(progress=False)
    assert (got["participant_id"] + "_" + got["recording_type"] == got["recording_id"]).all()
    assert set(got["participant_id"]) == set(demo_small_recordings["participant_id"])
    assert "meta_participant_id" in got.columns
    assert any("participant_id clash with the Recording table's own names" in n for n in adapter.notes)


def _with_people_without_audio(tmp_path, demo_small, n):
    def more(m):
        extra = m.sample(n, replace=True, random_state=0).reset_index(drop=True)
        return pd.concat([m, extra.assign(id=[f"extra-{i:09d}" for i in range(n)])], ignore_index=True)

    return _with_metadata(tmp_path, demo_small, more)


def test_case7_huge_metadata_beside_a_partial_copy_is_refused_or_read_for_those_with_audio(
        tmp_path, demo_small, demo_small_recordings, monkeypatch):
    """A metadata file of millions of people beside a few recordings: listing 9 absent recordings per person
    is refused past MAX_LISTED_WITHOUT_AUDIO (one line, before the table is built); --only-with-audio reads
    the metadata in chunks, keeping only the people with audio, and gives the table of the small file."""
    from clinical_transfer.errors import ClinicalTransferError
    from dataset_adapters import coswara

    root = _with_people_without_audio(tmp_path, demo_small, 250)
    monkeypatch.setattr(coswara, "MAX_LISTED_WITHOUT_AUDIO", 200)
    monkeypatch.setattr(coswara, "CHUNK_ROWS", 7)  # 39 chunks, the people with audio spread over the first 4
    try:
        get_adapter("coswara", root).recordings(progress=False)
        raise AssertionError("no error")
    except ClinicalTransferError as exc:
        assert str(exc).startswith(f"combined_data.csv lists 274 participants and 250 of them have no audio under "
                                   f"{root}: listing their 2,250 absent recordings one by one is refused (more than "
                                   "200 such participants). Fix: pass --only-with-audio"), str(exc)
    adapter = get_adapter("coswara", root, only_with_audio=True)
    got = adapter.recordings(progress=False)
    want = demo_small_recordings
    pd.testing.assert_frame_equal(got, want.assign(source=want["source"].str.replace(str(demo_small), str(root))))
    assert "only_with_audio: 250 participant(s) without any audio left out" in adapter.notes
    monkeypatch.setattr(coswara, "MAX_LISTED_WITHOUT_AUDIO", 250)  # at the bound: listed, 9 rows each
    table = get_adapter("coswara", root).recordings(progress=False)
    assert len(table) == len(want) + 9 * 250
    assert (table[table["participant_id"].str.startswith("extra-")]["status_reason"] == "file not found").all()


def test_case6_metadata_without_required_columns_or_rows_is_one_line(tmp_path, demo_small):
    from clinical_transfer.errors import ClinicalTransferError

    for drop in ("g", "a"):
        root = _with_metadata(tmp_path / drop, demo_small, lambda m, c=drop: m.drop(columns=c))
        try:
            get_adapter("coswara", root).recordings(progress=False)
            raise AssertionError("no error")
        except ClinicalTransferError as exc:
            assert str(exc).startswith(f"combined_data.csv has no '{drop}' column (found: id,"), str(exc)
    root = _with_metadata(tmp_path / "empty", demo_small, lambda m: m.iloc[:0])
    try:
        get_adapter("coswara", root).recordings(progress=False)
        raise AssertionError("no error")
    except ClinicalTransferError as exc:
        assert str(exc).startswith("combined_data.csv lists no participants (a header only)")


def test_case6_extra_source_and_status_columns_are_kept_aside(tmp_path, demo_small, demo_small_recordings):
    root = _with_metadata(tmp_path, demo_small, lambda m: m.assign(source="web", status="done"))
    got = get_adapter("coswara", root).recordings(progress=False)
    assert (got["meta_source"] == "web").all() and (got["meta_status"] == "done").all()
    assert got["status"].value_counts().to_dict() == demo_small_recordings["status"].value_counts().to_dict()


def test_case11_implausible_ages_become_unknown_with_a_count(tmp_path, demo_small):
    def odd_ages(m):
        m = m.copy()
        m.loc[0, "a"], m.loc[1, "a"], m.loc[2, "a"] = "999", "-3", "1e9"
        return m

    root = _with_metadata(tmp_path, demo_small, odd_ages)
    adapter = get_adapter("coswara", root)
    meta = adapter.metadata()
    assert meta["age"].isna().sum() == 3 and meta["age"].dropna().between(0, 120).all()
    assert "a: 3 age(s) outside 0-120 -> unknown" in adapter.notes


def test_case6_a_data_root_containing_the_archive_separator(tmp_path, demo_small_tar, demo_small_recordings):
    from clinical_transfer.audio import read_files

    root = shutil.copytree(demo_small_tar, tmp_path / "odd::name" / "corpus")
    adapter = get_adapter("coswara", root)
    got = adapter.recordings(progress=False)
    assert got["status"].value_counts().to_dict() == demo_small_recordings["status"].value_counts().to_dict()
    ok = got[got["status"] == "ok"]["source"].tolist()[:3]
    assert all(data is not None for _, data in adapter.read_sources(ok))
    plain = tmp_path / "x::y.wav"
    plain.write_bytes(b"RIFF")
    assert list(read_files([str(plain)])) == [(str(plain), b"RIFF")]


def test_case6_a_corrupt_cache_entry_is_recomputed(tmp_path):
    import numpy as np

    from clinical_transfer.store import RecordingScores, ScoreCache

    cache = ScoreCache(tmp_path)
    s = RecordingScores(np.array([1, 5], np.int32), np.ones(2, np.float32), np.ones(2, np.float32),
                        np.ones(2, np.float32), 7)
    cache.put("ab" * 32, s)
    assert cache.get("ab" * 32).n_frames == 7
    for damage in (b"", cache.path("ab" * 32).read_bytes()[:50]):
        cache.put("ab" * 32, s)
        cache.path("ab" * 32).write_bytes(damage)
        assert cache.get("ab" * 32) is None and not cache.path("ab" * 32).exists()
    assert cache.corrupt == 2


def test_case8_placeholder_and_short_salts_are_refused_and_never_recorded_plainly(tmp_path, demo_small, monkeypatch,
                                                                                  capsys):
    import hashlib
    import json

    from clinical_transfer.cli import main

    def inv(*salt_args, out="o"):
        return main(["inventory", "--quiet", "--data-root", str(demo_small), "--out", str(tmp_path / out), *salt_args])

    for args in (("--salt", "replace-with-a-private-salt"), ("--salt", "s"), ("--salt", "fifteen-chars-x")):
        assert inv(*args) == 2, args
        assert not (tmp_path / "o").exists()  # refused before any work
    monkeypatch.setenv("CLINICAL_TRANSFER_SALT", "short")
    assert inv() == 2
    salt = "a-private-salt-from-a-file-0123"
    (tmp_path / "salt.txt").write_text(salt + "\n")
    (tmp_path / "empty.txt").write_text("\n")
    capsys.readouterr()
    assert inv("--salt-file", str(tmp_path / "empty.txt")) == 2  # was: "the salt is the shipped placeholder"
    assert f"error: --salt-file {tmp_path / 'empty.txt'} is empty. Fix: write the salt on its first line." \
        in capsys.readouterr().err
    assert inv("--salt-file", str(tmp_path / "salt.txt")) == 0
    text = (tmp_path / "o" / "manifest.json").read_text()
    recorded = json.loads(text)["config"]["guardrails"]["salt"]
    assert recorded.startswith("scrypt:") and salt not in text
    assert hashlib.sha256(salt.encode()).hexdigest() not in text
    monkeypatch.setenv("CLINICAL_TRANSFER_SALT", salt)
    assert inv(out="o2") == 0
    assert json.loads((tmp_path / "o2" / "manifest.json").read_text())["config"]["guardrails"]["salt"] == recorded


def test_case4_6_a_used_dot_or_read_only_output_folder_is_refused_before_any_work(tmp_path, demo_small, monkeypatch,
                                                                                  capsys):
    import os

    from clinical_transfer.cli import main

    salt = ["--salt", "test-salt-0123456789"]

    def inv(out, *extra):
        return main(["inventory", "--quiet", "--data-root", str(demo_small), "--out", str(out), *salt, *extra])

    assert inv(tmp_path / "run") == 0
    (tmp_path / "run" / "left_over.csv").write_text("an earlier run's table\n")
    assert inv(tmp_path / "run") == 2
    assert "output folder" in capsys.readouterr().err
    assert inv(tmp_path / "run", "--overwrite") == 0
    assert not (tmp_path / "run" / "left_over.csv").exists()
    other = tmp_path / "notes"
    other.mkdir()
    (other / "thesis.tex").write_text("mine")
    assert inv(other, "--overwrite") == 2 and (other / "thesis.tex").exists()  # not a run folder: never cleared
    monkeypatch.chdir(tmp_path)
    assert inv(".", "--overwrite") == 2
    capsys.readouterr()
    assert inv(demo_small, "--overwrite") == 2  # the corpus itself: never cleared
    assert "is or holds the corpus folder" in capsys.readouterr().err and (demo_small / "combined_data.csv").exists()
    capsys.readouterr()
    (tmp_path / "a_file").write_text("x")
    assert inv(tmp_path / "a_file" / "run") == 2  # unwritable whoever runs the tests (root writes anywhere else)
    assert "cannot write to output folder" in capsys.readouterr().err
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert inv(ro / "run") == 2
        assert "cannot write to output folder" in capsys.readouterr().err


def test_case6_an_identifier_as_confound_or_label_is_refused_at_load(tmp_path):
    import pytest

    from clinical_transfer.errors import ClinicalTransferError
    from clinical_transfer.run.config import load_config

    for toml, msg in (("[analysis]\nconfounds = ['age', 'participant_id']\n", "confounds in"),
                      ("[analysis]\nstrata = ['recording_id']\n", "strata in"),
                      ("[[analysis.labels]]\ncolumn = 'participant_id'\n", "column in")):
        (tmp_path / "c.toml").write_text(toml)
        with pytest.raises(ClinicalTransferError, match=msg):
            load_config(tmp_path / "c.toml")


def test_case4_a_store_rewritten_without_frame_codes_has_none(tmp_path):
    import numpy as np
    import pytest

    from clinical_transfer.errors import ClinicalTransferError
    from clinical_transfer.store import RecordingScores, ScoreStore, write_store

    idx = pd.DataFrame({"recording_id": ["r_a"], "participant_id": ["p_a"], "segment_group": ["vowel"],
                        "recording_type": ["vowel-a"], "n_frames": [2]})
    one = np.ones(1, np.float32)
    with_frames = RecordingScores(np.array([3], np.int32), one, one, one, 2, np.array([[3], [3]], np.uint16),
                                  np.ones((2, 1), np.float16))
    write_store(tmp_path, idx, [with_frames], 8, {})
    assert ScoreStore(tmp_path).frame_codes(0)[0].tolist() == [[3], [3]]
    write_store(tmp_path, idx, [RecordingScores(np.array([3], np.int32), one, one, one, 2)], 8, {})
    with pytest.raises(ClinicalTransferError, match="has no frame-level codes"):
        ScoreStore(tmp_path).frame_codes(0)


def test_case10_html_embeds_only_the_runs_own_figures(tmp_path):
    import base64

    from clinical_transfer.reporting.render import render_html

    (tmp_path / "figures").mkdir()
    png = b"\x89PNG\r\n\x1a\nfigure-bytes"
    (tmp_path / "figures" / "ok.png").write_bytes(png)
    secret = tmp_path.parent / "secret.txt"
    secret.write_text("host-name-here")
    (tmp_path / "figures" / "link.png").symlink_to(secret)
    md = "\n".join(["# r", "![fine](figures/ok.png)", f"![x]({secret})", "![y](figures/../../secret.txt)",
                    "![z](figures/link.png)", "![gone](figures/missing.png)"])
    page = render_html(md, tmp_path).read_text()
    assert base64.b64encode(png).decode() in page
    assert base64.b64encode(b"host-name-here").decode() not in page and "host-name-here" not in page
    assert page.count("(not embedded: not a figure of this run)") == 4


def test_case12_metadata_values_stay_inert_text_in_markdown_and_html(tmp_path):
    from clinical_transfer.reporting.render import _table, md_text, render_html

    hostile = ["<script>alert(1)</script>", '<img src=x onerror="alert(1)">', "[click](javascript:alert(1))",
               "A\n![x](/etc/hostname)\nZ", "left | right"]
    table = _table(pd.DataFrame({"feature_label": hostile, "auroc": [0.61, 0.62, 0.63, 0.64, 0.65]}))
    lines = table.splitlines()
    assert len(lines) == 2 + len(hostile)  # the newline did not start a line of its own
    assert all("<" not in line and "](" not in line.replace("\\](", "") for line in lines)
    assert md_text("left | right") == "left \\| right"
    page = render_html(table, tmp_path).read_text()
    for value, auroc in zip(hostile, ("0.61", "0.62", "0.63", "0.64", "0.65")):
        import html

        cell = html.escape(" ".join(value.splitlines()))
        assert f"<td>{cell}</td><td>{auroc}</td>" in page  # the number sits under its own header
    assert "<script>" not in page and "<img" not in page


def test_case7_a_recording_past_the_maximum_duration_is_skipped_from_its_header(tmp_path):
    import io

    import numpy as np
    import soundfile as sf

    from clinical_transfer.audio import AudioCheckConfig, check
    from dataset_adapters.inventory import inspect_too_long

    cfg = AudioCheckConfig(max_duration_s=2.0)
    path = tmp_path / "long.wav"
    sf.write(path, 0.1 * np.ones(16000 * 3), 16000)
    result = check(path.read_bytes(), cfg)
    assert (result.status, result.reason) == ("too_long", "3 s > maximum 2 s (not decoded)")
    row = inspect_too_long(path, "counting-normal", cfg)
    assert row["status"] == "too_long" and row["duration_s"] == 3.0 and len(row["audio_sha256"]) == 64
    assert inspect_too_long(path, "counting-normal", AudioCheckConfig()) is None  # 3 s is fine by default
    buf = io.BytesIO()
    sf.write(buf, 0.1 * np.ones(16000), 16000, format="WAV")
    assert check(buf.getvalue(), cfg).status == "ok"


def test_case7_a_long_archive_member_is_judged_by_its_first_bytes_and_never_held(tmp_path, demo_small, monkeypatch):
    """A member past the maximum inside a tar stream: its WAV header (first 64 KB) decides, its bytes are
    hashed in 1 MB reads; the row equals the one a full read gives (same hash, declared duration)."""
    import hashlib

    import numpy as np
    import soundfile as sf

    from clinical_transfer.audio import AudioCheckConfig, wav_declared_duration_s
    from dataset_adapters import archive

    root = _copy(demo_small, tmp_path)
    long_wav = next(root.rglob("counting-normal.wav"))
    sf.write(long_wav, 0.1 * np.sin(np.arange(16000 * 5) / 7.0), 16000, subtype="PCM_16")
    data = long_wav.read_bytes()
    assert wav_declared_duration_s(data[:4096], len(data)) == 5.0  # the header alone says it
    assert wav_declared_duration_s(b"fLaC" + data[4:4096], len(data)) is None
    for date in sorted(p for p in root.iterdir() if p.is_dir() and p.name.isdigit()):
        members = sorted(f for f in date.rglob("*.wav"))
        _tar(date / f"{date.name}.tar.gz", [(f"{date.name}/{f.relative_to(date)}", f.read_bytes()) for f in members])
        for f in members:
            f.unlink()
    cfg = AudioCheckConfig(max_duration_s=3.0)
    seen = []
    real_screen = archive._screened
    monkeypatch.setattr(archive, "_screened", lambda *a: seen.append(a[2]) or real_screen(*a))
    whole = get_adapter("coswara", root, audio_check=cfg).recordings(progress=False)  # 5 s WAV < 32 MB: read whole
    monkeypatch.setattr(archive, "SCREEN_ABOVE_BYTES", 100_000)  # now only the long one is screened
    screened = get_adapter("coswara", root, audio_check=cfg).recordings(progress=False)
    assert seen == [len(data)]
    pd.testing.assert_frame_equal(screened, whole)
    row = screened.set_index("source").filter(like=long_wav.parent.name, axis=0)
    row = row[row["recording_type"] == "counting-normal"].iloc[0]
    assert (row["status"], row["status_reason"], row["duration_s"]) == ("too_long", "5 s > maximum 3 s (not decoded)", 5.0)
    assert row["audio_sha256"] == hashlib.sha256(data).hexdigest()


def test_case7_measures_and_content_tags_of_a_long_recording_do_not_depend_on_the_block_size(monkeypatch):
    """Signal measures and tagger features are computed in blocks (peak memory no longer grows with the
    length of a recording under the maximum); the blocks change nothing a table shows."""
    import numpy as np

    from clinical_transfer import audio
    from dataset_adapters import tagger

    rng = np.random.default_rng(3)
    t = np.arange(16000 * 75) / 16000
    voice = np.sin(2 * np.pi * 140 * t) * (np.sin(2 * np.pi * 0.1 * t) > 0)  # 5 s tones, 5 s pauses
    x = (0.3 * voice + 0.01 * rng.standard_normal(t.size)).astype(np.float32)[:, None]
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", 10**12)  # one block: the whole-signal computation
    monkeypatch.setattr(tagger, "BLOCK_FRAMES", 10**9)
    whole = audio.measure(x, 16000)
    f_whole = tagger.features(x[:, 0], 16000)
    monkeypatch.setattr(audio, "BLOCK_SAMPLES", 16000 * 7 + 123)
    monkeypatch.setattr(tagger, "BLOCK_FRAMES", 333)
    blocks = audio.measure(x, 16000)
    assert blocks.silence_fraction == whole.silence_fraction and blocks.peak_dbfs == whole.peak_dbfs
    assert blocks.clipped_fraction == whole.clipped_fraction and abs(blocks.rms_dbfs - whole.rms_dbfs) < 1e-12
    assert tagger.features(x[:, 0], 16000) == f_whole  # every per-frame quantity is per frame
    assert tagger.tag_from_features(f_whole) == "vowel"  # a held tone with pauses


def test_audio_of_people_missing_from_the_metadata_is_noted_in_both_layouts(tmp_path, demo_small, demo_small_tar):
    for name, src in (("extracted", demo_small), ("split-tar", demo_small_tar)):
        root = _with_metadata(tmp_path / name, src, lambda m: m.iloc[1:])
        adapter = get_adapter("coswara", root)
        got = adapter.recordings(progress=False)
        assert got["participant_id"].nunique() == 23, name
        assert ("1 participant(s) with audio (extracted or in archives) are not in combined_data.csv (ignored)"
                in adapter.notes), name


def test_case7_every_adapter_reading_files_checks_the_header_before_reading(tmp_path, monkeypatch):
    """COUGHVID, UK COVID-19 and the manifest adapter read a file only when its header is within the
    maximum (shared ``inventory.inspect_file``): a too-long file is hashed by streaming, never read whole."""
    import hashlib
    from pathlib import Path

    import numpy as np
    import soundfile as sf

    from clinical_transfer.audio import AudioCheckConfig
    from dataset_adapters.inventory import inspect_file

    long_wav, short_wav = tmp_path / "long.wav", tmp_path / "short.wav"
    sf.write(long_wav, 0.1 * np.sin(np.arange(16000 * 5) / 7.0), 16000, subtype="PCM_16")
    sf.write(short_wav, 0.1 * np.sin(np.arange(16000 * 2) / 7.0), 16000, subtype="PCM_16")
    read = []
    real_read = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self.name) or real_read(self))
    cfg = AudioCheckConfig(max_duration_s=3.0)
    row = inspect_file(long_wav, "counting-normal", cfg)
    assert (row["status"], row["duration_s"]) == ("too_long", 5.0) and read == []
    assert row["audio_sha256"] == hashlib.sha256(long_wav.open("rb").read()).hexdigest()
    assert inspect_file(short_wav, "counting-normal", cfg)["status"] == "ok" and read == ["short.wav"]
    read.clear()
    pd.DataFrame({"path": ["long.wav", "short.wav"], "participant_id": ["p1", "p2"],
                  "segment_type": ["counting-normal", "counting-normal"], "age": [30, 40],
                  "sex": ["female", "male"]}).to_csv(tmp_path / "manifest.csv", index=False)
    table = get_adapter("manifest", tmp_path / "manifest.csv", audio_check=cfg).recordings(progress=False)
    assert table.set_index("participant_id")["status"].to_dict() == {"p1": "too_long", "p2": "ok"}
    assert "long.wav" not in read and "short.wav" in read


def test_damaged_score_stores_and_activation_dumps_are_one_clear_error(tmp_path):
    """A disk that filled, a copy that stopped half way, a file deleted: the store or dump named, the file
    and its problem said, and how to get a good one — not numpy's or pyarrow's traceback (each of these
    raised from inside them before), and never a matrix built from a truncated array."""
    import json

    import numpy as np
    import pytest

    from clinical_transfer.activations import ActivationDump
    from clinical_transfer.errors import ClinicalTransferError
    from clinical_transfer.store import RecordingScores, ScoreStore, write_store

    idx = pd.DataFrame({"recording_id": ["r_a", "r_b"], "participant_id": ["p_a", "p_b"],
                        "segment_group": ["vowel"] * 2, "recording_type": ["vowel-a"] * 2, "n_frames": [2, 3]})
    rows = [RecordingScores(np.arange(k, dtype=np.int32), np.ones(k, np.float32), np.ones(k, np.float32),
                            np.ones(k, np.float32), 2) for k in (40, 60)]
    fix = "Fix: write it again with clinical-transfer extract ... --out DIR (finished recordings come from the score cache)."
    damage = {
        "cut_mean": (lambda d: (d / "mean.npy").write_bytes((d / "mean.npy").read_bytes()[:200]),
                     "mean.npy: Failed to read all data for array"),
        "no_indptr": (lambda d: (d / "indptr.npy").unlink(), "missing file indptr.npy"),
        "bad_index": (lambda d: (d / "index.parquet").write_text("garbage"), "Could not open Parquet input source"),
        "bad_manifest": (lambda d: (d / "manifest.json").write_text("{"), "manifest.json: Expecting property name"),
        "short_values": (lambda d: np.save(d / "max.npy", np.ones(99, np.float32)), "max.npy has 99 values for 100 codes"),
        "other_rows": (lambda d: np.save(d / "indptr.npy", np.array([0, 100])),
                       "indptr.npy has 2 offsets ending at 100 for 2 recordings and 100 codes"),
    }
    for name, (hurt, detail) in damage.items():
        folder = write_store(tmp_path / name, idx, rows, 64, {})
        assert ScoreStore(folder).matrix("max").nnz == 100
        hurt(folder)
        with pytest.raises(ClinicalTransferError) as e:
            store = ScoreStore(folder)
            store.matrix("max") if name != "cut_mean" else store.matrix("mean")
        text = str(e.value)
        assert text.startswith(f"the score store {folder} is damaged or incomplete: {detail}"), text
        assert text.endswith(fix)

    dump = tmp_path / "dump"
    dump.mkdir()
    np.save(dump / "train_00000.npy", np.ones((50, 4), np.float32))
    (dump / "manifest.json").write_text(json.dumps({"shards": [{"file": "train_00000.npy", "split": "train"},
                                                               {"file": "heldout_00000.npy", "split": "heldout"}]}))
    assert len(ActivationDump(dump).split("train")) == 50
    fix = "Fix: write it again with clinical-transfer activations ... --out DIR --overwrite."
    with pytest.raises(ClinicalTransferError) as e:
        ActivationDump(dump).split("heldout")
    assert str(e.value) == f"the activation dump {dump} is damaged or incomplete: missing file heldout_00000.npy. {fix}"
    (dump / "train_00000.npy").write_bytes((dump / "train_00000.npy").read_bytes()[:300])
    with pytest.raises(ClinicalTransferError) as e:
        ActivationDump(dump).split("train")
    assert str(e.value) == (f"the activation dump {dump} is damaged or incomplete: train_00000.npy: mmap length is "
                            f"greater than file size. {fix}")
