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


def test_a_brace_list_name_that_is_a_local_directory_is_expanded_as_one(tmp_path):
    """Brace-list names ending in .tar are taken as files without a request on a store; on a
    local disk a directory so named is still looked into, as it is when given alone."""
    _touch(tmp_path / "part.tar" / "inner-a.tar")
    _touch(tmp_path / "x" / "inner-b.tar")
    names = [s.name for s in expand_sources([str(tmp_path / "{part.tar,x}")])]
    assert names == ["inner-a", "inner-b"]


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


def test_credentials_are_refused_under_other_names_and_in_chained_or_presigned_urls(tmp_path):
    from pipeline.sources import shard_name
    from pipeline.storage import StorageError, StorageOptions, check_url

    for url in ("simplecache::s3://AKIA:SECRET@bucket/x.tar",
                "https://h/x.tar?X-Amz-Credential=AKIA&X-Amz-Signature=abc",
                "https://acct.blob.core.windows.net/c/x.tar?sv=1&sig=abc"):
        with pytest.raises(StorageError, match="must not carry credentials"):
            check_url(url)
    for pairs in (["endpoint_url=http://AKIA:SECRET@127.0.0.1:1"],
                  ['client_kwargs={"endpoint_url": "http://u:p@h"}'],
                  ['headers={"Authorization": "Bearer SECRET"}'],
                  ["connection_string=AccountName=a;AccountKey=SECRET"], ["token=abc"]):
        with pytest.raises(StorageError):
            StorageOptions.from_config(pairs=pairs)
    # names that hold a secret word without holding a secret
    StorageOptions.from_config(pairs=['s3_additional_kwargs={"SSEKMSKeyId": "alias/k"}',
                                      "token=anon"])
    # an http(s) URL's query string is not part of the shard's name; in an S3 key, ? is a letter
    assert shard_name("https://h/d/shard-01.tar?download=1") == ("shard-01", "shard-01.tar")
    assert shard_name("s3://b/d/q?x.tar") == ("q?x", "q?x.tar")


def test_a_shard_name_near_the_file_name_limit_can_be_written(tmp_path):
    """The temp file beside it added 39 bytes: a 233-byte name failed every write."""
    from pipeline.storage import write_bytes_atomic

    name = "漢" * 75 + ".parquet"  # 233 bytes of UTF-8
    write_bytes_atomic(str(tmp_path / name), b"data")
    assert (tmp_path / name).read_bytes() == b"data" and len(list(tmp_path.iterdir())) == 1


def test_a_missing_src_is_refused_and_a_missing_brace_member_fails_as_its_shard(tmp_path, ray_local,
                                                                                capsys):
    from conftest import sample, write_shards

    from pipeline.cli import EXIT_INCOMPLETE, EXIT_REFUSED, main

    # a mistyped directory (no trailing /) started Ray, made the archive folder and failed
    assert main(["compress", str(tmp_path / "typo"), str(tmp_path / "arc"), "--codec", "webp"]) \
        == EXIT_REFUSED
    assert not (tmp_path / "arc").exists()
    with pytest.raises(SourceError, match=r"typo does not exist \(no such directory, prefix or"):
        expand_sources([str(tmp_path / "typo")])
    # so is a local .tar named alone (it ran Ray to fail one shard, and left _stats.json)
    assert main(["compress", str(tmp_path / "gone.tar"), str(tmp_path / "arc"), "--codec",
                 "webp"]) == EXIT_REFUSED
    assert not (tmp_path / "arc").exists()
    # an ARCHIVE that is a file: `compress src/*.tar` with ARCHIVE left out took the last tar
    (tmp_path / "first.tar").write_bytes(b"x")
    (tmp_path / "last.tar").write_bytes(b"x")
    assert main(["compress", str(tmp_path / "first.tar"), str(tmp_path / "last.tar"), "--codec",
                 "webp"]) == EXIT_REFUSED
    assert (tmp_path / "last.tar").read_bytes() == b"x"
    assert "is a file, not a directory or prefix (was ARCHIVE left out" in capsys.readouterr().err
    # ... or a source directory (`compress dirA dirB`): nothing is written into it
    (tmp_path / "dirB").mkdir()
    (tmp_path / "dirB" / "x.tar").write_bytes(b"x")
    assert main(["compress", str(tmp_path / "first.tar"), str(tmp_path / "dirB"), "--codec",
                 "webp"]) == EXIT_REFUSED
    assert "holds .tar shards and no archive: was ARCHIVE left out" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "dirB").iterdir()) == ["x.tar"]
    # one missing name of a brace list fails that shard alone, saying a rerun will not help
    write_shards(tmp_path / "src", [[sample("a", 1)], [sample("b", 2)]])
    (tmp_path / "src" / "shard-000001.tar").unlink()
    brace = str(tmp_path / "src" / "shard-{000000..000001}.tar")
    assert main(["compress", brace, str(tmp_path / "arc"), "--codec", "webp", "-q"]) \
        == EXIT_INCOMPLETE
    stats = (tmp_path / "arc" / "_stats.json").read_text()
    assert "shard shard-000001: its source " in stats and "does not exist" in stats
    assert "rerunning will not help until it is there" in stats
    assert (tmp_path / "arc" / "shards" / "shard-000000.parquet").exists()


def test_file_identity_tells_a_same_size_rewrite_with_its_mtime_set_back(tmp_path):
    """Archive's kept footers are reused while file_identity is unchanged: a rewrite in place
    to the same size, its mtime then set back (as a copy tool may), must not look unchanged."""
    import os

    from pipeline.storage import file_identity, open_random_access

    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    st = os.stat(path)
    with open_random_access(str(path)) as f:
        before = file_identity(f)
    with open(path, "r+b") as f:
        f.write(b"b" * 100)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    with open_random_access(str(path)) as f:
        after = file_identity(f)
    assert before is not None and after is not None and after != before
