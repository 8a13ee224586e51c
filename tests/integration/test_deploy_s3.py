"""`tsrepo push` and `materialize` against a real S3 server (moto in server mode) on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import deploy_s3server as _server
import pytest
from click.testing import CliRunner

from tsrepo import build
from tsrepo.cli import main
from tsrepo.deploy import push as push_mod
from tsrepo.deploy import remote, s3
from tsrepo.deploy.errors import DeployError
from tsrepo.spec import load_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
s3_endpoint, aws_env, bucket = _server.s3_endpoint, _server.aws_env, _server.bucket  # fixtures
TESTS = Path(__file__).resolve().parents[1]

SPEC = """
[defaults]
max_batch_size = {mbs}

[[model]]
name = "lin_a"
source = "tsrepo_testmodels:linear"
version = {version}
inputs = [{{ name = "x", dtype = "float32", shape = [4] }}]

[[model]]
name = "lin_b"
source = "tsrepo_testmodels:linear"
version = {version}
instance_group = [{{ kind = "gpu", count = 1 }}]
inputs = [{{ name = "x", dtype = "float32", shape = [4] }}]
"""


@pytest.fixture(scope="module")
def repos(tmp_path_factory) -> tuple[Path, Path]:
    """(old, new): version 1 of two models, then the same repository with version 2 and another config."""
    root = tmp_path_factory.mktemp("deploy")
    old, new = root / "old", root / "new"
    for version, mbs, out in ((1, 4, old), (2, 2, new)):
        spec = root / f"v{version}.toml"
        spec.write_text(SPEC.format(version=version, mbs=mbs))
        if version == 2:
            shutil.copytree(old, new)
        build.build(load_spec(spec), out)
    return old, new


def _bucket_files(endpoint: str, bucket: str, prefix: str) -> dict[str, bytes]:
    client = boto3.client("s3", endpoint_url=endpoint)
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            out[item["Key"][len(prefix) + 1 :]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return out


def _local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _recording_client(loc):
    """A boto3 client that records the key of every PutObject and DeleteObject, in order."""
    client = remote.client(loc)
    calls: list[tuple[str, str]] = []
    for op in ("PutObject", "DeleteObject"):
        client.meta.events.register(
            f"provide-client-params.s3.{op}", lambda params, _op=op, **_kw: calls.append((_op, params["Key"]))
        )
    return client, calls


def test_push_uploads_every_file_and_a_second_push_is_a_no_op(repos, s3_endpoint, bucket):
    old, _new = repos
    loc = s3.parse(f"s3://{bucket}/prod", s3_endpoint)
    started = time.monotonic()
    first = s3.push(old, loc)
    first_s = time.monotonic() - started
    assert _bucket_files(s3_endpoint, bucket, "prod") == _local_files(old)
    assert first.plan.count("upload") == 6
    client, calls = _recording_client(loc)
    started = time.monotonic()
    second = push_mod.apply(push_mod.plan(old, loc, prune=False, s3=client), client)
    second_s = time.monotonic() - started
    assert second.plan.count("upload") == 0 and second.plan.count("skip") == 6
    assert calls == []
    print(f"push {first_s:.2f} s, re-push {second_s:.2f} s")


def test_push_orders_versions_then_record_then_config_and_prunes_after_all_uploads(repos, s3_endpoint, bucket):
    old, new = repos
    loc = s3.parse(f"s3://{bucket}/prod", s3_endpoint)
    s3.push(old, loc)
    shutil.rmtree(new / "lin_a" / "1")  # the new repository no longer has lin_a v1
    try:
        (new / "lin_a" / "tsrepo.json").write_text(_drop_version(new / "lin_a" / "tsrepo.json", 1))
        client, calls = _recording_client(loc)
        result = push_mod.apply(push_mod.plan(new, loc, prune=True, s3=client), client)
    finally:
        shutil.copytree(old / "lin_a" / "1", new / "lin_a" / "1")
        (new / "lin_a" / "tsrepo.json").write_text(
            _with_version(new / "lin_a" / "tsrepo.json", old / "lin_a" / "tsrepo.json", 1)
        )
    puts = [k for op, k in calls if op == "PutObject"]
    assert calls[: len(puts)] == [("PutObject", k) for k in puts], "every upload comes before any delete"
    assert [k for op, k in calls if op == "DeleteObject"] == ["prod/lin_a/1/model.pt"]
    for model in ("lin_a", "lin_b"):
        order = [k for k in puts if k.startswith(f"prod/{model}/")]
        assert order[-2:] == [f"prod/{model}/tsrepo.json", f"prod/{model}/config.pbtxt"]
        assert order[0] == f"prod/{model}/2/model.pt"
    assert result.deleted == ["prod/lin_a/1/model.pt"]
    remaining = _bucket_files(s3_endpoint, bucket, "prod")
    assert "lin_a/1/model.pt" not in remaining and "lin_b/1/model.pt" in remaining


def _drop_version(path: Path, version: int) -> str:
    doc = json.loads(path.read_text())
    doc["versions"].pop(str(version))
    return json.dumps(doc, indent=2) + "\n"


def _with_version(path: Path, source: Path, version: int) -> str:
    doc = json.loads(path.read_text())
    doc["versions"][str(version)] = json.loads(source.read_text())["versions"][str(version)]
    doc["versions"] = dict(sorted(doc["versions"].items(), key=lambda kv: int(kv[0])))
    return json.dumps(doc, indent=2) + "\n"


def test_push_without_prune_keeps_remote_only_models_and_says_so(repos, s3_endpoint, bucket, tmp_path):
    old, _new = repos
    loc = s3.parse(f"s3://{bucket}/p", s3_endpoint)
    s3.push(old, loc)
    only_a = tmp_path / "only_a"
    shutil.copytree(old / "lin_a", only_a / "lin_a")
    result = CliRunner().invoke(main, ["push", str(only_a), f"s3://{bucket}/p", "--endpoint-url", s3_endpoint])
    assert result.exit_code == 0, result.output
    assert f"kept: s3://{bucket}/p/lin_b/config.pbtxt" in result.output
    pruned = CliRunner().invoke(
        main, ["push", str(only_a), f"s3://{bucket}/p", "--endpoint-url", s3_endpoint, "--prune"]
    )
    assert pruned.exit_code == 0, pruned.output
    remaining = _bucket_files(s3_endpoint, bucket, "p")
    assert sorted(remaining) == ["lin_a/1/model.pt", "lin_a/config.pbtxt", "lin_a/tsrepo.json"]
    # A model that is going away loses its config first, so a polling server unloads it cleanly.
    deletes = [line for line in pruned.output.splitlines() if line.startswith("delete")]
    assert "/p/lin_b/config.pbtxt " in deletes[0]


def test_dry_run_changes_nothing(repos, s3_endpoint, bucket):
    old, _new = repos
    result = CliRunner().invoke(
        main, ["push", str(old), f"s3://{bucket}/p", "--endpoint-url", s3_endpoint, "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    assert "dry run: 6 to upload" in result.output
    assert _bucket_files(s3_endpoint, bucket, "p") == {}


def test_push_to_a_missing_bucket_exits_1_naming_it(repos, s3_endpoint, aws_env):
    old, _new = repos
    result = CliRunner().invoke(main, ["push", str(old), "s3://no-such-bucket-x/p", "--endpoint-url", s3_endpoint])
    assert result.exit_code == 1
    assert "s3://no-such-bucket-x/p/" in result.output and "NoSuchBucket" in result.output
    assert "Traceback" not in result.output


def test_push_refuses_a_model_file_that_differs_from_its_record(repos, s3_endpoint, bucket, tmp_path):
    old, _new = repos
    bad = tmp_path / "bad"
    shutil.copytree(old, bad)
    (bad / "lin_a" / "1" / "model.pt").write_bytes(b"not the model")
    result = CliRunner().invoke(main, ["push", str(bad), f"s3://{bucket}/p", "--endpoint-url", s3_endpoint])
    assert result.exit_code == 2
    assert "lin_a/1/model.pt: sha256" in result.output and "tsrepo.json" in result.output
    assert _bucket_files(s3_endpoint, bucket, "p") == {}, "nothing is uploaded when any model fails its check"


# ---- an interrupted push ----------------------------------------------------------------------

PUSH_SLOWLY = """
import sys, time
from pathlib import Path
from tsrepo.deploy import s3
def step(s):
    print(s.action, s.key, flush=True)
    time.sleep(0.2)
