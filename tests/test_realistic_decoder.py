"""Decode-time realism (issue 6): one archive, restored with the faithful or the realistic decoder.

The realistic decoder here is the tiny test codec's g_s, perturbed (the real one comes from GAN
training): what matters is the plumbing. Same bitstream, same symbols and content hash, other
pixels; a g_s that pairs with other weights is refused; a codec without one refuses the choice.
Compress and restore run their workers in this process (learned_fixtures.run_in_process), so the
codec registered only here is visible to them and no Ray cluster is needed.
"""

import io
import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import REPO, read_tar, synthetic_image
from learned_fixtures import (
    REALISTIC_CODEC,
    TINY_WEIGHTS,
    TinyCodec,
    make_tiny_realistic,
    run_in_process,
)
from PIL import Image

from models.codec import CodecError
from models.learned import LearnedModel
from pipeline.cli import EXIT_OK, EXIT_REFUSED, main


def _codecs(cls, quality=4.0):
    from models.registry import get_codec

    return get_codec(cls.id, quality), get_codec(cls.id, quality, decoder="realistic")


def test_same_symbols_other_pixels(realistic):
    faithful, real = _codecs(realistic)
    assert realistic.decoders == ("faithful", "realistic")
    assert real.weights_sha256() == faithful.weights_sha256()  # the bitstream's weights
    images = [synthetic_image(s, 64, 96) for s in (1, 2)]
    streams = faithful.encode_batch(images)
    assert real.encode_batch(images) == streams  # encoding does not depend on the decoder
    for a, b in zip(faithful.decode_batch(streams), real.decode_batch(streams), strict=True):
        assert a.content == b.content and a.content_hash == b.content_hash
        assert a.image.shape == b.image.shape and a.image.dtype == b.image.dtype == np.uint8
        assert np.abs(a.image.astype(int) - b.image.astype(int)).mean() > 1


def test_realism_knob_moves_between_the_two_decoders(realistic):
    """realistic:R interpolates the two syntheses' weights: R=0 and R=1 are the end points
    themselves, the pixels in between move away from the faithful decode as R grows, and the
    symbols (content hash) never change."""
    from models.registry import get_codec

    faithful, real = _codecs(realistic)
    images = [synthetic_image(s, 64, 96) for s in (1, 2)]
    streams = faithful.encode_batch(images)
    end = {0.0: faithful.decode_batch(streams), 1.0: real.decode_batch(streams)}
    for r, want in ((0.0, end[0.0]), (1.0, end[1.0])):
        got = get_codec(realistic.id, 4.0, decoder=f"realistic:{r:g}").decode_batch(streams)
        assert all(np.array_equal(a.image, b.image) for a, b in zip(got, want, strict=True))
    distance = []
    for r in (0.25, 0.5, 0.75):
        got = get_codec(realistic.id, 4.0, decoder=f"realistic:{r}").decode_batch(streams)
        assert all(a.content_hash == b.content_hash for a, b in zip(got, end[0.0], strict=True))
        distance.append(np.mean([np.abs(a.image.astype(int) - b.image.astype(int)).mean()
                                 for a, b in zip(got, end[0.0], strict=True)]))
    full = np.mean([np.abs(a.image.astype(int) - b.image.astype(int)).mean()
                    for a, b in zip(end[1.0], end[0.0], strict=True)])
    assert 0 < distance[0] < distance[1] < distance[2] < full


@pytest.mark.parametrize(("spec", "message"), [
    ("realistic:1.5", "realism must be in 0..1"),
    ("realistic:much", "is not a number"),
    ("faithful:0.5", "faithful decoder has no realism knob"),
    ("dreamy:0.5", "has no decoder 'dreamy'"),
])
def test_realism_knob_refuses_bad_values(realistic, spec, message):
    from models.registry import get_codec

    with pytest.raises(CodecError, match=message):
        get_codec(realistic.id, 4.0, decoder=spec)


