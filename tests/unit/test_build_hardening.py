"""Issue 8 on the build side: every failure is an error naming the spec, the model and the field,
the repository is written all or nothing, and racing builds cannot overwrite each other."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from tsrepo import build, repository
from tsrepo.cli import main
from tsrepo.errors import ExportError, RepositoryError, ServingError
from tsrepo.spec import load_spec

TESTS = Path(__file__).resolve().parents[1]
LINEAR = 'source = "tsrepo_testmodels:linear"\nversion = 1\ninputs = [{ name = "x", dtype = "float32", shape = [4] }]\n'


def _spec(write_spec, *bodies: str, defaults: str = "max_batch_size = 4"):
    models = "".join(f"\n[[model]]\n{b}" for b in bodies)
    return load_spec(write_spec(f"[defaults]\n{defaults}\n{models}"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_all_nan_model_builds_with_a_warning_naming_the_output(write_spec, tmp_path):
    spec = _spec(
        write_spec, 'name = "nan"\nsource = "tsrepo_testmodels:all_nan"\ninputs = [{ dtype = "float32", shape = [3] }]'
    )
    pm = build.build(spec, tmp_path / "repo").models[0]
    warning = next(w for w in pm.warnings if "NaN or inf" in w)
    assert "OUTPUT__0" in warning and "model 'nan'" in warning
    assert pm.checks["nonfinite_outputs"] == ["OUTPUT__0"]


def test_trace_of_a_model_whose_eager_forward_fails_at_a_checked_batch_names_the_shapes(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "b"\nsource = "tsrepo_testmodels:fails_above_batch_two"\nexport = "trace"\n'
        'inputs = [{ dtype = "float32", shape = [3] }]',
    )
    with pytest.raises(ExportError) as info:
        build.build(spec, tmp_path / "repo")
    message = str(info.value)
    assert "model 'b'" in message and "[[3, 3]]" in message and "batch too large" in message
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize(
    "source, fragment",
    [
        ("tsrepo_testmodels:exits", "sys.exit(3)"),
        ("exits_on_import:factory", "sys.exit(5)"),
        ("tsrepo_testmodels:exits_in_forward", "sys.exit(4)"),
    ],
)
def test_a_model_that_calls_sys_exit_is_reported_as_its_failure(write_spec, tmp_path, source, fragment):
    spec = _spec(
        write_spec,
        f'name = "e"\nsource = "{source}"\nexport = "trace"\ninputs = [{{ dtype = "float32", shape = [3] }}]',
    )
    with pytest.raises(ExportError, match=rf"model 'e'.*{__import__('re').escape(fragment)}"):
        build.build(spec, tmp_path / "repo")


def test_sys_exit_in_a_factory_exits_2_with_a_message_on_the_command_line(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--source",
            "tsrepo_testmodels:exits",
            "--name",
            "e",
            "--input",
            "x:float32:3",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "sys.exit(3)" in result.output and "Traceback" not in result.output


def test_zero_size_output_is_named_in_the_spec_not_in_an_unwritten_config(write_spec, tmp_path):
    spec = _spec(
        write_spec, 'name = "z"\nsource = "tsrepo_testmodels:zero_width"\ninputs = [{ dtype = "float32", shape = [3] }]'
    )
    with pytest.raises(ServingError) as info:
        build.build(spec, tmp_path / "repo")
    message = str(info.value)
    assert message.startswith(str(tmp_path / "tsrepo.toml")) and "OUTPUT__0" in message and "size 0" in message
    assert "config.pbtxt" not in message


def test_out_under_a_file_is_refused_before_any_model_is_imported(write_spec, tmp_path):
    (tmp_path / "afile").write_text("x")
    spec = _spec(
        write_spec, 'name = "e"\nsource = "tsrepo_testmodels:exits"\ninputs = [{ dtype = "float32", shape = [3] }]'
    )
    # The factory would exit with 3: the refusal comes first, so it is never called.
    with pytest.raises(RepositoryError, match=r"afile is a file, not a folder.*--out"):
        build.build(spec, tmp_path / "afile" / "sub")


@pytest.mark.skipif(repository.probe_writable(Path("/sys")) is None, reason="needs a folder no one can write")
def test_unwritable_out_is_refused_before_any_work(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--source",
            "tsrepo_testmodels:exits",
            "--name",
            "e",
            "--input",
            "x:float32:3",
            "--out",
            "/sys/tsrepo-repo",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "/sys/tsrepo-repo: not writable" in result.output and "--out" in result.output
    assert "Traceback" not in result.output


def test_a_failing_swap_puts_back_the_models_already_swapped(write_spec, tmp_path, monkeypatch):
    out = tmp_path / "repo"
    spec_v1 = _spec(write_spec, 'name = "aaa"\n' + LINEAR, 'name = "lin"\n' + LINEAR)
    build.build(spec_v1, out)
    before = _files(out)
    real_exchange = repository._exchange

    def exchange_failing_on_lin(a: Path, b: Path) -> bool:
        if b.name == "lin":
            raise PermissionError(13, "Permission denied", str(b))
        return real_exchange(a, b)

    monkeypatch.setattr(repository, "_exchange", exchange_failing_on_lin)
    with pytest.raises(RepositoryError, match=r"lin: replacing the model folder failed.*put back") as info:
        build.build(spec_v1, out, force=True)
    assert "aaa" in str(info.value)
    assert _files(out) == before  # aaa/ was swapped in, then swapped back
    assert not [p for p in tmp_path.iterdir() if repository.STAGING_MARK in p.name]


def test_a_failing_rename_of_a_new_model_removes_the_models_already_landed(write_spec, tmp_path, monkeypatch):
    out = tmp_path / "repo"
    spec = _spec(write_spec, 'name = "aaa"\n' + LINEAR, 'name = "zzz"\n' + LINEAR)
    real_rename = os.rename

    def rename_failing_on_zzz(src, dst):
        if Path(dst).name == "zzz" and Path(dst).parent == out.resolve():
            raise OSError(28, "No space left on device", str(dst))
        return real_rename(src, dst)

    monkeypatch.setattr(repository.os, "rename", rename_failing_on_zzz)
    with pytest.raises(RepositoryError, match="put back"):
        build.build(spec, out)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == []


RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tsrepo import build, repository
    from tsrepo.spec import load_spec

    real_write = repository.write

    def slow_write(plan, on_model=None):
        Path(sys.argv[3]).write_text("writing")  # tell the test this build holds the lock
        time.sleep(3)
        real_write(plan, on_model)

    repository.write = slow_write
    try:
        build.build(load_spec(sys.argv[1]), Path(sys.argv[2]))
    except Exception as e:
        print(type(e).__name__, e)
        sys.exit(2)
    """
)


