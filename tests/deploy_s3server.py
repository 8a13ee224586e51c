"""A real S3 server on loopback for the deploy tests: moto in server mode, as a subprocess."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tsrepo.serve.ports import free_port

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Never read the developer's own files or ask an instance-metadata service.
    "AWS_CONFIG_FILE": "/nonexistent/tsrepo-test-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/tsrepo-test-aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def moto_server_command(port: int) -> list[str]:
    script = Path(sys.executable).parent / "moto_server"
    base = [str(script)] if script.exists() else [shutil.which("moto_server") or "moto_server"]
    return [*base, "-H", "127.0.0.1", "-p", str(port)]


def _wait_listening(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {process.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"moto_server did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """http://127.0.0.1:PORT of a moto S3 server that lives for the test session."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    env = {**os.environ, **FAKE_AWS}
    process = subprocess.Popen(
        moto_server_command(port), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )
    try:
        _wait_listening(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


@pytest.fixture
def aws_env(monkeypatch):
    """Fake credentials in the environment for this test only."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    for key, value in FAKE_AWS.items():
        monkeypatch.setenv(key, value)
    return dict(FAKE_AWS)


@pytest.fixture
def bucket(s3_endpoint, aws_env):
    """A fresh bucket on the session's server; its name."""
    import boto3

    name = f"tsrepo-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name
