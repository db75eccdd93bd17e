"""compress -> restore on in-process Ray and local files: keys, members, pixels, passthrough."""

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import read_tar, write_shards
from PIL import Image

from pipeline.archive_format import read_manifest
from pipeline.compress import compress
from pipeline.images import psnr
from pipeline.restore import restore
from pipeline.shard_encode import Guard
from pipeline.verify import verify

pytestmark = pytest.mark.usefixtures("ray_local")
NO_GUARD = Guard(size=False)  # these tests exercise the codec path on every image


def _source(small_shards):
    return {p.name: read_tar(p) for p in sorted(small_shards.glob("*.tar"))}


def test_roundtrip_keeps_keys_members_and_quality(small_shards, tmp_path):
    archive, out = str(tmp_path / "arc"), tmp_path / "out"
    report = compress([str(small_shards)], archive, "webp", 85, progress=False, guard=NO_GUARD)
    assert report.ok and sorted(report.done) == ["shard-000000", "shard-000001"]
    assert report.totals["samples"] == 6 and report.totals["passthrough"] == 1
    manifest = read_manifest(archive)
    assert manifest["codec"] == "webp" and manifest["quality"] == 85
    assert manifest["codec_versions"]["libwebp"]

    restored = restore(archive, str(out), image_format="png", progress=False)
    assert restored.ok and sum(restored.written.values()) == 6
    source = _source(small_shards)
    rows = {r["key"]: r for r in pq.read_table(f"{archive}/shards").to_pylist()}
    for name, samples in source.items():
        back = read_tar(out / name)
        assert sorted(back) == sorted(samples)
        for key, members in samples.items():
            row = rows[key]
            if row["status"] == "passthrough":
                assert back[key] == members  # byte-identical, image member included
                assert "does not decode" in row["reason"]
                continue
            image_suffix = row["image_name"]
            for suffix, data in members.items():
                if suffix != image_suffix:
                    assert back[key][suffix] == data
            original = np.asarray(Image.open(io.BytesIO(members[image_suffix])).convert("RGB"))
            decoded = np.asarray(Image.open(io.BytesIO(back[key]["png"])))
            assert abs(psnr(original, decoded) - row["psnr"]) < 0.01
            assert row["bpp"] == pytest.approx(8 * row["bytes"] / (row["height"] * row["width"]))
    assert verify(archive, progress=False).ok


def test_restore_in_original_formats(small_shards, tmp_path):
    archive, out = str(tmp_path / "arc"), tmp_path / "out"
    assert compress([str(small_shards)], archive, "png", progress=False, guard=NO_GUARD).ok
    assert restore(archive, str(out), progress=False).ok
    source = _source(small_shards)
    for name, samples in source.items():
        back = read_tar(out / name)
        for key, members in samples.items():
            assert set(back[key]) == set(members)
            if key == "bad":  # passthrough: restored byte-identical
                assert back[key] == members
                continue
            for suffix, data in members.items():
                if suffix == "png":  # lossless codec, lossless container: same pixels
                    a = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                    b = np.asarray(Image.open(io.BytesIO(back[key][suffix])).convert("RGB"))
                    assert np.array_equal(a, b)
                elif suffix in ("jpg", "webp"):
                    im = Image.open(io.BytesIO(back[key][suffix]))
                    assert im.format == {"jpg": "JPEG", "webp": "WEBP"}[suffix]
                else:
                    assert back[key][suffix] == data


def test_restore_selected_shards_and_keys(small_shards, tmp_path):
    archive = str(tmp_path / "arc")
    assert compress([str(small_shards)], archive, "jpeg", 70, progress=False, guard=NO_GUARD).ok
    only = restore(archive, str(tmp_path / "one"), shards=["shard-000001"], progress=False)
    assert only.ok and list(only.written) == ["shard-000001"]
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["shard-000001.tar"]

    keys = tmp_path / "keys.txt"
    keys.write_text("a1\nshard-000001\tb2\n")
    picked = restore(archive, str(tmp_path / "keys"), keys_file=str(keys), progress=False)
    assert picked.ok
    assert sorted(read_tar(tmp_path / "keys" / "shard-000000.tar")) == ["a1"]
    assert sorted(read_tar(tmp_path / "keys" / "shard-000001.tar")) == ["b2"]

    keys.write_text("a1\nnot-there\n")
    missing = restore(archive, str(tmp_path / "miss"), keys_file=str(keys), progress=False)
    assert not missing.ok and missing.missing_keys == ["not-there"]
    # --shards leaves out a shard the keys file names: reported like a key in any shard (the
    # shard<TAB>key line was once ignored without a word)
    keys.write_text("a1\nb0\nshard-000001\tb2\n")
    some = restore(archive, str(tmp_path / "some"), shards=["shard-000000"], keys_file=str(keys),
                   progress=False)
    assert some.missing_keys == ["b0", "shard-000001\tb2"]
    assert sorted(read_tar(tmp_path / "some" / "shard-000000.tar")) == ["a1"]


