"""Credential scan: after compress + verify + restore + info against the S3 server, the secret
key appears nowhere a user, a log collector or a reader of the archive could see it.

The secret is the session server's (tests/conftest.py): a fresh random 32-hex token, accepted by
the server, put in the environment (``AWS_SECRET_ACCESS_KEY``) before Ray starts, so the driver
and every Ray worker hold it exactly as on a cluster. Scanned, for the token and its base64
forms:

- everything the CLI printed (progress lines included) and every log record of the driver at
  DEBUG level (botocore, s3fs, Ray, latentarc);
- every regular file in this Ray instance's session directory (logs of the raylet, GCS, workers
  and the driver);
- ``_stats.json``, ``_archive.json``, the restored tar files;
- every Parquet file of the archive (shards and ``_index.parquet``): every value of every
  column, nested ones included (decoded, since zstd pages would hide a raw match), and the file
  and schema key-value metadata;
- with a wrong secret in the environment: what each verb prints, and the full text (message,
  repr, chained causes, traceback) of the exceptions the Python API raises.

The access key ID is not treated as a secret: it is an identifier that S3 clients send in clear
in every request's ``Authorization`` header and that servers name in errors and access logs.
It is still asserted absent from the archive (stats, manifest, rows, metadata, restored
files), which travels to other people and has no reason to say who wrote it; where else it
appears is printed, not asserted.

``test_the_scanner_finds_a_planted_token`` shows that each kind of scan can fail.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import secrets
import tarfile
import traceback
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from pipeline.archive import Archive
from pipeline.cli import EXIT_OK, EXIT_REFUSED, main
from pipeline.compress import compress
from pipeline.restore import restore
from pipeline.storage import StorageOptions
from pipeline.verify import verify

pytestmark = [pytest.mark.s3, pytest.mark.slow]


class Scanner:
    """Looks for tokens in text, bytes, directory trees, Parquet files and exceptions."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self.needles: dict[str, list[bytes]] = {}
        for name, token in tokens.items():
            raw = token.encode()
            forms = [raw]
            for shift in range(3):  # base64 of the token at any alignment in a longer text
                encoded = base64.b64encode(b"\0" * shift + raw)[4:-4]
                forms.append(encoded)
            self.needles[name] = forms
        self.findings: list[str] = []
        self.scanned: dict[str, int] = {}

    def data(self, where: str, data: bytes | str, kind: str = "bytes") -> None:
        blob = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)
        self.scanned[kind] = self.scanned.get(kind, 0) + 1
        for name, forms in self.needles.items():
            if any(form in blob for form in forms):
                self.findings.append(f"{name} in {where}")

    def tree(self, root: Path) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                try:
                    self.data(str(path), path.read_bytes(), "file")
                except OSError:  # a file that vanished or cannot be read (sockets are skipped)
                    continue

    def parquet(self, where: str, data: bytes) -> None:
        """Every value of every column (nested ones too) and the key-value metadata."""
        self.data(where + " (raw bytes)", data, "parquet file")
        parquet = pq.ParquetFile(io.BytesIO(data))
        for k, v in (parquet.metadata.metadata or {}).items():
            self.data(f"{where} file metadata {k!r}", k + b"=" + v, "parquet metadata")
        for k, v in (parquet.schema_arrow.metadata or {}).items():
            self.data(f"{where} schema metadata {k!r}", k + b"=" + v, "parquet metadata")
        table = parquet.read()
        for column in table.column_names:
            for i, value in enumerate(table.column(column).to_pylist()):
                for leaf in _leaves(value):
                    self.data(f"{where} row {i} column {column}", leaf, "parquet value")

    def exception(self, where: str, exc: BaseException) -> None:
        text = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)
        cause = exc
        while cause is not None:
            text += repr(cause) + str(cause) + repr(getattr(cause, "args", ""))
            cause = cause.__cause__ or cause.__context__
        self.data(where, text, "exception")


