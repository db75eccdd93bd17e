"""What the driver's own steps cost as an archive grows in shards, on a real S3 server.

    python benchmarks/pipeline/driver-scale/measure.py --out /tmp/ds [--code DIR] [--shards 100 400]

Builds, for each size, an archive of N shard files (10 rows each: a 32x32 JPEG-coded image
and a 64 KiB kept member, about 0.66 MB a file: real shards are hundreds of MB), uploads it
to a SeaweedFS started here on 127.0.0.1, and runs each step in a fresh interpreter (so that
its peak RSS is its own) with the code of ``--code`` (default: this checkout; another
commit's worktree to compare):

- ``rerun``: ``compress`` of the same sources again, with nothing to do (plans, rewrites
  ``_stats.json``, ``_index.parquet`` and ``_archive.json``: what ends every run);
- ``get``: ``Archive.open(url).get(key)`` of 20 keys spread over the shards, then the same 20
  keys again through the same ``Archive`` (``again``);
- ``dataset``: ``ArchiveDataset(url)`` made, and its first sample;
- ``digests``: verify's reading of ``_index.parquet`` (``index_digests``), on a local index
  of 1.28 M rows.

Counts the S3 requests this process makes and the bytes its GETs return (every s3fs request
goes through ``S3FileSystem._call_s3``). Writes ``results.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
ROWS = 10
MEMBER_BYTES = 64 << 10
DIGEST_ROWS = 1_280_000


def _count_s3() -> dict:
    """Wrap s3fs's one request function: counts requests and GET bytes in this process."""
    import s3fs

    tally = {"requests": 0, "get_bytes": 0}
    original = s3fs.S3FileSystem._call_s3

    async def counted(fs, method, *args, **kwargs):
        out = await original(fs, method, *args, **kwargs)
        tally["requests"] += 1
        name = method if isinstance(method, str) else getattr(method, "__name__", "")
        if name == "get_object" and isinstance(out, dict):
            tally["get_bytes"] += out.get("ContentLength") or 0
        return out

    s3fs.S3FileSystem._call_s3 = counted
    return tally


def _peak_rss_mb() -> float:
    """This process's peak RSS, VmHWM: ru_maxrss carries the parent's peak over fork and exec
    (the parent here held the 1.28 M-row index it had just written)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def step(name: str, archive: str, src: str, endpoint: str) -> dict:
    """One measured step, in this (fresh) interpreter."""
    from pipeline.storage import StorageOptions

    storage = StorageOptions(endpoint_url=endpoint)
    if name == "digests":
        from pipeline.archive import index_digests

        started = time.monotonic()
        shards = len(index_digests(archive))
        return {"seconds": time.monotonic() - started, "shards": shards,
                "peak_rss_mb": _peak_rss_mb()}
    tally = _count_s3()
    started = time.monotonic()
    out: dict = {}
    if name == "rerun":
        from pipeline.compress import compress

        report = compress([src], archive, "jpeg", None, storage, progress=False)
        assert report.ok and not report.done, report
    elif name == "get":
        from pipeline.archive import Archive

        arc = Archive.open(archive, storage)
        shards = [e["shard"] for e in arc.manifest["shards"]]
        tally.update(requests=0, get_bytes=0)
        started = time.monotonic()
        n = 20
        keys = [f"{shards[i * (len(shards) - 1) // (n - 1)]}-k{i % ROWS}" for i in range(n)]
        for key in keys:
            assert arc.get(key).shape == (32, 32, 3)
        out["gets"] = n
        # the same keys again, through the same Archive (its kept footers, where it keeps any)
        first = {k: tally[k] for k in ("requests", "get_bytes")}
        first_seconds = time.monotonic() - started
        tally.update(requests=0, get_bytes=0)
        again = time.monotonic()
        for key in keys:
            assert arc.get(key).shape == (32, 32, 3)
        out["again"] = {"seconds": time.monotonic() - again, **tally}
        tally.update(first)
        started = time.monotonic() - first_seconds  # "seconds": the first pass's
    elif name == "dataset":
        from pipeline.torch_dataset import ArchiveDataset

        next(iter(ArchiveDataset(archive, storage)))
    else:
        raise SystemExit(f"unknown step {name}")
    return {**out, "seconds": time.monotonic() - started, **tally,
            "peak_rss_mb": _peak_rss_mb()}


def build(directory: Path, n: int, fs, bucket: str, endpoint: str) -> tuple[str, Path]:
    """N source tars, uploaded to ``bucket``/src/, and their archive, made here (shard files
    cloned from one encode_shard output, with this shard's name and keys; then a compress run
    with nothing to do writes the rest). Returns the sources' URL and the local archive."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from models.registry import get_codec
    from pipeline.archive_format import META_KEY, SCHEMA, WRITER_OPTIONS
    from pipeline.compress import compress
    from pipeline.shard_encode import encode_shard
    from pipeline.sources import Shard
    from pipeline.storage import StorageOptions

    src, archive = directory / "src", directory / "arc"
    src.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def tar(i: int) -> Path:
        path = src / f"shard-{i:06d}.tar"
        with tarfile.open(path, "w") as t:
            for j in range(ROWS):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
                for suffix, data in (("png", buf.getvalue()), ("bin", rng.bytes(MEMBER_BYTES))):
                    info = tarfile.TarInfo(f"shard-{i:06d}-k{j}.{suffix}")
                    info.size = len(data)
                    t.addfile(info, io.BytesIO(data))
        return path

    paths = [tar(i) for i in range(n)]
    fs.put(str(src) + "/", f"{bucket}/src", recursive=True)
    src_url, storage = f"s3://{bucket}/src/", StorageOptions(endpoint_url=endpoint)
    encode_shard(Shard(src_url + paths[0].name, "shard-000000", paths[0].name), str(archive),
                 get_codec("jpeg"), storage)
    template = pq.ParquetFile(archive / "shards" / "shard-000000.parquet")
    meta = json.loads(template.metadata.metadata[META_KEY.encode()])
    table = template.read()
    for i in range(1, n):
        name, path = f"shard-{i:06d}", paths[i]
        rows = table.set_column(table.schema.get_field_index("shard"), "shard",
                                pa.array([name] * ROWS, pa.string()))
        rows = rows.set_column(rows.schema.get_field_index("key"), "key",
                               pa.array([f"{name}-k{j}" for j in range(ROWS)], pa.string()))
        with pq.ParquetWriter(archive / "shards" / f"{name}.parquet", SCHEMA,
                              **WRITER_OPTIONS) as writer:
            writer.write_table(rows)
            writer.add_key_value_metadata({META_KEY: json.dumps(
                {**meta, "shard": name, "source": src_url + path.name, "source_file": path.name},
                sort_keys=True)})
    assert compress([src_url], str(archive), "jpeg", storage=storage, progress=False).ok
    return src_url, archive