def test_stats_file_accounts_for_every_sample(small_shards, tmp_path):
    archive = tmp_path / "arc"
    compress([str(small_shards)], str(archive), "avif", progress=False, guard=NO_GUARD)
    stats = json.loads((archive / "_stats.json").read_text())
    assert stats["totals"]["samples"] == 6
    reasons = [r for s in stats["shards"].values() for r in s["passthrough_reasons"]]
    assert [r["key"] for r in reasons] == ["bad"]


def test_a_large_archive_says_that_it_builds_the_index(small_shards, tmp_path, capsys,
                                                       monkeypatch):
    """From INDEX_NOTE_SHARDS shard files (100; here 2) compress says that it builds the index
    and what it took: at millions of rows that is minutes of silence after the last shard."""
    import pipeline.compress as compress_module

    archive = tmp_path / "arc"
    compress([str(small_shards)], str(archive), "webp", 80, guard=NO_GUARD)
    assert "indexing" not in capsys.readouterr().err
    monkeypatch.setattr(compress_module, "INDEX_NOTE_SHARDS", 2)
    compress([str(small_shards)], str(archive), "webp", 80, guard=NO_GUARD)  # nothing to do
    err = capsys.readouterr().err
    assert "indexing the keys of 2 shard files into _index.parquet" in err
    assert "_index.parquet: 6 keys, in " in err


def test_a_shard_of_many_passthrough_rows_lists_only_its_first_reasons(tmp_path, capsys):
    """Each passthrough row's key and reason went into the shard file's footer and _stats.json:
    both grew with the rows (about 1.4 MB for 10k such rows; every lookup reads the footer). The
    first PASSTHROUGH_REASONS_KEPT are listed; info counts them all; the rows keep every reason."""
    from pipeline.cli import main
    from pipeline.shard_encode import PASSTHROUGH_REASONS_KEPT

    n = PASSTHROUGH_REASONS_KEPT + 5
    write_shards(tmp_path / "src", [[{"__key__": f"k{i:02d}", "png": b"not a png %d" % i}
                                     for i in range(n)]])
    archive = tmp_path / "arc"
    report = compress([str(tmp_path / "src")], str(archive), "webp", progress=False)
    assert report.ok and report.totals["passthrough"] == n
    stats = json.loads((archive / "_stats.json").read_text())["shards"]["shard-000000"]
    assert stats["passthrough"] == n
    assert [r["key"] for r in stats["passthrough_reasons"]] == [f"k{i:02d}" for i in range(20)]
    footer = json.loads(pq.ParquetFile(archive / "shards" / "shard-000000.parquet")
                        .metadata.metadata[b"latentarc"])
    assert len(footer["passthrough_reasons"]) == PASSTHROUGH_REASONS_KEPT
    capsys.readouterr()
    assert main(["info", str(archive)]) == 0
    assert f"passthrough samples ({n}; 20 shown" in capsys.readouterr().out
    back = restore(str(archive), str(tmp_path / "out"), where="status == 'passthrough'",
                   progress=False)
    assert back.ok and back.written == {"shard-000000": n}


def test_guard_keeps_originals_that_coding_would_make_worse(small_shards, tmp_path):
    archive = tmp_path / "arc"
    # Lossless PNG of an already-PNG source is never smaller: stored as the original bytes.
    assert compress([str(small_shards)], str(archive), "png", progress=False).ok
    rows = {r["key"]: r for r in pq.read_table(archive / "shards").to_pylist()}
    assert rows["a0"]["status"] == "passthrough" and "not smaller" in rows["a0"]["reason"]
    assert verify(str(archive), progress=False).ok
    # a JPEG of noise: jpeg-lossless (the fallback for JPEGs) is larger too, and the reason
    # says it was tried
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8)).save(
        noise, "JPEG", quality=20)
    write_shards(tmp_path / "noise", [[{"__key__": "n", "jpg": noise.getvalue()}]])
    assert compress([str(tmp_path / "noise")], str(tmp_path / "arc-n"), "png", progress=False).ok
    (row,) = pq.read_table(tmp_path / "arc-n" / "shards").to_pylist()
    assert row["status"] == "passthrough" and row["reason"].endswith(
        "; jpeg-lossless was not smaller either")

    low = tmp_path / "low"
    assert compress([str(small_shards)], str(low), "jpeg", 5, progress=False,
                    guard=Guard(size=True, min_psnr=40)).ok
    rows = {r["key"]: r for r in pq.read_table(low / "shards").to_pylist()}
    assert "below --min-psnr 40" in rows["b0"]["reason"]
    back = restore(str(low), str(tmp_path / "out"), progress=False)
    assert back.ok
    source = _source(small_shards)
    assert read_tar(tmp_path / "out" / "shard-000001.tar")["b0"] == source["shard-000001.tar"]["b0"]

    unguarded = tmp_path / "unguarded"
    assert compress([str(small_shards)], str(unguarded), "png", progress=False, guard=Guard(size=False)).ok
    rows = {r["key"]: r for r in pq.read_table(unguarded / "shards").to_pylist()}
    assert rows["a0"]["status"] == "ok"