s3.push(Path(sys.argv[1]), s3.parse(sys.argv[2], sys.argv[3]), prune=True, on_step=step)
print("done", flush=True)
"""


def _state_of(files: dict[str, bytes], model: str, old: Path, new: Path) -> str:
    """'old' or 'new' when the bucket holds the model whole in that state; fails the test otherwise."""
    config = files[f"{model}/config.pbtxt"]
    states = {"old": old / model, "new": new / model}
    state = next(s for s, d in states.items() if (d / "config.pbtxt").read_bytes() == config)
    record = json.loads((states[state] / "tsrepo.json").read_text())
    for version, entry in record["versions"].items():
        data = files.get(f"{model}/{version}/model.pt")
        assert data is not None, f"{model} in its {state} state lists version {version}, missing from the bucket"
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    known = {
        v: e["sha256"]
        for d in states.values()
        for v, e in json.loads((d / "tsrepo.json").read_text())["versions"].items()
    }
    for key, data in files.items():
        parts = key.split("/")
        if parts[0] == model and parts[1].isdigit():
            assert hashlib.sha256(data).hexdigest() == known[parts[1]], f"{key} is neither the old nor the new file"
    return state


def test_a_push_killed_at_any_point_leaves_every_model_whole_old_or_new(repos, s3_endpoint, bucket, aws_env, tmp_path):
    old, new = repos
    uri = f"s3://{bucket}/live"
    env = {**os.environ, **aws_env, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    seen_states: set[tuple[str, str]] = set()
    finished = False
    for kill_after in range(1, 20):  # kill after 1, 2, ... uploads, until a push finishes first
        s3.push(old, s3.parse(uri, s3_endpoint), prune=True)  # back to the old state
        proc = subprocess.Popen(
            [sys.executable, "-c", PUSH_SLOWLY, str(new), uri, s3_endpoint],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            lines = []
            for _ in range(kill_after):
                lines.append(proc.stdout.readline())
                assert lines[-1], f"after {lines}: {proc.stderr.read()}"
                finished = lines[-1] == "done\n"
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait(30)
        files = _bucket_files(s3_endpoint, bucket, "live")
        for model in ("lin_a", "lin_b"):
            seen_states.add((model, _state_of(files, model, old, new)))
        copy = s3.materialize(uri, s3_endpoint, cache=tmp_path / "cache")
        assert sorted(p.name for p in copy.iterdir() if p.is_dir()) == ["lin_a", "lin_b"]
        if finished:
            break
    assert finished and kill_after == 7, "six uploads, then done"
    assert seen_states == {("lin_a", "old"), ("lin_a", "new"), ("lin_b", "old"), ("lin_b", "new")}


# ---- materialize ------------------------------------------------------------------------------


def test_materialize_round_trips_and_reuses_its_snapshot(repos, s3_endpoint, bucket, tmp_path):
    old, _new = repos
    uri = f"s3://{bucket}/r"
    s3.push(old, s3.parse(uri, s3_endpoint))
    assert s3.materialize(old) == old  # a local path is returned as it is
    first = s3.materialize(uri, s3_endpoint, cache=tmp_path / "cache")
    assert {k: v for k, v in _local_files(first).items() if not k.startswith(".")} == _local_files(old)
    triton_form = s3.materialize(f"s3://{s3_endpoint}/{bucket}/r", cache=tmp_path / "cache")
    assert triton_form == first


def test_materialize_refuses_a_model_file_that_is_not_what_was_pushed(repos, s3_endpoint, bucket, tmp_path):
    old, _new = repos
    uri = f"s3://{bucket}/t"
    s3.push(old, s3.parse(uri, s3_endpoint))
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket=bucket, Key="t/lin_b/1/model.pt", Body=b"evil")
    with pytest.raises(DeployError, match=r"t/lin_b/1/model.pt.*not the recorded"):
        s3.materialize(uri, s3_endpoint, cache=tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("lin_b")), "a failed download leaves no copy behind"


def test_materialize_leaves_out_a_version_its_record_does_not_list(repos, s3_endpoint, bucket, tmp_path):
    old, _new = repos
    uri = f"s3://{bucket}/u"
    s3.push(old, s3.parse(uri, s3_endpoint))
    boto3.client("s3", endpoint_url=s3_endpoint).put_object(Bucket=bucket, Key="u/lin_a/7/model.pt", Body=b"x")
    warnings: list[str] = []
    copy = s3.materialize(uri, s3_endpoint, cache=tmp_path / "cache", warn=warnings.append)
    assert not (copy / "lin_a" / "7").exists() and (copy / "lin_a" / "1" / "model.pt").is_file()
    assert len(warnings) == 1 and "version 7 of 'lin_a'" in warnings[0]


def test_serve_and_validate_run_on_a_pushed_repository(repos, s3_endpoint, bucket, aws_env, tmp_path):
    """`tsrepo serve --repo s3://...` and `tsrepo validate --repo s3://...`, as a user runs them."""
    import urllib.request

    from tsrepo.serve.ports import free_ports

    old, _ = repos
    uri = f"s3://{s3_endpoint}/{bucket}/repo"
    assert CliRunner().invoke(main, ["push", str(old), uri]).exit_code == 0
    ports = free_ports()
    env = {
        **os.environ,
        **aws_env,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    port_args = ["--http-port", str(ports.http), "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics)]
    server = subprocess.Popen(
        [sys.executable, "-m", "tsrepo", "serve", "--repo", uri, *port_args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{ports.http}/v2/health/ready", timeout=1).status == 200:
                    break
            except OSError:
                assert server.poll() is None, server.stdout.read().decode()
                time.sleep(0.3)
        validate = subprocess.run(
            [sys.executable, "-m", "tsrepo", "validate", "--repo", uri, "--url", f"127.0.0.1:{ports.http}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert validate.returncode == 0, validate.stdout + validate.stderr
        assert "pass" in validate.stderr and "lin_a" in validate.stderr and "lin_b" in validate.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    assert server.returncode == 0


def test_prune_at_a_prefix_holding_other_repositories_deletes_only_model_folders(repos, s3_endpoint, bucket):
    old, new = repos
    s3.push(old, s3.parse(f"s3://{bucket}/team-a", s3_endpoint))  # another repository beside the root's models
    root = s3.parse(f"s3://{bucket}", s3_endpoint)
    s3.push(old, root)
    plan = push_mod.plan(new, root, prune=True)
    deleted = [st.key for st in plan.steps if st.action == "delete"]
    assert not [k for k in deleted if k.startswith("team-a/")], deleted
    push_mod.apply(plan, remote.client(root))
    assert _bucket_files(s3_endpoint, bucket, "team-a") == _local_files(old)


def test_an_error_about_a_fetched_repository_names_the_s3_uri_not_the_cache(repos, s3_endpoint, bucket, tmp_path):
    old, _ = repos
    uri = f"s3://{s3_endpoint}/{bucket}/named"
    assert CliRunner().invoke(main, ["push", str(old), uri]).exit_code == 0
    cache = tmp_path / "cache"
    result = CliRunner(env={"XDG_CACHE_HOME": str(cache)}).invoke(
        main, ["validate", "--repo", uri, "--model", "nosuch", "--url", "127.0.0.1:1", "--timeout", "1"]
    )
    assert result.exit_code == 2 and "nosuch" in result.output, result.output
    assert uri in result.output and str(cache) not in result.output, result.output
