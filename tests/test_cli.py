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
    ]
    for argv in cases:
        assert main(argv) == EXIT_REFUSED, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "refused" in err[0], (argv, err)
        assert "pw@" not in err[0] and "abc" not in err[0]


def test_console_script_and_job_modules_run():
    latentarc = str(Path(sys.executable).parent / "latentarc")
    for cmd in ([latentarc, "codecs"], [sys.executable, "-m", "jobs.verify", "--help"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