def test_learned_codec_through_the_pipeline(small_shards, tmp_path):
    """The tiny random-weights learned codec (tests/golden) through compress/verify/restore."""
    archive = tmp_path / "arc"
    report = compress([str(small_shards)], str(archive), "test-tiny-msh", 3.0, progress=False,
                      guard=NO_GUARD)
    assert report.ok and report.totals["compressed"] == 5
    manifest = read_manifest(str(archive))
    assert manifest["weights_sha256"] and manifest["codec"] == "test-tiny-msh"
    rows = pq.read_table(archive / "shards").to_pylist()
    assert {r["weights"] for r in rows if r["status"] == "ok"} == {manifest["weights_sha256"]}
    assert verify(str(archive), progress=False).ok
    from pipeline.rows import RowDecoder, RowError

    row = next(r for r in rows if r["status"] == "ok")
    with pytest.raises(RowError, match="written with weights sha256 none, but codec test-tiny-msh"):
        RowDecoder().check({**row, "weights": None})  # a learned row must name its weights
    back = restore(str(archive), str(tmp_path / "out"), progress=False)
    assert back.ok and sum(back.written.values()) == 6
    # --effort (latent refinement) reaches the workers' codec and is recorded; its streams
    # verify with the same decoder
    refined = tmp_path / "refined"
    assert compress([str(small_shards)], str(refined), "test-tiny-msh", 3.0, progress=False,
                    guard=NO_GUARD, effort=10).ok
    assert json.loads((refined / "_stats.json").read_text())["run"]["effort"] == 10
    refined_rows = pq.read_table(refined / "shards").to_pylist()
    streams = {r["key"]: r["bitstream"] for r in rows if r["status"] == "ok"}
    assert any(r["bitstream"] != streams[r["key"]] for r in refined_rows if r["status"] == "ok")
    assert verify(str(refined), progress=False).ok
    # above --effort-max-mp an image is coded as with effort 0, and counted
    capped = tmp_path / "capped"
    assert compress([str(small_shards)], str(capped), "test-tiny-msh", 3.0, progress=False,
                    guard=NO_GUARD, effort=10, effort_max_pixels=1).ok
    stats = json.loads((capped / "_stats.json").read_text())
    assert stats["totals"]["unrefined"] == 5 and stats["run"]["refine_skip_above_pixels"] == 1
    assert {r["key"]: r["bitstream"] for r in pq.read_table(capped / "shards").to_pylist()
            if r["status"] == "ok"} == streams
    assert json.loads((refined / "_stats.json").read_text())["totals"]["unrefined"] == 0


def test_odd_inputs_are_kept_or_restored_faithfully(tmp_path):
    from conftest import encode_image, synthetic_image, write_shards

    png_named_jpg = encode_image(synthetic_image(20), "PNG")
    gray = encode_image(synthetic_image(21)[:, :, 0], "PNG")
    src = tmp_path / "src"
    write_shards(src, [[
        {"__key__": "wrong-ext", "jpg": png_named_jpg},
        {"__key__": "gray", "png": gray},
        {"__key__": "too-wide", "png": encode_image(np.zeros((1, 20000, 3), np.uint8), "PNG")},
        {"__key__": "rgba", "png": encode_image(np.zeros((8, 8, 4), np.uint8), "PNG")},
        {"__key__": "empty", "png": b""},
        {"__key__": "no-image", "json": b"{}"},
    ]])
    archive = tmp_path / "arc"
    assert compress([str(src)], str(archive), "webp", 90, progress=False, guard=NO_GUARD).ok
    rows = {r["key"]: r for r in pq.read_table(archive / "shards").to_pylist()}
    assert rows["wrong-ext"]["status"] == "ok" and rows["wrong-ext"]["format"] == "PNG"
    assert rows["gray"]["mode"] == "L"
    assert "cannot encode a 20000x1 image" in rows["too-wide"]["reason"]
    assert "RGBA" in rows["rgba"]["reason"]
    assert rows["empty"]["reason"] == "empty image member"
    assert rows["no-image"]["reason"] == "no image member"
    assert restore(str(archive), str(tmp_path / "out"), progress=False).ok
    back = read_tar(tmp_path / "out" / "shard-000000.tar")
    assert back["wrong-ext"]["jpg"].startswith(b"\x89PNG")  # written in the format it had
    assert Image.open(io.BytesIO(back["gray"]["png"])).mode == "L"
    for key in ("too-wide", "rgba", "empty", "no-image"):
        assert back[key] == read_tar(src / "shard-000000.tar")[key]