def test_pairs_with_other_weights_is_refused(tmp_path):
    model = LearnedModel.from_file(TINY_WEIGHTS)
    other = tmp_path / "other.safetensors"
    sha = make_tiny_realistic(other, pairs_with="0" * 64)

    class Real(TinyCodec):
        decoders = ("faithful", "realistic")
        decoder_weights = {"realistic": (str(other), sha)}

    with pytest.raises(CodecError, match="pairs with faithful weights 0000000000000000"):
        Real(4.0, model=model, decoder="realistic")
    good = tmp_path / "good.safetensors"
    Real.decoder_weights = {"realistic": (str(good), "f" * 64)}
    make_tiny_realistic(good)
    with pytest.raises(CodecError, match="is not the pinned"):
        Real(4.0, model=model, decoder="realistic")
    Real.decoder_weights = {"realistic": (str(TINY_WEIGHTS), None)}  # a faithful file
    with pytest.raises(CodecError, match="not a realistic-decoder file"):
        Real(4.0, model=model, decoder="realistic")


def test_unknown_decoder_names_the_codec_and_its_decoders():
    from models.registry import codec_decoders, get_codec

    with pytest.raises(CodecError, match=r"codec webp has no decoder 'realistic'; its decoders: faithful"):
        get_codec("webp", 80, decoder="realistic")
    with pytest.raises(CodecError, match="test-tiny-msh has no decoder"):
        get_codec("test-tiny-msh", decoder="realistic")
    assert codec_decoders("msh-n96")[0] == "faithful"


