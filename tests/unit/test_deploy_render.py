"""`tsrepo deploy k8s`: rendered manifests match the golden files and pass the Kubernetes schemas.

Schemas: kubernetes-validate (PyPI) ships the JSON schemas of every Kubernetes release and validates
offline; strict mode also refuses unknown fields. ServiceMonitor and InferenceService are custom
resources whose schemas it does not ship: their fields are checked here one by one.
"""

from __future__ import annotations

import os
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo import meta
from tsrepo.deploy import k8s, pull, uri
from tsrepo.deploy.errors import DeployError
from tsrepo.deploy.options import DeployOptions
from tsrepo.serve import containers

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "deploy"
K8S_VERSION = "1.30"  # the oldest Kubernetes still maintained by its cloud vendors; newer ones validate too
LOC = uri.parse("s3://models-bucket/triton/prod", "http://minio.storage:9000")


def example_models() -> list[pull.RemoteModel]:
    """The committed example repository's configs and records, as `read_models` returns them from S3."""
    out = []
    for d in sorted(p for p in (ROOT / "model_repository").iterdir() if p.is_dir()):
        cfg = text_format.Parse((d / "config.pbtxt").read_text(), pb.ModelConfig())
        out.append(pull.RemoteModel(d.name, cfg, meta.load_model(d)))
    return out


def render_to(tmp_path: Path, **options) -> dict[str, str]:
    out = tmp_path / "out"
    k8s.deploy(DeployOptions(loc=LOC, image="25.10-py3", **options), out, models=example_models())
    return {p.relative_to(out).as_posix(): p.read_text() for p in sorted(out.rglob("*")) if p.is_file()}


def compare_with_golden(files: dict[str, str], name: str) -> None:
    folder = GOLDEN / name
    if os.environ.get("TSREPO_UPDATE_GOLDEN"):
        for rel, text in files.items():
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            (folder / rel).write_text(text)
    golden = {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}
    assert files == golden, f"rendered files differ from {folder}; TSREPO_UPDATE_GOLDEN=1 rewrites them after review"


def documents(files: dict[str, str]) -> list[tuple[str, dict]]:
    return [(rel, d) for rel, text in files.items() if rel.endswith(".yaml") for d in yaml.safe_load_all(text) if d]


