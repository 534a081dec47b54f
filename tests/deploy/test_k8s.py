"""deploy/k8s and its GPU overlay deploy/k8s-gpu, as kustomize renders them.

No cluster here: kubectl's own kustomize renders each directory as `kubectl apply -k` would, every object is
validated against the Kubernetes API schemas (kubernetes-validate, strict), and the contracts with
docker-compose.yml and serving_config/ are read from the files.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import pytest

from tests.deploy.deployfiles import (
    K8S_VERSIONS,
    SERVING_CONFIG,
    Manifests,
    flags,
    parse_text,
    project_version,
    tf_serving_config_messages,
)

# The flags that must mean the same thing under Compose and under Kubernetes.
SHARED_SERVING_FLAGS = (
    "model_config_file",
    "enable_batching",
    "batching_parameters_file",
    "monitoring_config_file",
    "port",
    "rest_api_port",
    "grpc_channel_arguments",
)
PINNED_TAG = re.compile(r"^[\w./-]+:(?!latest$)[\w][\w.-]*$")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture(params=["k8s", "k8s_gpu"])
def manifests(request: pytest.FixtureRequest) -> Manifests:
    """Each of the two kustomizations, rendered: deploy/k8s and deploy/k8s-gpu."""
    rendered: Manifests = request.getfixturevalue(request.param)
    return rendered


# --- both kustomizations ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_objects_validate_against_the_kubernetes_schema(version: str, manifests: Manifests) -> None:
    """Every object kustomize renders is valid for the Kubernetes API, unknown fields rejected (strict)."""
    assert {o["kind"] for o in manifests.objects} == {
        "Namespace",
        "ConfigMap",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
    }
    for obj in manifests.objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_k8s_objects_share_one_namespace(manifests: Manifests) -> None:
    """All namespaced objects live in the classify-objects namespace the manifests create, under restricted PSS."""
    namespace = manifests.get("Namespace", "classify-objects")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {o["metadata"]["namespace"] for o in manifests.objects if o["kind"] != "Namespace"} == {"classify-objects"}


def test_every_pod_runs_as_non_root(manifests: Manifests) -> None:
    """Every container, init containers included, runs as non-root without privilege escalation, with limits."""
    for deployment in manifests.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        for container in pod.get("initContainers", []) + pod["containers"]:
            context = container["securityContext"]
            assert context.get("runAsNonRoot", True) is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["limits"] and container["resources"]["requests"]


def test_every_k8s_image_tag_is_pinned(manifests: Manifests) -> None:
    """Every image carries an explicit tag other than `latest`; the project's own carry the project version."""
    images = [c["image"] for c in manifests.containers()]
    assert len(images) == 3
    for image in images:
        assert PINNED_TAG.match(image), image
    own = sorted(i for i in images if i.startswith("classify-objects/"))
    version = project_version()
    assert own == [f"classify-objects/converter:{version}", f"classify-objects/proxy:{version}"]


# --- deploy/k8s ------------------------------------------------------------------------------------------


def test_serving_service_is_headless(k8s: Manifests) -> None:
    """The serving Service is headless and offers gRPC on 8500 and REST on 8501."""
    service = k8s.get("Service", "serving")
    assert service["spec"]["clusterIP"] == "None"
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"grpc": 8500, "http": 8501}
    labels = k8s.get("Deployment", "serving")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()


def test_proxy_serving_address_is_the_headless_service(k8s: Manifests) -> None:
    """The proxy's SERVING_ADDRESS is dns:/// + the headless Service's cluster DNS name and gRPC port."""
    env = {e["name"]: e.get("value") for e in k8s.container("proxy", "proxy")["env"]}
    match = re.fullmatch(r"dns:///([\w-]+)\.([\w-]+)\.svc\.cluster\.local:(\d+)", env["SERVING_ADDRESS"])
    assert match, env["SERVING_ADDRESS"]
    service = k8s.get("Service", match.group(1))
    assert service["metadata"]["namespace"] == match.group(2)
    assert service["spec"]["clusterIP"] == "None"
    assert int(match.group(3)) in {p["port"] for p in service["spec"]["ports"]}


