"""`tsrepo deploy k8s --target kserve`: an InferenceService for KServe's Triton runtime.

KServe's runtime starts `tritonserver --model-store=/mnt/models` on what its storage initializer
downloaded from `storageUri`, with the image tag given as `runtimeVersion`; S3 credentials reach it
through a ServiceAccount that lists the operator's Secret.
"""

from __future__ import annotations

from pathlib import Path

from tsrepo.deploy import render
from tsrepo.deploy.options import DeployOptions

FILES = {
    "serviceaccount.yaml": "kserve/serviceaccount.yaml.j2",
    "inferenceservice.yaml": "kserve/inferenceservice.yaml.j2",
}


def endpoint_annotations(o: DeployOptions) -> dict:
    if o.loc.endpoint_url is None:
        return {}
    scheme, _, host = o.loc.endpoint_url.partition("://")
    return {"serving.kserve.io/s3-endpoint": host, "serving.kserve.io/s3-usehttps": "1" if scheme == "https" else "0"}


def render_kserve(o: DeployOptions, models, out_name: str, templates: Path | None = None):
    from tsrepo.deploy import k8s  # k8s imports this module

    _image, tag, warnings = k8s.choose_image(o, models)
    gpus, requests, limits = k8s.plan_resources(o, models)
    all_labels, _selector = k8s.labels(o)
    context = {
        "name": o.name,
        "uri": o.loc.uri(),
        "labels": all_labels,
        "service_account": f"{o.name}-storage",
        "annotations": endpoint_annotations(o),
        "secret": o.secret,
        "min_replicas": o.min_r,
        "max_replicas": o.max_r,
        "runtime_version": tag,
        "args": list(k8s.TRITON_ARGS),
        "requests": requests,
        "limits": limits,
        "out_name": out_name,
    }
    env = render.environment(templates)
    files = {rel: render.render(env, tpl, context) for rel, tpl in FILES.items()}
    files["kustomization.yaml"] = render.render(
        env, "kserve/kustomization.yaml.j2", {**context, "resources": list(FILES)}
    )
    docs = render.parse_back(files)
    model = render.require(docs["inferenceservice.yaml"][0], "spec.predictor.model", "inferenceservice.yaml")
    if (
        model.get("modelFormat") != {"name": "triton"}
        or model.get("protocolVersion") != "v2"
        or model.get("storageUri") != o.loc.uri()
        or model.get("runtimeVersion") != tag
    ):
        raise k8s.render_error("inferenceservice.yaml", "modelFormat, protocolVersion, storageUri or runtimeVersion")
    return k8s.Rendered(files, tag, gpus, warnings)