def _race(spec: Path, out: Path, tmp_path: Path) -> tuple[list[int], list[str]]:
    """Two builds of `spec` into `out` at once, each holding the write step 3 s; (exit codes, outputs)."""
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(spec), str(out), str(tmp_path / f"flag{i}")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    return [p.returncode for p in procs], outputs


def test_two_builds_racing_for_version_1_cannot_both_write_it(write_spec, tmp_path):
    spec = write_spec(f'[defaults]\nmax_batch_size = 4\n[[model]]\nname = "lin"\n{LINEAR}')
    out = tmp_path / "repo"
    codes, outputs = _race(spec, out, tmp_path)
    assert sorted(codes) == [0, 2], outputs
    loser = outputs[codes.index(2)]
    assert "RepositoryError" in loser and "version 1 of 'lin' exists" in loser
    # The version on disk is the winner's, complete: its recorded hash matches the file.
    import hashlib
    import json

    recorded = json.loads((out / "lin" / "tsrepo.json").read_text())["versions"]["1"]["sha256"]
    assert hashlib.sha256((out / "lin" / "1" / "model.pt").read_bytes()).hexdigest() == recorded


def test_two_builds_without_a_version_get_versions_1_and_2(write_spec, tmp_path):
    spec = write_spec(f'[defaults]\nmax_batch_size = 4\n[[model]]\nname = "lin"\n{LINEAR.replace("version = 1", "")}')
    out = tmp_path / "repo"
    codes, outputs = _race(spec, out, tmp_path)
    assert codes == [0, 0], outputs
    assert repository.existing_versions(out / "lin") == [1, 2]


def test_instance_group_flag_with_a_negative_count_says_it_must_be_at_least_1(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "build",
            "--source",
            "tsrepo_testmodels:linear",
            "--name",
            "l",
            "--input",
            "x:float32:4",
            "--instance-group",
            "gpu:-1",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 2
    assert "--instance-group" in result.output and "at least 1" in result.output
    assert "expected an integer" not in result.output


def test_model_flags_without_source_are_refused(tmp_path, write_spec):
    spec = write_spec(f'[[model]]\nname = "lin"\n{LINEAR}')
    result = CliRunner().invoke(main, ["build", str(spec), "--name", "x", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--name" in result.output and "only apply with --source" in result.output


def test_debug_shows_the_users_own_failing_frame(tmp_path):
    env = {**os.environ, "TSREPO_DEBUG": "1", "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tsrepo",
            "build",
            "--source",
            "tsrepo_testmodels:raises",
            "--name",
            "r",
            "--input",
            "x:float32:3",
            "--out",
            str(tmp_path / "r"),
        ],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "tsrepo_testmodels.py" in proc.stderr and "The above exception was the direct cause" in proc.stderr


def test_ctrl_c_during_a_build_says_interrupted_exits_130_and_changes_nothing(write_spec, tmp_path):
    """A user's Ctrl-C is not the model's failure, even when it lands inside the model's own code (a
    KeyboardInterrupt the model raises by itself still is)."""
    import signal
    import time

    spec = write_spec(
        '[[model]]\nname = "slow"\nsource = "tsrepo_testmodels:slow_factory"\nversion = 1\n'
        'inputs = [{ dtype = "float32", shape = [4] }]\n'
    )
    out = tmp_path / "repo"
    (out / "slow" / "1").mkdir(parents=True)
    (out / "slow" / "1" / "model.pt").write_bytes(b"old model")
    before = _files(out)
    started = tmp_path / "started"
    env = {
        **os.environ,
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "TSREPO_TEST_STARTED": str(started),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tsrepo", "build", str(spec), "--out", str(out), "--force"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not started.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)  # until the factory runs: the interrupt must land in the user's own code
    assert started.exists(), proc.communicate()[0]
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output and "raised" not in output
    assert _files(out) == before