def test_proxy_service_maps_80_to_8000(k8s: Manifests) -> None:
    """The proxy Service is a ClusterIP on port 80 forwarding to the container's port 8000."""
    service = k8s.get("Service", "proxy")
    assert service["spec"]["type"] == "ClusterIP"
    (port,) = service["spec"]["ports"]
    container_ports = {p["name"]: p["containerPort"] for p in k8s.container("proxy", "proxy")["ports"]}
    assert port["port"] == 80 and container_ports[port["targetPort"]] == 8000


def test_serving_args_match_compose(k8s: Manifests, compose: dict[str, Any]) -> None:
    """Kubernetes passes TF Serving the same configuration flags as docker-compose.yml."""
    k8s_flags = flags(k8s.container("serving", "serving")["args"])
    compose_flags = flags(compose["services"]["serving"]["command"])
    for name in SHARED_SERVING_FLAGS:
        assert k8s_flags[name] == compose_flags[name], name
    assert "grpc.max_connection_age_ms=" in k8s_flags["grpc_channel_arguments"]
    assert set(k8s_flags) - set(compose_flags) <= {"tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism"}


def test_serving_config_map_holds_the_serving_config_files(k8s: Manifests) -> None:
    """The only ConfigMap, mounted at /config, holds exactly the serving_config/ files the flags name, unchanged."""
    mounts = {m["mountPath"]: m["name"] for m in k8s.container("serving", "serving")["volumeMounts"]}
    volume = next(v for v in k8s.pod("serving")["volumes"] if v["name"] == mounts["/config"])
    (config_map,) = k8s.of_kind("ConfigMap")
    assert config_map["metadata"]["name"] == volume["configMap"]["name"]
    found = flags(k8s.container("serving", "serving")["args"])
    named = {
        found[f].removeprefix("/config/")
        for f in ("model_config_file", "batching_parameters_file", "monitoring_config_file")
    }
    assert set(config_map["data"]) == named
    for name, content in config_map["data"].items():
        assert content == (SERVING_CONFIG / name).read_text(encoding="utf-8")


def test_serving_probes_check_model_availability(k8s: Manifests, compose: dict[str, Any]) -> None:
    """Serving pods are ready once the model is AVAILABLE (the compose healthcheck), alive while REST answers."""
    serving = k8s.container("serving", "serving")
    compose_check = compose["services"]["serving"]["healthcheck"]["test"]
    for probe in ("startupProbe", "readinessProbe"):
        assert ["CMD", *serving[probe]["exec"]["command"]] == compose_check, probe
        assert serving[probe]["timeoutSeconds"] > 5  # the script's own `timeout 5` must fire first
    assert serving["livenessProbe"]["httpGet"] == {"path": "/v1/models/detector", "port": "http"}


