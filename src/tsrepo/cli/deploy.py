"""`tsrepo push` and `tsrepo deploy k8s`: the repository to object storage, and the manifests that serve it."""

from __future__ import annotations

import click

from tsrepo.cli import PathParam, _console, main
from tsrepo.errors import UsageError

# Kubernetes holds replicas, probe thresholds and metric targets as int32.
INT32_MAX = 2**31 - 1


def _s3_uri(ctx, param, value):
    """Checked at parse time; the endpoint (a later option) is merged in by the command."""
    if value is None:
        return None
    from tsrepo.deploy import uri

    try:
        uri.parse(value, option=param.human_readable_name)
    except UsageError as e:
        raise click.BadParameter(str(e)) from None
    return value


def _endpoint(ctx, param, value):
    if value is None:
        return None
    from tsrepo.deploy import uri

    try:
        return uri.check_endpoint(value)
    except UsageError as e:
        raise click.BadParameter(str(e)) from None


def _image(ctx, param, value):
    if value == "auto":
        return value
    from tsrepo.deploy.options import image_parts

    try:
        image_parts(value)
    except UsageError as e:
        raise click.BadParameter(str(e)) from None
    return value


ENDPOINT = click.option(
    "--endpoint-url",
    callback=_endpoint,
    metavar="URL",
    help="An S3-compatible server, http(s)://HOST[:PORT] (MinIO, Ceph...); default: AWS, or AWS_ENDPOINT_URL_S3.",
)


@main.command()
@click.argument("repo", type=PathParam(file_okay=False, exists=True))
@click.argument("target", metavar="s3://BUCKET/PREFIX", callback=_s3_uri)
@ENDPOINT
@click.option("--dry-run", is_flag=True, help="Print what would be uploaded, skipped and deleted; change nothing.")
@click.option("--prune", is_flag=True, help="After the upload, delete remote versions and models not in REPO.")
def push(repo, target, endpoint_url, dry_run, prune):
    """Upload the model repository REPO to S3, in an order a polling Triton can follow.

    Per model: the version folders first, then tsrepo.json, then config.pbtxt, so a server that
    polls the bucket sees each model whole, old or new. Every model file is checked against the
    sha256 in tsrepo.json; objects whose sha256 is unchanged are skipped. Credentials come only
    from the standard AWS chain (environment, profiles, SSO, instance roles).
    """
    from tsrepo.deploy import push as push_mod
    from tsrepo.deploy import uri

    loc = uri.parse(target, endpoint_url, option="s3://BUCKET/PREFIX")
    console = _console()
    result = push_mod.push(
        repo, loc, prune=prune, dry_run=dry_run, on_step=lambda s: click.echo(f"{s.action:<7} {loc.describe(s.key)}")
    )
    if dry_run:
        for line in result.plan.lines():
            click.echo(line)
        click.echo(f"dry run: {result.plan.summary()}; nothing changed")
        return
    for step in result.plan.steps:
        if step.action == "keep":
            console.print(f"[yellow]kept:[/] {loc.describe(step.key)} is not in {repo} (--prune deletes it)")
    click.echo(f"pushed {loc.describe()}: {result.plan.summary()} in {result.seconds:.2f} s")


@main.group()
def deploy():
    """Render what runs a pushed repository beyond one host."""


@deploy.command("k8s")
@click.option("--repo", required=True, callback=_s3_uri, metavar="s3://BUCKET/PREFIX", help="A pushed repository.")
@ENDPOINT
@click.option(
    "--target",
    type=click.Choice(["k8s", "kserve"]),
    default="k8s",
    show_default=True,
    help="k8s: Deployment, Service, PDB, ServiceMonitor, HPA and a kustomization; kserve: an InferenceService.",
)
@click.option("--out", default="k8s", show_default=True, type=PathParam(), help="The folder to render into.")
@click.option("--name", default="triton", show_default=True, help="Name of the Deployment, Service and the rest.")
@click.option("--replicas", default=1, show_default=True, type=click.IntRange(1, INT32_MAX))
@click.option("--min-replicas", type=click.IntRange(1, INT32_MAX), help="HPA lower bound [default: --replicas].")
@click.option(
    "--max-replicas", type=click.IntRange(1, INT32_MAX), help="HPA upper bound [default: max(3, --replicas)]."
)
@click.option(
    "--gpus", type=click.IntRange(0, 1024), help="nvidia.com/gpu per pod [default: 1 if any model is KIND_GPU, else 0]."
)
@click.option(
    "--image",
    default="auto",
    show_default=True,
    callback=_image,
    help="auto (from the torch in tsrepo.json), a tag such as 25.10-py3, or a full image reference.",
)
@click.option(
    "--secret",
    default="triton-s3-credentials",
    show_default=True,
    help="The Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
)
@click.option(
    "--ops-configmap",
    help="A ConfigMap holding the custom-op libraries the models record in tsrepo.json (kubectl create configmap"
    " NAME --from-file=LIB.so): mounted and preloaded, as Triton's PyTorch backend needs. Required when any model"
    " records one.",
)
@click.option("--cpu", default="2", show_default=True, help="CPU request per pod.")
@click.option("--memory", default="8Gi", show_default=True, help="Memory request and limit per pod.")
@click.option("--shm-size", default="1Gi", show_default=True, help="Size of the in-memory /dev/shm volume.")
@click.option(
    "--queue-target-us",
    default=50,
    show_default=True,
    type=click.IntRange(1, INT32_MAX),
    help="HPA target: average queue time per request, microseconds.",
)
@click.option(
    "--startup-seconds",
    default=600,
    show_default=True,
    type=click.IntRange(10, 86400),
    help="How long the startup probe allows for downloading and loading the models.",
)
@click.option(
    "--templates",
    type=PathParam(file_okay=False, exists=True),
    help="A folder with your own deploy/ templates (house style).",
)
def k8s_cmd(repo, endpoint_url, target, out, templates, **options):
    """Render Kubernetes manifests (or a KServe InferenceService) for a repository pushed with `tsrepo push`.

    Reads each model's config.pbtxt and tsrepo.json from the bucket (not the model files): KIND_GPU
    models get nvidia.com/gpu limits, and --image auto picks the Triton release whose PyTorch loads
    the exported models. Everything is rendered and parsed back before OUT is replaced whole.
    """
    from tsrepo.deploy import k8s, uri
    from tsrepo.deploy.options import DeployOptions

    loc = uri.parse(repo, endpoint_url, option="--repo")
    result = k8s.deploy(DeployOptions(loc=loc, target=target, **options), out, templates=templates)
    console = _console()
    from rich.markup import escape

    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    click.echo(f"image   {result.image}")
    click.echo(f"gpus    {result.gpus} per pod")
    for rel in sorted(result.files):
        click.echo(f"wrote   {out}/{rel}")
    click.echo(f"apply   kubectl apply -k {out}")