@pytest.mark.parametrize("version", [K8S_VERSION, kubernetes_validate.latest_version()])
def test_every_core_manifest_passes_the_kubernetes_schemas_strictly(tmp_path, version):
    files = render_to(tmp_path)
    kinds = set()
    for rel, doc in documents(files):
        if rel == "kustomization.yaml" or rel.startswith("prometheus-adapter/") or doc["kind"] == "ServiceMonitor":
            continue
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.add(doc["kind"])
    assert kinds == {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"}


def test_the_validator_is_real_it_refuses_a_broken_deployment(tmp_path):
    doc = yaml.safe_load(render_to(tmp_path)["deployment.yaml"])
    doc["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    doc = yaml.safe_load(render_to(tmp_path / "b")["hpa.yaml"])
    doc["apiVersion"] = "autoscaling/v2beta2"  # what NVIDIA's chart still renders
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_manifests_match_the_golden_files(tmp_path):
    compare_with_golden(render_to(tmp_path), "k8s")


def test_kserve_inference_service_matches_the_golden_files_and_its_fields(tmp_path):
    files = render_to(tmp_path, target="kserve")
    compare_with_golden(files, "kserve")
    docs = dict((d["kind"], d) for _rel, d in documents(files) if "kind" in d)
    kubernetes_validate.validate(docs["ServiceAccount"], K8S_VERSION, strict=True)
    isvc = docs["InferenceService"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    model = isvc["spec"]["predictor"]["model"]
    assert model["modelFormat"] == {"name": "triton"} and model["protocolVersion"] == "v2"
    assert model["storageUri"] == "s3://models-bucket/triton/prod" and model["runtimeVersion"] == "25.10-py3"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert docs["ServiceAccount"]["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == "minio.storage:9000"


def test_deployment_carries_what_triton_on_kubernetes_needs(tmp_path):
    docs = dict((d["kind"], d) for _rel, d in documents(render_to(tmp_path)) if "kind" in d)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"][0] == "--model-repository=s3://http://minio.storage:9000/models-bucket/triton/prod"
    assert {"--disable-auto-complete-config", "--model-control-mode=explicit"} <= set(c["args"])
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1  # the examples are KIND_GPU
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 600
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"]["medium"] == "Memory"
    keys = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"]}
    assert keys == {"triton-s3-credentials"}
    assert {p["port"] for p in docs["Service"]["spec"]["ports"]} == {8000, 8001, 8002}
    sm = docs["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1" and sm["spec"]["endpoints"][0]["port"] == "metrics"
    assert sm["spec"]["selector"]["matchLabels"] == docs["Service"]["spec"]["selector"]
    hpa = docs["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "avg_time_queue_us"


def test_prometheus_adapter_rule_computes_queue_time_per_request(tmp_path):
    values = yaml.safe_load(render_to(tmp_path)["prometheus-adapter/values.yaml"])
    rule = values["rules"]["custom"][0]
    assert rule["name"]["as"] == "avg_time_queue_us"
    assert "delta(nv_inference_queue_duration_us{<<.LabelMatchers>>}[30s])" in rule["metricsQuery"]
    assert "/(1+delta(nv_inference_request_success{<<.LabelMatchers>>}[30s]))" in rule["metricsQuery"]


def test_image_auto_follows_the_torch_recorded_in_tsrepo_json(tmp_path):
    out = tmp_path / "auto"
    result = k8s.deploy(DeployOptions(loc=LOC), out, models=example_models())
    torch_version = max(e.torch for m in example_models() for e in m.record.versions.values())
    assert result.image == containers.choose(torch_version).image


def test_cpu_only_models_ask_for_no_gpu(tmp_path):
    models = example_models()
    for m in models:
        for g in m.config.instance_group:
            g.kind = pb.ModelInstanceGroup.KIND_CPU
    out = tmp_path / "cpu"
    result = k8s.deploy(DeployOptions(loc=LOC, image="25.10-py3"), out, models=models)
    assert result.gpus == 0 and "nvidia.com/gpu" not in (out / "deployment.yaml").read_text()


def test_strings_cannot_inject_yaml(tmp_path):
    loc = uri.parse('s3://bucket/a"b: c\\nkind: Secret', None)
    out = tmp_path / "inj"
    k8s.deploy(DeployOptions(loc=loc, image="25.10-py3"), out, models=example_models())
    doc = yaml.safe_load((out / "deployment.yaml").read_text())
    assert doc["kind"] == "Deployment"
    assert doc["spec"]["template"]["spec"]["containers"][0]["args"][0].endswith('a"b: c\\nkind: Secret')


def test_image_auto_never_picks_a_release_before_26_06_for_batched_aoti_packages(tmp_path):
    models = example_models()
    for m in models:
        m.config.platform = "torch_aoti"
        for e in m.record.versions.values():
            object.__setattr__(e, "torch", "2.5.0")  # old enough that TorchScript alone would pick 24.10
    result = k8s.deploy(DeployOptions(loc=LOC), tmp_path / "aoti", models=models)
    release = result.image.rsplit(":", 1)[1].removesuffix("-py3")
    assert release >= "26.06", result.image


def _with_op_library(models: list[pull.RemoteModel]) -> list[pull.RemoteModel]:
    import dataclasses

    first = models[0]
    ops = (meta.OpLibraryMeta("tsrepo_test", ("muladd",), "/build/libtsrepo_test_ops.so", "1" * 64),)
    models[0] = pull.RemoteModel(first.name, first.config, dataclasses.replace(first.record, op_libraries=ops))
    return models


def test_recorded_op_libraries_are_mounted_from_a_configmap_and_preloaded(tmp_path):
    out = tmp_path / "ops"
    k8s.deploy(DeployOptions(loc=LOC, image="25.10-py3", ops_configmap="triton-ops"), out, models=_with_op_library(example_models()))
    dep = yaml.safe_load((out / "deployment.yaml").read_text())
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"][:2] == ["/bin/sh", "-c"] and "LD_PRELOAD=/opt/tsrepo/ops/libtsrepo_test_ops.so" in c["command"][2]
    assert 'exec tritonserver "$@"' in c["command"][2] and c["args"][0].startswith("--model-repository=")
    assert {"name": "tsrepo-ops", "configMap": {"name": "triton-ops"}} in pod["volumes"]
    assert any(m["mountPath"] == "/opt/tsrepo/ops" and m.get("readOnly") for m in c["volumeMounts"])
    kubernetes_validate.validate(dep, K8S_VERSION, strict=True)  # the real schema accepts the additions


def test_recorded_op_libraries_without_a_configmap_are_refused_naming_the_fix(tmp_path):
    with pytest.raises(DeployError, match=r"libtsrepo_test_ops.so.*--ops-configmap"):
        k8s.deploy(DeployOptions(loc=LOC, image="25.10-py3"), tmp_path / "ops", models=_with_op_library(example_models()))
    assert not (tmp_path / "ops").exists()
