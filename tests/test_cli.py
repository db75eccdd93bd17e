"""The command line: help that explains, codec listing, refusals with exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import EXIT_OK, EXIT_REFUSED, main


@pytest.mark.parametrize("verb", ["compress", "restore", "verify", "info"])
def test_help_explains_each_verb(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main([verb, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "exit codes" in out or verb == "info"
    assert "--endpoint-url" in out


def test_codecs_lists_ids_kinds_and_ranges(capsys):
    assert main(["codecs"]) == EXIT_OK
    out = capsys.readouterr().out
    for line in ("jpeg            classical  1..100", "png             classical  lossless"):
        assert line in out
    assert "(default codec)" in out


def test_refusals_exit_2_with_one_line(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "not-json.json").write_text("endpoint_url: x")
    cases = [
        ["compress", str(src), str(tmp_path / "a"), "--storage-config", str(tmp_path / "none.json")],
        ["compress", str(src), str(tmp_path / "a"), "--storage-config", str(tmp_path / "not-json.json")],
        ["compress", str(src), str(tmp_path / "a"), "--codec", "nope"],
        ["compress", str(src), str(tmp_path / "a"), "--codec", "webp", "--quality", "500"],
        ["compress", str(src), str(tmp_path / "a")],  # no shards
        ["compress", "s3://AKIA:pw@bucket/x.tar", str(tmp_path / "a")],
        ["compress", str(src), str(tmp_path / "a"), "--storage-option", "secret=abc"],
        ["compress", str(src), str(tmp_path / "a"), "--batch-size", "-1"],
        ["compress", str(src), str(tmp_path / "a"), "--max-pixels", "inf"],
        ["compress", str(src), str(tmp_path / "a"), "--max-pixels", "nan"],
        ["compress", str(src), str(tmp_path / "a"), "--max-pixels", "0"],
        ["restore", str(tmp_path / "not-an-archive"), str(tmp_path / "o")],
        ["verify", str(tmp_path / "not-an-archive")],
        ["info", str(tmp_path / "not-an-archive")],
        # botocore's multi-line ParamValidationError (exit 1) for a bucket name S3 forbids
        ["info", "s3://my bucket/x", "--endpoint-url", "http://127.0.0.1:1"],
    ]
    for argv in cases:
        assert main(argv) == EXIT_REFUSED, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "refused" in err[0], (argv, err)
        assert "pw@" not in err[0] and "abc" not in err[0]
    # a path that is not there is said to be not there (not "its compress run has not finished")
    for argv in (["restore", str(tmp_path / "not-an-archive"), str(tmp_path / "o")],
                 ["verify", str(tmp_path / "not-an-archive")]):
        assert main(argv) == EXIT_REFUSED
        assert "not-an-archive does not exist (no such directory or prefix)" in \
            capsys.readouterr().err
    for flag, value in (("--batch-size", "0"), ("--batch-size", "-1"), ("--batch-mp", "0"),
                        ("--batch-mp", "1e-7"), ("--batch-mp", "nan")):  # 0 meant the default
        assert main(["compress", str(src), str(tmp_path / "a"), flag, value]) == EXIT_REFUSED
        assert f"{flag} must be" in capsys.readouterr().err, (flag, value)
    for argv in (["compress", str(src), str(tmp_path / "a"), "--actors", "0"],
                 ["verify", str(tmp_path / "a"), "--actors", "-3"]):  # ran with 1 actor, exit 0
        assert main(argv) == EXIT_REFUSED
        assert "--actors must be 1 or more" in capsys.readouterr().err


def test_console_script_and_job_modules_run():
    latentarc = str(Path(sys.executable).parent / "latentarc")
    for cmd in ([latentarc, "codecs"], [sys.executable, "-m", "jobs.verify", "--help"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr


def test_an_archive_of_another_format_version_is_refused_by_info_and_compress(tmp_path, capsys):
    """info printed "status complete" for a version-2 manifest, and compress rewrote it as
    version 1 while skipping every shard; both now refuse it (exit 2), as --help says."""
    import json

    from conftest import sample, write_shards

    src = tmp_path / "src"
    write_shards(src, [[sample("a", 1)]])
    archive = tmp_path / "arc"
    archive.mkdir()
    manifest = {"format": "latentarc-archive", "format_version": 2, "codec": "webp",
                "quality": 80.0, "shards": [], "totals": {}}
    (archive / "_archive.json").write_text(json.dumps(manifest))
    for argv in (["info", str(archive)], ["info", str(archive), "--json"],
                 ["compress", str(src), str(archive), "--codec", "webp", "--quality", "80"]):
        assert main(argv) == EXIT_REFUSED, argv
        assert "has archive format version 2; this latentarc reads version 1" in \
            capsys.readouterr().err
    assert json.loads((archive / "_archive.json").read_text()) == manifest


def test_no_credentials_for_a_store_is_a_refusal_that_says_what_to_set(monkeypatch, tmp_path, capsys):
    """botocore's NoCredentialsError was exit 1, "error", with compress's "rerun the same
    command" after it; wrong credentials were already a refusal."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    import s3fs

    # fsspec keeps filesystems by their options: one made earlier for this endpoint, while the
    # test S3 server's credentials were in the environment, would still hold them
    s3fs.S3FileSystem.clear_instance_cache()
    assert main(["info", "s3://bucket/arc", "--endpoint-url", "http://127.0.0.1:1"]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "refused: no credentials for this store" in err and "AWS_ACCESS_KEY_ID" in err
    # the Python API says the same (it gave botocore's NoCredentialsError)
    from pipeline.archive import Archive
    from pipeline.storage import StorageError, StorageOptions
    from pipeline.torch_dataset import ArchiveDataset

    storage = StorageOptions(endpoint_url="http://127.0.0.1:1")
    for make in (Archive.open, ArchiveDataset):
        with pytest.raises(StorageError, match="no credentials for this store.*AWS_ACCESS_KEY_ID"):
            make("s3://bucket/arc", storage)


def test_version_and_a_closed_pipe(capsys):
    """--version says the version; output into a pipe its reader closed (`info ... | head`)
    ended in BrokenPipeError, exit 1, which means "compress has not finished"."""
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.startswith("latentarc ")
    latentarc = str(Path(sys.executable).parent / "latentarc")
    # closed at once: the child's imports take far longer than that, so it writes after
    child = subprocess.Popen([latentarc, "codecs"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    child.stdout.close()
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141 and err == "", err


def test_a_broken_pipe_of_the_verbs_own_is_an_error(monkeypatch, capsys):
    """Only a closed stdout ends quietly (141); a pipe the verb wrote to (a socket, a FIFO)
    that broke is an error like any other, said and exit 1."""
    import pipeline.cli as cli

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setitem(cli.COMMANDS, "codecs", broken)
    assert main(["codecs"]) == 1
    assert "latentarc codecs: error: BrokenPipeError" in capsys.readouterr().err
