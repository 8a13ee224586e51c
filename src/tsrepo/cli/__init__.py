"""The command line: parse arguments, call one library function, turn errors into exit codes.

Heavy modules (torch, tritonclient) are imported inside the commands so `--help` stays instant.
"""

from __future__ import annotations

import os
import sys

import click

from tsrepo.errors import TsrepoError

LOG_WIDTH = 1000  # off a terminal: wide enough that no table column is ever truncated


class _Group(click.Group):
    """Prints a TsrepoError as one message and exits with its code; TSREPO_DEBUG=1 for tracebacks."""

    def invoke(self, ctx):
        from tsrepo import interrupts

        interrupts.install()
        try:
            return super().invoke(ctx)
        except TsrepoError as e:
            if os.environ.get("TSREPO_DEBUG"):
                raise
            click.secho(f"error: {as_given(str(e))}", fg="red", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            if os.environ.get("TSREPO_DEBUG"):
                raise
            click.echo("interrupted", err=True)
            ctx.exit(130)


class PathParam(click.Path):
    """click.Path that refuses an empty value: Path("") is the working directory, never what was meant."""

    def __init__(self, **kwargs):
        from pathlib import Path

        kwargs.setdefault("path_type", Path)
        super().__init__(**kwargs)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; give a path", param, ctx)
        return super().convert(value, param, ctx)


class RepoParam(PathParam):
    """A local folder, or an s3:// URI kept as text (a Path would fold its '//'); serve, validate and
    bench fetch an s3:// repository into a verified local snapshot (tsrepo.deploy.s3.materialize)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.startswith("s3://"):
            return value
        if isinstance(value, str) and "://" in value:
            scheme = value.split("://", 1)[0]
            self.fail(
                f"{value!r}: {scheme}:// is not a storage tsrepo reads; give a local folder or s3://bucket/prefix"
                " (Triton's s3://http://host:port/bucket/prefix form included; Google Cloud Storage through its"
                " S3-compatible endpoint: s3://https://storage.googleapis.com/bucket/prefix)",
                param,
                ctx,
            )
        return super().convert(value, param, ctx)


def repo_option(help_text: str):
    """The --repo option the serving and client commands share (a folder, or s3://bucket/prefix)."""
    return click.option("--repo", default="model_repository", show_default=True, type=RepoParam(), help=help_text)


_FETCHED: dict[str, str] = {}  # local snapshot folder -> the s3:// URI it was fetched from, for messages


def local_repo(repo, console=None):
    """--repo as a local folder: an s3:// repository is fetched (verified against tsrepo.json) first."""
    if not isinstance(repo, str):
        return repo
    from rich.markup import escape

    from tsrepo.deploy.s3 import materialize

    warn = (lambda m: console.print(f"[yellow]warning:[/] {escape(m)}")) if console is not None else (lambda _m: None)
    copy = materialize(repo, warn=warn)
    for folder in {str(copy), os.path.realpath(copy)}:  # paths reach messages resolved or not
        _FETCHED[folder] = repo.rstrip("/")
    return copy


def as_given(message: str) -> str:
    """An error message with each fetched snapshot's folder named as the user gave it (the s3:// URI):
    `s3://b/repo/m/config.pbtxt`, not a path in the cache the user never typed."""
    for folder, given in sorted(_FETCHED.items(), key=lambda kv: -len(kv[0])):
        message = message.replace(folder, given)
    return message


def _console():
    """Messages and tables on stderr. Off a terminal (logs, CI, pipes) nothing is wrapped or cut:
    rich would otherwise lay tables out in 80 columns and end numbers in '…'."""
    from rich.console import Console

    if sys.stderr.isatty():
        return Console(stderr=True, highlight=False)
    return Console(stderr=True, highlight=False, width=LOG_WIDTH, soft_wrap=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tsrepo")
def main() -> None:
    """tsrepo: take PyTorch models to Triton Inference Server.

    \b
    build     script/trace models, verify them, write a Triton model repository
    doctor    explain why a model does not script, finding by finding, with the fix
    migrate   check TorchScript models against torch.export + AOTInductor, switch the ready ones
    serve     start a real Triton server on a repository (locally or with docker compose)
    compose   pick the container tag for docker/ and write the KIND_CPU copy
    validate  prove the served answers equal the local TorchScript answers
    bench     load-test a served model (concurrency and request-rate sweeps)
    tune      find the config (instances, batching, delays) that serves a model best, by measuring
    push      upload a repository to S3 in an order a polling server can follow
    deploy    render Kubernetes manifests or a KServe InferenceService for a pushed repository
    """


def run() -> None:
    main(prog_name="tsrepo")


# The commands register themselves on `main`; their heavy imports stay inside the functions.
from tsrepo.cli import build, client, deploy, doctor, migrate, serve, tune  # noqa: E402, F401

if __name__ == "__main__":
    sys.exit(run())
