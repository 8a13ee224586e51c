"""`tsrepo push` and `tsrepo deploy k8s` on the command line: every option checked, exact exit codes,
no traceback, nothing written on failure. S3 is moto's in-process mock here; the real server is in
tests/integration/test_deploy_s3.py."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest
from click.testing import CliRunner
from moto import mock_aws

from tsrepo.cli import main
from tsrepo.deploy import uri
from tsrepo.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/nonexistent/tsrepo-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/tsrepo-test-aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture
def aws(monkeypatch):
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="models")
        for d in sorted(p for p in (ROOT / "model_repository").iterdir() if p.is_dir()):
            for name in ("config.pbtxt", "tsrepo.json"):
                client.put_object(Bucket="models", Key=f"prod/{d.name}/{name}", Body=(d / name).read_bytes())
            # The model files the records name (their bytes are not read by deploy: a listing is checked).
            for version, entry in json.loads((d / "tsrepo.json").read_text())["versions"].items():
                key = f"prod/{d.name}/{version}/{entry.get('file', 'model.pt')}"
                client.put_object(Bucket="models", Key=key, Body=b"model")
        yield client


def run(*args: str):
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    return result


# ---- URIs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, endpoint, expected",
    [
        ("s3://bucket", None, ("bucket", "", None)),
        ("s3://bucket/a/b/", None, ("bucket", "a/b", None)),
        ("s3://http://127.0.0.1:9000/bucket/p", None, ("bucket", "p", "http://127.0.0.1:9000")),
        ("s3://bucket/p", "https://minio.example:443", ("bucket", "p", "https://minio.example:443")),
    ],
)
def test_s3_uris_parse_in_both_spellings(value, endpoint, expected):
    loc = uri.parse(value, endpoint)
    assert (loc.bucket, loc.prefix, loc.endpoint_url) == expected


def test_triton_spelling_round_trips():
    loc = uri.parse("s3://bkt/m", "http://127.0.0.1:9000")
    assert loc.triton_uri() == "s3://http://127.0.0.1:9000/bkt/m" and loc.uri() == "s3://bkt/m"
    assert uri.parse(loc.triton_uri()) == loc


@pytest.mark.parametrize(
    "value, endpoint, fragment",
    [
        ("gs://bucket/p", None, "must be an s3://"),
        ("s3://Bucket/p", None, "not a valid S3 bucket name"),
        ("s3://ab/p", None, "not a valid S3 bucket name"),
        ("s3://192.168.1.1/p", None, "not a valid S3 bucket name"),
        ("s3://bucket/a/../b", None, "'..'"),
        ("s3://bucket/a//b", None, "empty"),
        ("s3://bucket/p", "ftp://host", "http(s)://HOST[:PORT]"),
        ("s3://bucket/p", "http://host:99999", "port"),
        ("s3://bucket/p", "http://host/path", "without a path"),
        ("s3://http://a:1/bucket/p", "http://b:2", "give it once"),
    ],
)
def test_bad_uris_are_refused_naming_the_problem(value, endpoint, fragment):
    with pytest.raises(UsageError, match=None) as info:
        uri.parse(value, endpoint)
    assert fragment in str(info.value)


# ---- option checks ------------------------------------------------------------------------------

BASE = ["deploy", "k8s", "--repo", "s3://models/prod"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--replicas", "0"], "--replicas"),
        (["--min-replicas", "0"], "--min-replicas"),
        (["--min-replicas", "3", "--max-replicas", "2"], "--min-replicas (3) must be <= --max-replicas (2)"),
        (["--replicas", "5", "--max-replicas", "4"], "--replicas (5) must be <= --max-replicas (4)"),
        (["--replicas", "1", "--min-replicas", "2"], "--replicas (1) must lie within"),
        (["--gpus", "-1"], "--gpus"),
        (["--image", "nvcr.io/nvidia/tritonserver"], "--image"),
        (["--image", "bad tag"], "--image"),
        (["--image", "-leading-dash"], "--image"),
        (["--target", "kserve", "--image", "my.registry/triton:1"], "--target kserve takes"),
        (["--name", "Triton"], "--name"),
        (["--name", "1triton"], "--name"),
        (["--secret", "Bad_Secret"], "--secret"),
        (["--cpu", "two"], "--cpu"),
        (["--memory", "0"], "--memory"),
        (["--startup-seconds", "5"], "--startup-seconds"),
        (["--target", "helm"], "--target"),
        (["--endpoint-url", "minio:9000"], "--endpoint-url"),
    ],
)
def test_deploy_refuses_each_bad_option_with_exit_2_and_writes_nothing(tmp_path, aws, args, fragment):
    out = tmp_path / "out"
    result = run(*BASE, "--out", str(out), *args)
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert not out.exists()


def test_deploy_repo_must_be_an_s3_uri(tmp_path):
    result = run("deploy", "k8s", "--repo", "model_repository", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "s3://" in result.output


def test_deploy_renders_from_the_bucket_and_replaces_only_its_own_folder(tmp_path, aws):
    out = tmp_path / "out"
    result = run(*BASE, "--out", str(out), "--image", "25.10-py3")
    assert result.exit_code == 0, result.output
    assert (out / "deployment.yaml").is_file() and "gpus    1 per pod" in result.output
    again = run(*BASE, "--out", str(out), "--target", "kserve", "--image", "25.10-py3")
    assert again.exit_code == 0, again.output
    assert (out / "inferenceservice.yaml").is_file() and not (out / "deployment.yaml").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    refused = run(*BASE, "--out", str(foreign))
    assert refused.exit_code == 2 and "did not render" in refused.output
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_deploy_with_too_few_gpus_fails_and_leaves_the_old_output(tmp_path, aws):
    out = tmp_path / "out"
    assert run(*BASE, "--out", str(out), "--image", "25.10-py3").exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    result = run(*BASE, "--out", str(out), "--gpus", "0", "--replicas", "2")
    assert result.exit_code == 2
    assert "KIND_GPU" in result.output and "--gpus 1" in result.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no staging folder is left behind"


def test_deploy_refuses_a_recorded_version_whose_folder_lacks_its_model_file(tmp_path, aws):
    # the folder is there (a folder marker, as a console leaves), its model file is not: Triton fails to load it
    aws.delete_object(Bucket="models", Key="prod/din/1/model.pt")
    aws.put_object(Bucket="models", Key="prod/din/1/", Body=b"")
    result = run(*BASE, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "s3://models/prod/din/1/model.pt: missing" in result.output, result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "change, fragment",
    [
        # an interrupted push: a version folder with a model file and no record entry
        ({"put": "prod/din/7/model.pt"}, "version 7 of 'din' has no entry in tsrepo.json"),
        # a folder with no model file (a marker, or a push killed before the model file): Triton would fail on it
        ({"put": "prod/din/3/"}, "version 3 of 'din' holds no model file"),
        ({"put": "prod/din/4/tsrepo-notes.txt"}, "version 4 of 'din' holds no model file"),
        # a version retired by hand: recorded, not in the bucket, not served (Triton loads the others)
        ({"delete": "prod/din/1/model.pt"}, "version 1 of 'din' is recorded in tsrepo.json but not in the bucket"),
    ],
)
def test_deploy_names_version_folders_that_differ_from_the_record_and_renders(tmp_path, aws, change, fragment):
    if "put" in change:
        aws.put_object(Bucket="models", Key=change["put"], Body=b"x")
    else:
        aws.delete_object(Bucket="models", Key=change["delete"])
    result = run(*BASE, "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    assert fragment in result.output, result.output
    assert (tmp_path / "o" / "kustomization.yaml").is_file()


def test_deploy_ignores_folders_triton_does_not_read_as_versions(tmp_path, aws):
    # a leading zero: not version 7 (which the record does not list, so reading it as one would warn)
    aws.put_object(Bucket="models", Key="prod/din/07/model.pt", Body=b"x")
    aws.put_object(Bucket="models", Key="prod/din/extra/readme.txt", Body=b"x")
    result = run(*BASE, "--out", str(tmp_path / "o"))
    assert result.exit_code == 0 and "warning" not in result.output, result.output


def test_deploy_from_an_empty_prefix_says_there_is_no_model(tmp_path, aws):
    result = run("deploy", "k8s", "--repo", "s3://models/nothing-here", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "no model" in result.output
    assert not (tmp_path / "o").exists()


def _one_model_repo(root: Path, model_bytes: bytes, recorded: bytes) -> Path:
    import hashlib
    import json

    model = root / "m"
    (model / "1").mkdir(parents=True)
    (model / "config.pbtxt").write_text('name: "m"\n')
    record = json.loads((ROOT / "model_repository" / "din" / "tsrepo.json").read_text())
    record["model"] = "m"
    record["versions"] = {"1": {"sha256": hashlib.sha256(recorded).hexdigest(), "torch": "2.13.0", "export": "script"}}
    (model / "tsrepo.json").write_text(json.dumps(record))
    (model / "1" / "model.pt").write_bytes(model_bytes)
    return root


def test_push_refuses_a_model_file_unlike_its_record_before_any_request(tmp_path, monkeypatch):
    repo = _one_model_repo(tmp_path / "repo", b"changed", b"built")
    result = run("push", str(repo), "s3://models/p", "--endpoint-url", "http://127.0.0.1:9")
    assert result.exit_code == 2 and "model.pt: sha256" in result.output


def test_push_without_credentials_names_the_standard_chain(tmp_path, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_DISABLED"):
        monkeypatch.setenv(key, FAKE_AWS[key])
    repo = _one_model_repo(tmp_path / "repo", b"built", b"built")
    # Nothing listens on port 9: boto3 refuses to sign before it would connect.
    result = run("push", str(repo), "s3://models/p", "--endpoint-url", "http://127.0.0.1:9")
    assert result.exit_code == 2, result.output
    assert "no AWS credentials" in result.output and "standard AWS chain" in result.output
    assert "s3://models/p/" in result.output


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["s3://Bad/p"], "not a valid S3 bucket name"),
        (["s3://bucket/p", "--endpoint-url", "nope"], "--endpoint-url"),
        (["gs://bucket/p"], "s3://"),
    ],
)
def test_push_refuses_bad_targets_at_parse_time(tmp_path, args, fragment):
    (tmp_path / "repo").mkdir()
    result = run("push", str(tmp_path / "repo"), *args)
    assert result.exit_code == 2 and fragment in result.output


def test_push_of_a_missing_folder_exits_2(tmp_path):
    result = run("push", str(tmp_path / "nope"), "s3://bucket/p")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_help_lists_push_and_deploy():
    result = run("--help")
    assert "push " in result.output and "deploy " in result.output


def test_messages_about_a_fetched_repository_name_the_uri_by_either_path_to_its_snapshot(tmp_path, monkeypatch):
    import tsrepo.deploy.s3 as s3_mod
    from tsrepo.cli import as_given, local_repo

    real = tmp_path / "cache" / "snap"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "cache")  # a cache reached through a symlink
    monkeypatch.setattr(s3_mod, "materialize", lambda repo, warn: tmp_path / "link" / "snap")
    assert local_repo("s3://bucket/prefix/") == tmp_path / "link" / "snap"
    for folder in (tmp_path / "link" / "snap", real):
        assert as_given(f"{folder}/m/config.pbtxt: not found") == "s3://bucket/prefix/m/config.pbtxt: not found"
    assert as_given("nothing fetched here") == "nothing fetched here"
