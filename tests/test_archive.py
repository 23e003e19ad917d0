"""Streaming members out of split .tar.gz parts without extracting them."""

import gzip
import io
import tarfile

from dataset_adapters.archive import ARCHIVE_SEP, archive_key, iter_members, read_sources, split_parts


def make_split(tmp_path, files, part_size=100):
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    for k in range(0, -(-len(blob) // part_size)):
        (tmp_path / f"D.tar.gz.a{chr(97 + k)}").write_bytes(blob[k * part_size : (k + 1) * part_size])
    return split_parts(tmp_path, "D")


def test_members_span_parts(tmp_path):
    rng = __import__("numpy").random.default_rng(0)
    files = {f"D/p{i}/cough-heavy.wav": rng.bytes(300) for i in range(5)}
    parts = make_split(tmp_path, files)
    assert len(parts) > 5 and parts[0].name == "D.tar.gz.aa"
    assert dict(iter_members(parts)) == files
    assert dict(iter_members(parts, {"D/p3/cough-heavy.wav"})) == {"D/p3/cough-heavy.wav": files["D/p3/cough-heavy.wav"]}
    assert not list(tmp_path.glob("**/*.wav"))


def test_read_sources_mixes_paths_and_members_and_reports_absent(tmp_path):
    parts = make_split(tmp_path, {"D/a.wav": b"AAA", "D/b.wav": b"BBB"})
    (tmp_path / "plain.wav").write_bytes(b"P")
    key = archive_key(parts)
    got = dict(read_sources([f"{key}{ARCHIVE_SEP}D/b.wav", str(tmp_path / "plain.wav"),
                             f"{key}{ARCHIVE_SEP}D/zzz.wav", str(tmp_path / "nope.wav")]))
    assert got == {f"{key}{ARCHIVE_SEP}D/b.wav": b"BBB", str(tmp_path / "plain.wav"): b"P",
                   f"{key}{ARCHIVE_SEP}D/zzz.wav": None, str(tmp_path / "nope.wav"): None}
