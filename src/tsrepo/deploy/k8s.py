"""`tsrepo deploy k8s`: the manifests that run Triton on a pushed repository.

Plain manifests with a kustomization, not a Helm chart: no registry this project installs from
ships a `helm` binary, and a chart that no test can lint or render is a chart nobody has checked.
Every file here is rendered, parsed back and validated against the Kubernetes schemas in the tests.

What the models decide: a KIND_GPU instance group asks for `nvidia.com/gpu`, and `--image auto`
picks the Triton release whose PyTorch loads what tsrepo.json says exported the models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tsrepo.deploy import kserve, pull, render
from tsrepo.deploy.errors import DeployError
from tsrepo.deploy.options import DeployOptions, check, image_parts
from tsrepo.serve import containers

METRIC = "avg_time_queue_us"
METRICS_QUERY = (
    "avg(delta(nv_inference_queue_duration_us{<<.LabelMatchers>>}[30s])"
    "/(1+delta(nv_inference_request_success{<<.LabelMatchers>>}[30s]))) by (<<.GroupBy>>)"
)
K8S_FILES = {  # output file -> template; the first five are the kustomization's resources
    "deployment.yaml": "k8s/deployment.yaml.j2",
    "service.yaml": "k8s/service.yaml.j2",
    "pdb.yaml": "k8s/pdb.yaml.j2",
    "servicemonitor.yaml": "k8s/servicemonitor.yaml.j2",
    "hpa.yaml": "k8s/hpa.yaml.j2",
    "prometheus-adapter/values.yaml": "k8s/prometheus-adapter-values.yaml.j2",
}
TRITON_ARGS = (  # as docker/docker-compose.yml starts the server
    "--disable-auto-complete-config",
    "--model-control-mode=explicit",
    "--load-model=*",
    "--exit-on-error=true",
)


@dataclass
class Rendered:
    files: dict[str, str]  # relative path -> text
    image: str
    gpus: int
    warnings: list[str] = field(default_factory=list)


def gpus_needed(models: list[pull.RemoteModel]) -> tuple[int, list[str]]:
    """GPUs one pod needs: the highest GPU id any KIND_GPU group names plus one, else 1 if any is KIND_GPU."""
    from tritonclient.grpc import model_config_pb2 as pb

    needed, users = 0, []
    for m in models:
        for g in m.config.instance_group:
            if g.kind == pb.ModelInstanceGroup.KIND_GPU:
                users.append(m.name)
                needed = max(needed, (max(g.gpus) + 1) if g.gpus else 1)
    return needed, sorted(set(users))


def choose_image(o: DeployOptions, models: list[pull.RemoteModel]) -> tuple[str, str, list[str]]:
    """(image, tag, warnings) from --image, or from the torch versions recorded in tsrepo.json."""
    if o.image != "auto":
        full, tag = image_parts(o.image)
        return full, tag, []
    recorded = [(e.torch_minor(), e.torch) for m in models if m.record for e in m.record.versions.values()]
    if not recorded:
        raise DeployError(
            f"{o.loc.describe()}: no tsrepo.json there records the torch that exported the models, so --image auto"
            " cannot choose; pass --image TAG"
        )
    formats = [e.file_format_version for m in models if m.record for e in m.record.versions.values()]
    known = [f for f in formats if f is not None]
    # The same rule as compose: AOTInductor packages need 26.03+, batched ones 26.06+.
    aoti = [m.config for m in models if m.config.platform == "torch_aoti"]
    batched = any(cfg.max_batch_size > 1 and cfg.HasField("dynamic_batching") for cfg in aoti)
    choice = containers.choose(max(recorded)[1], max(known) if known else None, aoti=bool(aoti), aoti_batched=batched)
    warnings = [choice.warning] if choice.warning else []
    unknown = [m.name for m in models if not (m.record and m.record.versions)]
    if unknown:
        warnings.append(
            f"{', '.join(unknown)}: no tsrepo.json records the exporting torch; the image does not cover it"
        )
    return choice.image, f"{choice.release}-py3", warnings


def plan_resources(o: DeployOptions, models: list[pull.RemoteModel]) -> tuple[int, dict, dict]:
    needed, users = gpus_needed(models)
    gpus = needed if o.gpus is None else o.gpus
    if gpus < needed:
        raise DeployError(
            f"--gpus {gpus}: {', '.join(users)} {'has' if len(users) == 1 else 'have'} KIND_GPU instance groups"
            f" needing {needed} GPU(s) per pod; Triton would fail to load them. Pass --gpus {needed} or more, or"
            ' build them with kind = "cpu"'
        )
    requests = {"cpu": o.cpu, "memory": o.memory}
    limits: dict = {"memory": o.memory}
    if gpus:
        limits["nvidia.com/gpu"] = gpus
    return gpus, requests, limits


def labels(o: DeployOptions) -> tuple[dict, dict]:
    selector = {"app.kubernetes.io/name": "triton-inference-server", "app.kubernetes.io/instance": o.name}
    return {**selector, "app.kubernetes.io/managed-by": "tsrepo"}, selector


def render_k8s(o: DeployOptions, models: list[pull.RemoteModel], out_name: str, templates: Path | None = None):
    image, _tag, warnings = choose_image(o, models)
    gpus, requests, limits = plan_resources(o, models)
    all_labels, selector = labels(o)
    context = {
        "name": o.name,
        "uri": o.loc.triton_uri(),
        "labels": all_labels,
        "selector": selector,
        "replicas": o.replicas,
        "min_replicas": o.min_r,
        "max_replicas": o.max_r,
        "image": image,
        "args": [f"--model-repository={o.loc.triton_uri()}", *TRITON_ARGS],
        "secret": o.secret,
        "requests": requests,
        "limits": limits,
        "shm_size": o.shm_size,
        "startup_seconds": o.startup_seconds,
        "startup_failures": -(-o.startup_seconds // 10),
        "metric": METRIC,
        "metrics_query": METRICS_QUERY,
        "queue_target_us": o.queue_target_us,
        "out_name": out_name,
        "ops": op_libraries(o, models),
    }
    env = render.environment(templates)
    files = {rel: render.render(env, tpl, context) for rel, tpl in K8S_FILES.items()}
    resources = [rel for rel in K8S_FILES if "/" not in rel]
    files["kustomization.yaml"] = render.render(env, "k8s/kustomization.yaml.j2", {**context, "resources": resources})
    prove_k8s(render.parse_back(files), o, image, gpus)
    return Rendered(files, image, gpus, warnings)


OPS_MOUNT = "/opt/tsrepo/ops"


def op_libraries(o: DeployOptions, models: list[pull.RemoteModel]) -> dict | None:
    """The custom-op libraries the models record, as the pod loads them: from a ConfigMap mounted at
    OPS_MOUNT and preloaded (Triton's PyTorch backend has no config field for op libraries; the server
    docs' rule is LD_PRELOAD with the backend's folder on LD_LIBRARY_PATH). None when there are none."""
    libraries = sorted({Path(p).name for m in models if m.record for p in m.record.libraries()})
    if not libraries:
        return None
    if o.ops_configmap is None:
        raise DeployError(
            f"the models record custom-op libraries ({', '.join(libraries)}) the server must preload: create a"
            f" ConfigMap with them (kubectl create configmap triton-ops --from-file={libraries[0]} ...; a ConfigMap"
            " holds up to 1 MiB) and pass --ops-configmap triton-ops"
        )
    preload = ":".join(f"{OPS_MOUNT}/{name}" for name in libraries)
    script = (
        f"export LD_PRELOAD={preload} LD_LIBRARY_PATH=/opt/tritonserver/backends/pytorch:${{LD_LIBRARY_PATH:-}};"
        ' exec tritonserver "$@"'
    )
    return {"configmap": o.ops_configmap, "mount": OPS_MOUNT, "script": script, "libraries": libraries}


def prove_k8s(docs: dict[str, list[dict]], o: DeployOptions, image: str, gpus: int) -> None:
    """The fields the manifests exist for, read back from the rendered YAML."""
    dep = docs["deployment.yaml"][0]
    container = render.require(dep, "spec.template.spec.containers", "deployment.yaml")[0]
    if container.get("image") != image or f"--model-repository={o.loc.triton_uri()}" not in container.get("args", []):
        raise render_error("deployment.yaml", "the image or --model-repository argument")
    limit = render.require(container, "resources.limits", "deployment.yaml").get("nvidia.com/gpu", 0)
    if limit != gpus:
        raise render_error("deployment.yaml", "the nvidia.com/gpu limit")
    for probe, path in (("livenessProbe", "/v2/health/live"), ("readinessProbe", "/v2/health/ready")):
        if render.require(container, f"{probe}.httpGet.path", "deployment.yaml") != path:
            raise render_error("deployment.yaml", probe)
    if o.ops_configmap is not None and "LD_PRELOAD" in " ".join(map(str, container.get("command", []))):
        volumes = render.require(dep, "spec.template.spec.volumes", "deployment.yaml")
        if not any(v.get("configMap", {}).get("name") == o.ops_configmap for v in volumes):
            raise render_error("deployment.yaml", "the op-library ConfigMap volume")
    hpa = docs["hpa.yaml"][0]
    if hpa.get("apiVersion") != "autoscaling/v2" or render.require(hpa, "spec.maxReplicas", "hpa.yaml") != o.max_r:
        raise render_error("hpa.yaml", "apiVersion autoscaling/v2 or maxReplicas")
    kustomization = docs["kustomization.yaml"][0]
    if sorted(kustomization.get("resources", [])) != sorted(
        r for r in docs if r.endswith(".yaml") and "/" not in r and r != "kustomization.yaml"
    ):
        raise render_error("kustomization.yaml", "the list of resources")


def render_error(rel: str, what: str) -> DeployError:
    return DeployError(f"{rel}: the rendered manifest lost {what}; check templates/deploy/")


def deploy(o: DeployOptions, out: Path, models: list[pull.RemoteModel] | None = None, templates: Path | None = None):
    """Check the options and --out, read the models' configs from the bucket, render, prove, write."""
    check(o)
    render.check_out(out)
    bucket_warnings: list[str] = []  # what the bucket's listing says against the records
    models = models if models is not None else pull.read_models(o.loc, warn=bucket_warnings.append)
    if o.target == "kserve":
        result = kserve.render_kserve(o, models, Path(out).name, templates)
    else:
        result = render_k8s(o, models, Path(out).name, templates)
    result.warnings[:0] = bucket_warnings
    render.write(out, result.files)
    return result