def test_exif_orientation_and_icc_profile_come_back(tmp_path):
    from conftest import synthetic_image, write_shards
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    exif[0x010F] = "latentarc test camera"
    buf = io.BytesIO()
    Image.fromarray(synthetic_image(30, 64, 96)).save(buf, "JPEG", quality=95, exif=exif.tobytes(),
                                                       icc_profile=icc)
    png = io.BytesIO()
    Image.fromarray(synthetic_image(31)).save(png, "PNG", icc_profile=icc)
    src = tmp_path / "src"
    write_shards(src, [[{"__key__": "photo", "jpg": buf.getvalue()},
                        {"__key__": "graphic", "png": png.getvalue()}]])
    archive = tmp_path / "arc"
    assert compress([str(src)], str(archive), "webp", 90, progress=False, guard=NO_GUARD).ok
    assert restore(str(archive), str(tmp_path / "out"), progress=False).ok
    back = read_tar(tmp_path / "out" / "shard-000000.tar")
    photo = Image.open(io.BytesIO(back["photo"]["jpg"]))
    assert photo.getexif()[0x0112] == 6 and photo.getexif()[0x010F] == "latentarc test camera"
    assert photo.info["icc_profile"] == icc
    assert Image.open(io.BytesIO(back["graphic"]["png"])).info["icc_profile"] == icc


def test_images_above_the_pixel_budget_are_kept_without_decoding(small_shards, tmp_path):
    archive = tmp_path / "arc"
    assert compress([str(small_shards)], str(archive), "webp", progress=False,
                    guard=Guard(size=False, max_pixels=5000)).ok  # the 96x64 images are 6144 px
    rows = {r["key"]: r for r in pq.read_table(archive / "shards").to_pylist()}
    assert rows["a0"]["reason"] == (
        "96x64 (0.00614 MP) is above the per-image budget of 0.005 MP (--max-pixels)")
    # the header Pillow read is in the row, so --where finds it (it was null)
    assert (rows["a0"]["format"], rows["a0"]["mode"], rows["a0"]["width"]) == ("PNG", "RGB", 96)
    wide = restore(str(archive), str(tmp_path / "wide"), where="status == 'passthrough' and "
                   "width > 90", progress=False)
    assert wide.written == {"shard-000000": 2, "shard-000001": 3}  # not "bad": no header
    assert rows["bad"]["width"] is None and rows["bad"]["format"] is None
    assert restore(str(archive), str(tmp_path / "out"), progress=False).ok
    assert read_tar(tmp_path / "out" / "shard-000000.tar")["a0"] == \
        read_tar(small_shards / "shard-000000.tar")["a0"]


def test_the_archive_bpp_weighs_images_by_their_pixels():
    """A 1x1 image coded in 30 bytes has 240 bpp; per image it turned a mean of about 1 into
    80, printed beside the archive's ratio. ``bpp`` counts bits over pixels."""
    from pipeline.compress import totals

    photo = {"compressed": 2, "bitstream_bytes": 2 * 8192, "pixels": 2 * 65536, "bpp_sum": 2.0,
             "psnr_sum": 70.0, "psnr_count": 2}
    tiny = {"compressed": 1, "bitstream_bytes": 30, "pixels": 1, "bpp_sum": 240.0,
            "psnr_sum": 50.0, "psnr_count": 1}
    out = totals([photo, tiny])
    assert out["bpp"] == pytest.approx(8 * (2 * 8192 + 30) / (2 * 65536 + 1))
    assert out["mean_bpp"] == pytest.approx(242 / 3) and out["mean_psnr"] == pytest.approx(40)
    assert totals([])["bpp"] is None