def digest_index(path: Path) -> None:
    """A local _index.parquet of DIGEST_ROWS rows over 12,800 shards (as compress writes it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.archive import INDEX_ROW_GROUP, INDEX_SCHEMA

    path.mkdir(parents=True)
    per = DIGEST_ROWS // 12_800
    keys = [f"s{i:06d}_{j:05d}" for i in range(12_800) for j in range(per)]
    table = pa.table({"key": keys, "shard": [f"shard-{i:06d}" for i in range(12_800) for _ in range(per)],
                      "row_group": pa.array([0] * len(keys), pa.int32())}, schema=INDEX_SCHEMA)
    pq.write_table(table, path / "_index.parquet", row_group_size=INDEX_ROW_GROUP,
                   compression="zstd", write_statistics=True, write_page_checksum=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="work directory (made anew)")
    parser.add_argument("--code", type=Path, default=REPO,
                        help="the checkout whose code runs the steps (default: this one)")
    parser.add_argument("--shards", type=int, nargs="+", default=[100, 400])
    parser.add_argument("--step", nargs=4, metavar=("NAME", "ARCHIVE", "SRC", "ENDPOINT"),
                        help=argparse.SUPPRESS)  # one step, in a fresh interpreter
    args = parser.parse_args()
    if args.step:
        print(json.dumps(step(*args.step)))
        return 0
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "infra"))
    import local_s3
    import s3fs

    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    server = local_s3.start(tempfile.mkdtemp(prefix="s3-", dir=args.out))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": server["access_key"],
           "AWS_SECRET_ACCESS_KEY": server["secret_key"], "PYTHONPATH": str(args.code)}
    os.environ.update(AWS_ACCESS_KEY_ID=server["access_key"],
                      AWS_SECRET_ACCESS_KEY=server["secret_key"])
    results = {"code": str(args.code), "commit": subprocess.run(
        ["git", "-C", str(args.code), "rev-parse", "--short", "HEAD"], capture_output=True,
        text=True).stdout.strip(), "rows_per_shard": ROWS, "sizes": {}}
    try:
        def run(name: str, archive: str, src: str = "") -> dict:
            done = subprocess.run([sys.executable, __file__, "--out", str(args.out), "--step", name,
                                   archive, src, server["endpoint"]],
                                  cwd=args.code, env=env, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"step {name} failed:\n{done.stderr[-3000:]}")
            return json.loads(done.stdout.strip().splitlines()[-1])

        fs = s3fs.S3FileSystem(endpoint_url=server["endpoint"])
        for n in args.shards:
            bucket = f"scale-{n}"
            fs.makedirs(bucket, exist_ok=True)
            src_url, archive = build(args.out / f"n{n}", n, fs, bucket, server["endpoint"])
            fs.put(str(archive) + "/", f"{bucket}/arc", recursive=True)
            url = f"s3://{bucket}/arc"
            size = sum(p.stat().st_size for p in (archive / "shards").iterdir())
            results["sizes"][n] = {"archive_bytes": size, **{
                name: run(name, url, src_url) for name in ("rerun", "get", "dataset")}}
            print(n, json.dumps(results["sizes"][n]), flush=True)
        digest_index(args.out / "digests")
        results["digests"] = run("digests", str(args.out / "digests"))
    finally:
        local_s3.stop_pid(server["pid"])
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\ncode {results['code']} ({results['commit']})")
    print("| shards | archive MB | rerun: s, requests, GET MB | get: requests, GET kB per get "
          "| again: requests, GET kB per get | dataset start: s, requests, GET MB |")
    print("|---|---|---|---|---|---|")
    for n, r in results["sizes"].items():
        g = r["get"]
        print(f"| {n} | {r['archive_bytes'] / 1e6:.1f} | {r['rerun']['seconds']:.1f}, "
              f"{r['rerun']['requests']}, {r['rerun']['get_bytes'] / 1e6:.1f} | "
              f"{g['requests'] / g['gets']:.1f}, {g['get_bytes'] / g['gets'] / 1e3:.1f} | "
              f"{g['again']['requests'] / g['gets']:.1f}, "
              f"{g['again']['get_bytes'] / g['gets'] / 1e3:.1f} | "
              f"{r['dataset']['seconds']:.1f}, {r['dataset']['requests']}, "
              f"{r['dataset']['get_bytes'] / 1e6:.1f} |")
    d = results["digests"]
    print(f"\nindex_digests over {DIGEST_ROWS:,} index rows: {d['seconds']:.1f} s, peak RSS "
          f"{d['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