def test_proxy_probes_use_readyz_and_healthz(k8s: Manifests) -> None:
    """The proxy is ready on GET /readyz (backend available) and alive on GET /healthz."""
    proxy = k8s.container("proxy", "proxy")
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert proxy["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert proxy["startupProbe"]["httpGet"]["path"] == "/healthz"


def test_init_container_runs_the_compose_converter_command(k8s: Manifests, compose: dict[str, Any]) -> None:
    """The serving pod's initContainer passes the converter image the compose service's arguments, with no shell."""
    init = k8s.container("serving", "convert")
    converter = compose["services"]["converter"]
    assert "command" not in init and "entrypoint" not in converter  # both run the image's `python -m converter`
    assert init["args"] == converter["command"]
    assert init["image"].split(":")[0] == converter["image"].split(":")[0]
    init_mounts = {m["mountPath"]: m for m in init["volumeMounts"]}
    serving_mounts = {m["mountPath"]: m for m in k8s.container("serving", "serving")["volumeMounts"]}
    assert init_mounts["/models"]["name"] == serving_mounts["/models"]["name"]
    assert serving_mounts["/models"]["readOnly"] is True
    assert init_mounts["/input"]["readOnly"] is True
    # The root filesystem is read-only: TensorFlow's caches go to the writable /tmp.
    assert {e["name"]: e["value"] for e in init["env"]}["HOME"] == "/tmp" and "/tmp" in init_mounts


def test_hpas_scale_the_deployments_on_cpu(k8s: Manifests) -> None:
    """Each HorizontalPodAutoscaler scales an existing Deployment on CPU utilization of its CPU requests."""
    hpas = k8s.of_kind("HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == {"serving", "proxy"}
    for hpa in hpas:
        spec = hpa["spec"]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert spec["scaleTargetRef"]["kind"] == "Deployment"
        pod = k8s.pod(spec["scaleTargetRef"]["name"])
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        (metric,) = spec["metrics"]
        assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
        assert metric["resource"]["target"]["type"] == "Utilization"
        # Utilization is relative to the request: without one the HPA cannot compute it.
        assert all("cpu" in c["resources"]["requests"] for c in pod["containers"])


def test_prometheus_annotations_match_monitoring_config(k8s: Manifests) -> None:
    """The serving pods advertise the metrics path monitoring.config enables, on the REST port."""
    annotations = k8s.get("Deployment", "serving")["spec"]["template"]["metadata"]["annotations"]
    monitoring = parse_text(SERVING_CONFIG / "monitoring.config", tf_serving_config_messages()["MonitoringConfig"])
    assert annotations["prometheus.io/path"] == monitoring.prometheus_config.path
    assert annotations["prometheus.io/port"] == "8501"


# --- deploy/k8s-gpu --------------------------------------------------------------------------------------


def test_gpu_serving_gets_one_gpu_and_the_gpu_image(k8s_gpu: Manifests, k8s: Manifests) -> None:
    """The overlay's serving container runs the -gpu tag of the base's release and has one nvidia.com/gpu."""
    serving = k8s_gpu.container("serving", "serving")
    assert serving["image"] == k8s.container("serving", "serving")["image"] + "-gpu"
    limits = serving["resources"]["limits"]
    assert str(limits["nvidia.com/gpu"]) == "1"
    # An extended resource may only be requested through its limit (a request, if any, must be equal).
    assert str(serving["resources"].get("requests", {}).get("nvidia.com/gpu", "1")) == "1"
    # The converter only rewrites a graph: it takes no GPU.
    assert "nvidia.com/gpu" not in k8s_gpu.container("serving", "convert")["resources"]["limits"]


def test_gpu_serving_pods_tolerate_gpu_nodes(k8s_gpu: Manifests) -> None:
    """The overlay's serving pods tolerate the nvidia.com/gpu NoSchedule taint of GPU nodes."""
    assert GPU_TOLERATION in k8s_gpu.pod("serving")["tolerations"]


def test_gpu_overlay_changes_only_the_serving_pods(k8s_gpu: Manifests, k8s: Manifests) -> None:
    """Apart from serving's image, GPU limit, memory limit and toleration, the overlay renders deploy/k8s unchanged."""
    gpu = copy.deepcopy(k8s_gpu.objects)
    pod = next(o for o in gpu if o["kind"] == "Deployment" and o["metadata"]["name"] == "serving")["spec"]["template"]
    pod["spec"].pop("tolerations")
    (serving,) = [c for c in pod["spec"]["containers"] if c["name"] == "serving"]
    serving["image"] = serving["image"].removesuffix("-gpu")
    del serving["resources"]["limits"]["nvidia.com/gpu"]
    base_serving = k8s.container("serving", "serving")
    # More host memory for CUDA's libraries, never less than the base allows.
    assert _gib(serving["resources"]["limits"]["memory"]) >= _gib(base_serving["resources"]["limits"]["memory"])
    serving["resources"]["limits"]["memory"] = base_serving["resources"]["limits"]["memory"]
    assert gpu == k8s.objects


def _gib(quantity: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi)", quantity)
    assert match, quantity
    return float(match.group(1)) / (1024 if match.group(2) == "Mi" else 1)