def _leaves(value):
    """The str and bytes inside a Parquet value (lists and structs walked)."""
    if isinstance(value, (str, bytes)):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _leaves(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _leaves(v)
    elif value is not None:
        yield str(value)


def _says_credentials(message: str) -> bool:
    """S3's answer to a wrong secret (GET: its signature message), or ours for a bare 403 (HEAD)."""
    return ("signature we calculated does not match" in message
            or "check the credentials for this store" in message)


def _ray_session_dir() -> Path:
    import ray._private.worker as ray_worker

    node = ray_worker._global_node
    assert node is not None, "no in-process Ray node: the fixture did not start one"
    return Path(node.get_session_dir_path())


def test_the_scanner_finds_a_planted_token(tmp_path):
    """Self-check: every kind of scan reports a token that is there (the scans can fail)."""
    token = secrets.token_hex(16)
    found = []

    def finds(scan) -> bool:
        scanner = Scanner({"secret": token})
        scan(scanner)
        found.append(scanner.findings)
        return bool(scanner.findings)

    # In a log file deep in a tree, and not in the same tree without it.
    logs = tmp_path / "session" / "logs"
    logs.mkdir(parents=True)
    (logs / "raylet.out").write_text("started\n")
    assert not finds(lambda s: s.tree(tmp_path / "session"))
    (logs / "worker-1.err").write_text(f"botocore: secret={token}\n")
    assert finds(lambda s: s.tree(tmp_path / "session"))
    # base64-encoded, at each alignment.
    for prefix in (b"", b"x", b"xy"):
        assert finds(lambda s, p=prefix: s.data("b64", base64.b64encode(p + token.encode())))
    # In _stats.json-like text, and in progress output.
    assert finds(lambda s: s.data("_stats.json", json.dumps({"failed": {"s": f"x {token} y"}})))
    assert not finds(lambda s: s.data("_stats.json", json.dumps({"failed": {}})))
    # In a Parquet row: a nested binary member (zstd-compressed, so invisible in the raw bytes),
    # a string column, and the file metadata.
    schema = pa.schema([("key", pa.string()),
                        ("members", pa.list_(pa.struct([("name", pa.string()),
                                                        ("data", pa.binary())])))])

    def parquet_with(key: str, data: bytes, meta: dict | None = None) -> bytes:
        buf = io.BytesIO()
        table = pa.Table.from_pylist([{"key": "k0", "members": []},
                                      {"key": key, "members": [{"name": "txt", "data": data}]}],
                                     schema=schema)
        with pq.ParquetWriter(buf, schema, compression="zstd") as writer:
            writer.write_table(table)
            if meta:
                writer.add_key_value_metadata(meta)
        return buf.getvalue()

    assert finds(lambda s: s.parquet("member", parquet_with("k1", b"caption " + token.encode())))
    # A value whose bytes are not contiguous in the file (DELTA_BYTE_ARRAY stores the part it
    # shares with the previous value once): a raw scan misses it, the row scan does not.
    buf = io.BytesIO()
    pq.write_table(pa.table({"key": [f"k-{token[:16]}~", f"k-{token}"]}), buf, compression="none",
                   use_dictionary=False, column_encoding={"key": "DELTA_BYTE_ARRAY"},
                   write_statistics=False)
    assert not finds(lambda s: s.data("raw", buf.getvalue()))
    assert finds(lambda s: s.parquet("delta-encoded", buf.getvalue()))
    assert finds(lambda s: s.parquet("string", parquet_with(f"key-{token}", b"")))
    assert finds(lambda s: s.parquet("metadata", parquet_with("k1", b"", {"latentarc": token})))
    assert not finds(lambda s: s.parquet("clean", parquet_with("k1", b"clean")))
    # In an exception's cause, not in its message.
    with pytest.raises(RuntimeError) as chained:
        try:
            raise KeyError(f"credential {token}")
        except KeyError as inner:
            raise RuntimeError("cannot open the archive") from inner
    assert token not in str(chained.value)
    assert finds(lambda s: s.exception("chained", chained.value))
    print(f"planted token found by each scan: {sum(bool(f) for f in found)} findings")


def _upload(fs: s3fs.S3FileSystem, local_dir: Path, bucket_name: str) -> None:
    for path in sorted(local_dir.glob("*.tar")):
        fs.put_file(str(path), f"{bucket_name}/src/{path.name}")


@pytest.mark.usefixtures("ray_local")
@pytest.mark.timeout(300)
def test_no_credential_in_output_logs_stats_rows_or_errors(s3_server, small_shards, capsys, caplog,
                                                            monkeypatch):
    secret, access_key = s3_server["secret_key"], s3_server["access_key"]
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == secret and len(secret) == 32
    endpoint = s3_server["endpoint"]
    storage = StorageOptions(endpoint_url=endpoint)
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    bucket_name = "cred-" + os.urandom(3).hex()
    fs.makedirs(bucket_name)
    _upload(fs, small_shards, bucket_name)
    bucket = f"s3://{bucket_name}"
    caplog.set_level(logging.DEBUG)  # botocore, s3fs, Ray, latentarc: everything the driver logs

    ep = ["--endpoint-url", endpoint]
    s3fs.S3FileSystem.clear_instance_cache()
    assert main(["compress", f"{bucket}/src", f"{bucket}/arc", "--codec", "jpeg", *ep]) == EXIT_OK
    assert main(["verify", f"{bucket}/arc", *ep]) == EXIT_OK
    assert main(["restore", f"{bucket}/arc", f"{bucket}/out", *ep]) == EXIT_OK
    assert main(["info", f"{bucket}/arc", *ep]) == EXIT_OK
    out, err = capsys.readouterr()
    assert "[compress 2/2 shards]" in err  # the progress output was on, and is scanned

    everywhere = Scanner({"secret key": secret})
    archive_only = Scanner({"secret key": secret, "access key id": access_key})
    informational = Scanner({"access key id": access_key})
    for scanner in (everywhere, informational):
        scanner.data("stdout", out, "output")
        scanner.data("stderr (progress)", err, "output")
        scanner.data("driver log records", caplog.text, "output")
        scanner.tree(_ray_session_dir())
    for name in ("_stats.json", "_archive.json"):
        archive_only.data(name, fs.cat(f"{bucket_name}/arc/{name}"), "archive json")
    parquet_files = fs.find(f"{bucket_name}/arc", refresh=True)
    parquet_files = [p for p in parquet_files if p.endswith(".parquet")]
    assert len(parquet_files) == 3  # two shards and _index.parquet
    for path in parquet_files:
        archive_only.parquet(path, fs.cat(path))
    restored = fs.find(f"{bucket_name}/out", refresh=True)
    assert len(restored) == 2
    for path in restored:
        data = fs.cat(path)
        archive_only.data(path, data, "restored tar")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:  # names and members, unpacked
            for member in tar.getmembers():
                archive_only.data(f"{path}:{member.name}", member.name.encode()
                                  + tar.extractfile(member).read(), "restored member")

    # Wrong credentials: a clear refusal from every verb; neither secret in what is printed or
    # in the exceptions the Python API raises.
    wrong = "wrong" + secrets.token_hex(14)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    s3fs.S3FileSystem.clear_instance_cache()
    wrong_scanner = Scanner({"secret key": secret, "wrong secret key": wrong})
    verbs = {
        "compress": ["compress", f"{bucket}/src", f"{bucket}/arc2", *ep],
        "verify": ["verify", f"{bucket}/arc", *ep],
        "restore": ["restore", f"{bucket}/arc", f"{bucket}/out2", *ep],
        "info": ["info", f"{bucket}/arc", *ep],
    }
    refusals = {}
    for verb, argv in verbs.items():
        code = main(argv)
        out2, err2 = capsys.readouterr()
        wrong_scanner.data(f"{verb} with a wrong secret: output", out2 + err2, "output")
        lines = err2.strip().splitlines()
        refusals[verb] = [f"exit {code}", *lines]
        assert code != EXIT_OK and len(lines) == 1, (verb, err2)
        assert lines[0].startswith(f"latentarc {verb}: "), (verb, lines)
        assert _says_credentials(lines[0]), (verb, lines)
    # every verb refuses (exit 2). Listing (a GET) carries S3's own error text; reads of the
    # archive start with a HEAD, whose 403 has no body: read_manifest names the URL and the check.
    assert all(refusals[v][0] == f"exit {EXIT_REFUSED}" for v in verbs), refusals
    assert refusals["compress"][1].startswith(
        f"latentarc compress: refused: cannot list the shards of {bucket}/src: The request "
        "signature we calculated does not match"), refusals["compress"]
    calls = {
        "compress()": lambda: compress([f"{bucket}/src"], f"{bucket}/arc3", "jpeg",
                                       storage=storage, progress=False),
        "verify()": lambda: verify(f"{bucket}/arc", storage=storage, progress=False),
        "restore()": lambda: restore(f"{bucket}/arc", f"{bucket}/out3", storage=storage,
                                     progress=False),
        "Archive.open()": lambda: Archive.open(f"{bucket}/arc", storage).get("a0"),
    }
    for name, call in calls.items():
        with pytest.raises(Exception) as info:
            call()
        wrong_scanner.exception(f"{name} with a wrong secret", info.value)
        assert _says_credentials(str(info.value)), (name, str(info.value))
    wrong_scanner.data("driver log records (wrong secret)", caplog.text, "output")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    s3fs.S3FileSystem.clear_instance_cache()

    with capsys.disabled():
        print(f"\nscanned: everywhere {everywhere.scanned}; archive {archive_only.scanned}; "
              f"wrong credentials {wrong_scanner.scanned}")
        print("refusals with a wrong secret:", json.dumps(refusals, indent=1))
        print("access key id (not secret) seen in:", informational.findings or "nowhere")
    assert everywhere.scanned["file"] > 10 and archive_only.scanned["parquet value"] > 50
    assert not everywhere.findings, everywhere.findings
    assert not archive_only.findings, archive_only.findings
    assert not wrong_scanner.findings, wrong_scanner.findings