def test_registry_refusal_and_listing_stay_free_of_torch():
    """Asking a learned codec for a decoder it lacks, and listing decoders, import no torch."""
    code = ("import sys\nfrom models.registry import get_codec, list_codecs\n"
            "assert all(c.decoders[0] == 'faithful' for c in list_codecs())\n"
            "try:\n    get_codec('shp-n96', decoder='realistic')\nexcept ValueError as e:\n"
            "    print(e)\nassert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "shp-n96 has no decoder 'realistic'; its decoders: faithful" in done.stdout


def test_registry_json_shape_and_reregistering_weights(tmp_path):
    from models.weights import read_registry, register_decoder, register_weights

    card = {"title": "t", "budget_label": "b"}
    register_weights("x", "x.safetensors", "a" * 64, 240, card, tmp_path)
    register_decoder("x", "realistic", "x-real.safetensors", "b" * 64, {"steps": 1}, tmp_path)
    entry = read_registry(tmp_path)["x"]
    assert entry["decoders"] == {"realistic": {"file": "x-real.safetensors", "sha256": "b" * 64,
                                               "card": {"steps": 1}}}
    register_weights("x", "x.safetensors", "a" * 64, 240, card, tmp_path)  # same weights: kept
    assert "decoders" in read_registry(tmp_path)["x"]
    register_weights("x", "x.safetensors", "c" * 64, 240, card, tmp_path)  # new weights: dropped
    assert "decoders" not in read_registry(tmp_path)["x"]
    with pytest.raises(ValueError, match="reserved"):
        register_decoder("x", "faithful", "f", "d" * 64, {}, tmp_path)
    with pytest.raises(ValueError, match="no codec"):
        register_decoder("y", "realistic", "f", "d" * 64, {}, tmp_path)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_archive_restores_and_gets_with_either_decoder(realistic, small_shards, tmp_path,
                                                       monkeypatch, capsys):
    from pipeline.archive import Archive
    from pipeline.torch_dataset import ArchiveDataset

    run_in_process(monkeypatch)
    archive = str(tmp_path / "arc")
    assert main(["compress", str(small_shards), archive, "--codec", REALISTIC_CODEC, "--quality",
                 "3", "--no-size-guard", "-q"]) == EXIT_OK
    out = {}
    for decoder in ("faithful", "realistic"):
        out[decoder] = tmp_path / decoder
        assert main(["restore", archive, str(out[decoder]), "--decoder", decoder,
                     "--image-format", "png", "-q"]) == EXIT_OK
    assert "(realistic decoder)" in capsys.readouterr().out

    rows = {r["key"]: r for r in pq.read_table(f"{archive}/shards").to_pylist()}
    a = Archive.open(archive)
    assert a.decoders() == ("faithful", "realistic")
    changed = 0
    for name in ("shard-000000.tar", "shard-000001.tar"):
        faithful, real = read_tar(out["faithful"] / name), read_tar(out["realistic"] / name)
        assert sorted(faithful) == sorted(real)
        for key in faithful:
            row = rows[key]
            if row["status"] != "ok":  # passthrough: the original bytes, whichever decoder
                assert faithful[key] == real[key]
                continue
            assert faithful[key]["txt"] == real[key]["txt"]
            f_img, r_img = _png(faithful[key]["png"]), _png(real[key]["png"])
            assert np.array_equal(f_img, a.get(key))
            assert np.array_equal(r_img, a.get(key, decoder="realistic"))
            assert np.array_equal(r_img, a.get(key, decoder="realistic:1"))
            changed += not np.array_equal(f_img, r_img)
    assert changed == sum(r["status"] == "ok" for r in rows.values()) == 5

    # Content hashes are checked on every decode: both decoders agree with the stored ones.
    from pipeline.rows import RowDecoder

    for row in rows.values():
        if row["status"] == "ok":
            assert RowDecoder("realistic").decode(row).content_hash == row["content_hash"]
    assert main(["verify", archive, "-q"]) == EXIT_OK

    images = [s["image"] for s in ArchiveDataset(archive, decoder="realistic")]
    assert any(np.array_equal(i, a.get("b0", decoder="realistic")) for i in images)


def test_realistic_on_a_codec_without_one_exits_2(small_shards, tmp_path, monkeypatch, capsys):
    from pipeline.archive import Archive
    from pipeline.torch_dataset import ArchiveDataset

    run_in_process(monkeypatch)
    archive = str(tmp_path / "arc")
    assert main(["compress", str(small_shards), archive, "--codec", "test-tiny-msh", "-q"]) == EXIT_OK
    capsys.readouterr()
    assert main(["restore", archive, str(tmp_path / "o"), "--decoder", "realistic", "-q"]) == EXIT_REFUSED
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused" in err[0]
    assert "codec test-tiny-msh has no 'realistic' decoder; its decoders: faithful" in err[0]
    assert not (tmp_path / "o").exists()
    with pytest.raises(CodecError, match="test-tiny-msh has no 'realistic' decoder"):
        Archive.open(archive).get("a0", decoder="realistic")
    with pytest.raises(CodecError, match="no 'realistic' decoder"):
        ArchiveDataset(archive, decoder="realistic")
    assert main(["restore", archive, str(tmp_path / "o2"), "--decoder", "faithful", "-q"]) == EXIT_OK
    assert main(["restore", archive, str(tmp_path / "o3"), "--decoder", "realistic:0.5",
                 "-q"]) == EXIT_REFUSED


def test_help_explains_the_decoder_choice(capsys):
    with pytest.raises(SystemExit):
        main(["restore", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--decoder faithful|realistic" in text and "same bitstreams" in text


def test_export_metadata(tmp_path):
    from models.realistic import read_metadata

    model = LearnedModel.from_file(TINY_WEIGHTS)
    make_tiny_realistic(tmp_path / "r.safetensors")
    data = (tmp_path / "r.safetensors").read_bytes()
    meta = read_metadata(data)
    assert meta["decoder"] == "realistic" and meta["pairs_with"] == model.sha256
    assert (meta["N"], meta["M"]) == (str(model.N), str(model.M))
    assert meta["architecture"] == "mean-scale-hyperprior"
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F16"}
    assert all(k.startswith("g_s.") for k in header if k != "__metadata__")


def test_shipped_realistic_decoders_read_the_shipped_goldens():
    """Every registered realistic decoder decodes its codec's golden bitstreams to the same
    symbols (content hash) as the faithful decoder, to other pixels, and to a picture of what
    was encoded."""
    import json

    from conftest import REPO, synthetic_image

    from models.registry import get_codec
    from models.weights import read_registry
    from pipeline.images import psnr

    shipped = {cid: e for cid, e in read_registry().items() if "realistic" in e.get("decoders", {})}
    assert shipped, "no shipped codec has a realistic decoder"
    for codec_id in shipped:
        golden = json.loads((REPO / "tests" / "golden" / f"{codec_id}.json").read_text())
        faithful, realistic = get_codec(codec_id), get_codec(codec_id, decoder="realistic")
        for case in golden["streams"]:
            stream = bytes.fromhex(case["stream"])
            a = faithful.decode_batch([stream])[0]
            b = realistic.decode_batch([stream])[0]
            assert b.content_hash.hex() == case["content_hash"] == a.content_hash.hex()
            assert not np.array_equal(a.image, b.image)
            assert psnr(synthetic_image(case["seed"], *case["shape"]), b.image) > 20
