"""The check thread of compress: each batch's streams are decoded again (PSNR, content hash)
and made into rows in a thread while the codec encodes the next batch. It changes when work
happens, never what is written; its failures reach the caller."""

import io
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import sample, write_shards
from PIL import Image

from models.classical import WebpCodec
from pipeline.archive_format import STATUS_OK, STATUS_PASSTHROUGH, shard_url
from pipeline.prefetch import reader_threads
from pipeline.shard_encode import Batching, Guard, encode_shard
from pipeline.sources import Shard


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _encode(tmp_path, codec, name: str, check_thread: bool, samples: int = 3) -> list[dict]:
    src = tmp_path / "src" / "shard-000000.tar"
    archive = str(tmp_path / name)
    encode_shard(Shard(str(src), "shard-000000", src.name), archive, codec,
                 guard=Guard(size=False), batching=Batching(samples=samples, check_thread=check_thread))
    return pq.read_table(shard_url(archive, "shard-000000")).to_pylist()


def test_a_batch_the_codec_refuses_is_coded_one_image_at_a_time(tmp_path):
    # WebP cannot take an image over 16383 pixels wide: the batch holding it fails, and its
    # other images still go through the codec, one at a time (in the check thread when on).
    samples = [sample(f"k{i:03d}", i) for i in range(7)]
    wide = _png(16400, 4)
    samples[4] = {"__key__": "k004", "png": wide, "json": b"{}"}
    write_shards(tmp_path / "src", [samples])
    on = _encode(tmp_path, WebpCodec(80), "on", check_thread=True)
    off = _encode(tmp_path, WebpCodec(80), "off", check_thread=False)
    assert on == off
    assert [r["key"] for r in on] == [f"k{i:03d}" for i in range(7)]
    assert [r["status"] for r in on] == [STATUS_OK] * 4 + [STATUS_PASSTHROUGH] + [STATUS_OK] * 2
    assert "webp cannot encode a 16400x4 image" in on[4]["reason"]
    assert [m["data"] for m in on[4]["members"] if m["name"] == "png"] == [wide]


class _RecordingWebp(WebpCodec):
    """WebP that notes which thread runs each encode and decode (and can fail a decode)."""

    def __init__(self, quality, fail_decode_at: int | None = None) -> None:
        super().__init__(quality)
        self.encoded_on: list[str] = []
        self.decoded_on: list[str] = []
        self.fail_decode_at = fail_decode_at
        self.events: list[tuple[str, int]] = []  # ("encode", images) at its start, ("decoded", 1)
        self._lock = threading.Lock()

    def encode_batch(self, images):
        with self._lock:
            self.encoded_on.append(threading.current_thread().name)
            self.events.append(("encode", len(images)))
        return super().encode_batch(images)

    def decode_batch(self, streams):
        with self._lock:
            self.decoded_on.append(threading.current_thread().name)
            failing = len(self.decoded_on) == self.fail_decode_at
        if failing:
            raise RuntimeError("decoder crashed")
        out = super().decode_batch(streams)
        with self._lock:
            self.events.append(("decoded", len(streams)))
        return out


@pytest.mark.parametrize("check_thread", [True, False])
def test_decodes_run_in_the_check_thread_and_encodes_in_the_callers(tmp_path, check_thread):
    write_shards(tmp_path / "src", [[sample(f"k{i:03d}", i) for i in range(8)]])
    codec = _RecordingWebp(80)
    rows = _encode(tmp_path, codec, "a", check_thread)
    assert len(rows) == 8
    me = threading.current_thread().name
    assert set(codec.encoded_on) == {me}
    assert len(codec.decoded_on) == 8
    assert set(codec.decoded_on) == ({"check-shard-000000"} if check_thread else {me})


def test_an_error_in_the_check_thread_reaches_the_caller_and_leaves_no_file(tmp_path):
    write_shards(tmp_path / "src", [[sample(f"k{i:03d}", i) for i in range(8)]])
    codec = _RecordingWebp(80, fail_decode_at=5)
    with pytest.raises(RuntimeError, match="decoder crashed"):
        _encode(tmp_path, codec, "a", check_thread=True)
    assert not (tmp_path / "a" / "shards").exists() or not list((tmp_path / "a" / "shards").iterdir())
    assert len(codec.decoded_on) == 5  # nothing decoded after the failure


def test_check_threads_are_reused_from_shard_to_shard(tmp_path):
    # A thread per batch or per shard would grow a worker's memory (glibc arenas, torch's
    # per-thread state: pipeline.prefetch); the checks run on the reused reader threads.
    write_shards(tmp_path / "src", [[sample(f"k{i:03d}", i) for i in range(6)]])
    _encode(tmp_path, WebpCodec(80), "warm", check_thread=True, samples=2)
    before = reader_threads()
    for n in range(4):
        _encode(tmp_path, WebpCodec(80), f"a{n}", check_thread=True, samples=2)
    assert reader_threads() == before


def test_a_batch_with_a_large_image_is_coded_alone_in_the_callers_thread(tmp_path, monkeypatch):
    # A learned codec's working memory grows with the image, and a decode in another thread
    # does not reuse the memory the encode freed (benchmarks/pipeline/check-thread): a batch
    # with an image above the threshold is encoded only after the previous batch is checked,
    # and is checked in the caller's thread before the next batch is encoded.
    import pipeline.shard_encode as shard_encode

    samples = [sample(f"k{i:03d}", i) for i in range(9)]
    samples[5] = {"__key__": "k005", "png": _png(100, 80), "json": b"{}"}  # 8000 pixels
    write_shards(tmp_path / "src", [samples])
    monkeypatch.setattr(shard_encode, "CHECK_THREAD_MAX_IMAGE_PIXELS", 64 * 96)  # the others
    codec = _RecordingWebp(80)
    rows = _encode(tmp_path, codec, "a", check_thread=True, samples=2)
    assert [r["key"] for r in rows] == [f"k{i:03d}" for i in range(9)]
    # batches (ramping up): [0] [1 2] [3 4] [5 6] [7 8]; the decodes of k005 and k006 (the
    # large image's batch) run here, every other in the check thread
    me = threading.current_thread().name
    assert codec.decoded_on == ["check-shard-000000"] * 5 + [me] * 2 + ["check-shard-000000"] * 2
    encoded = decoded = 0
    for kind, n in codec.events:
        if kind == "encode":
            if encoded == 5:  # the large image's batch: everything before it checked first
                assert decoded == 5, codec.events
            if encoded == 7:  # and the batch after it: the large one checked first
                assert decoded == 7, codec.events
            encoded += n
        else:
            decoded += n
    assert (encoded, decoded) == (9, 9)
    assert [n for kind, n in codec.events if kind == "encode"] == [1, 2, 2, 2, 2]
