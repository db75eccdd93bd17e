"""SRC expansion (brace lists, directories, globs) and the credential policy for URLs/options."""

import pytest

from pipeline.sources import SourceError, expand_sources
from pipeline.storage import StorageError, StorageOptions, filesystem


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_brace_list_directory_and_glob(tmp_path):
    for i in range(3):
        _touch(tmp_path / "d" / f"shard-{i:06d}.tar")
    _touch(tmp_path / "d" / "notes.txt")
    brace = expand_sources([str(tmp_path / "d" / "shard-{000000..000002}.tar")])
    assert [s.name for s in brace] == ["shard-000000", "shard-000001", "shard-000002"]
    assert [s.name for s in expand_sources([str(tmp_path / "d")])] == [s.name for s in brace]
    assert len(expand_sources([str(tmp_path / "d" / "*-00000[01].tar")])) == 2
    assert brace[0].file_name == "shard-000000.tar"


def test_duplicate_shard_names_are_refused(tmp_path):
    _touch(tmp_path / "a" / "s.tar")
    _touch(tmp_path / "b" / "s.tar")
    with pytest.raises(SourceError, match="share the shard name"):
        expand_sources([str(tmp_path / "a"), str(tmp_path / "b")])


def test_empty_directory_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no \\*.tar"):
        expand_sources([str(tmp_path / "empty")])


def test_credentials_never_accepted_in_urls_or_options():
    with pytest.raises(StorageError, match="credentials"):
        filesystem("s3://AKIA:secret@bucket/x")
    for bad in ({"key": "AKIA"}, {"secret": "x"}, {"client_kwargs": {"aws_secret_access_key": "x"}},
                {"token": "t"}):
        with pytest.raises(StorageError, match="credential"):
            StorageOptions(extra=bad)
    with pytest.raises(StorageError, match="credential"):
        StorageOptions.from_config(pairs=["secret=abc"])


def test_endpoint_and_region_map_to_s3fs_options(monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    opts = StorageOptions(endpoint_url="http://127.0.0.1:1", region="eu-west-1")
    assert opts.fsspec_options("s3") == {"endpoint_url": "http://127.0.0.1:1",
                                         "client_kwargs": {"region_name": "eu-west-1"}}
    assert opts.fsspec_options("file") == {}
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    assert StorageOptions().fsspec_options("s3") == {"endpoint_url": "http://127.0.0.1:2"}
