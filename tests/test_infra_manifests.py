"""Deployment files in infra/ against the parts of the KubeRay ray.io/v1 API and the Ray cluster
launcher schema that they use. No Kubernetes runs here: the field names and types below are
written down from the KubeRay API reference (ray-project.github.io/kuberay/reference/api) and
the Ray cluster launcher docs, so a typo or a wrong type fails here, not on a cluster."""

import re
import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.cli import build_parser

INFRA = Path(__file__).resolve().parent.parent / "infra"
STR, BOOL, INT, MAP_STR = "string", "bool", "int32", "map[string]string"

WORKER_GROUP = {"groupName": STR, "replicas": INT, "minReplicas": INT, "maxReplicas": INT,
                "rayStartParams": MAP_STR, "template": "PodTemplateSpec", "numOfHosts": INT,
                "idleTimeoutSeconds": INT, "suspend": BOOL}
HEAD_GROUP = {"rayStartParams": MAP_STR, "template": "PodTemplateSpec", "serviceType": STR,
              "enableIngress": BOOL}
# authOptions: KubeRay v1.5.1 and later (AuthOptions; AuthMode is "disabled" or "token")
AUTH_OPTIONS = {"mode": STR, "enableK8sTokenAuth": BOOL}
RAY_CLUSTER_SPEC = {"rayVersion": STR, "enableInTreeAutoscaling": BOOL, "headGroupSpec": HEAD_GROUP,
                    "workerGroupSpecs": [WORKER_GROUP], "suspend": BOOL, "autoscalerOptions": "object",
                    "authOptions": AUTH_OPTIONS}
RAY_JOB_SPEC = {"entrypoint": STR, "runtimeEnvYAML": STR, "rayClusterSpec": RAY_CLUSTER_SPEC,
                "clusterSelector": MAP_STR, "submissionMode": STR, "shutdownAfterJobFinishes": BOOL,
                "ttlSecondsAfterFinished": INT, "activeDeadlineSeconds": INT, "backoffLimit": INT,
                "suspend": BOOL, "entrypointNumCpus": "number", "entrypointNumGpus": "number",
                "submitterPodTemplate": "PodTemplateSpec", "metadata": MAP_STR}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
LAUNCHER_TOP = {"cluster_name", "max_workers", "upscaling_speed", "idle_timeout_minutes", "provider",
                "auth", "docker", "available_node_types", "head_node_type", "file_mounts",
                "cluster_synced_files", "rsync_exclude", "rsync_filter", "initialization_commands",
                "setup_commands", "head_setup_commands", "worker_setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands"}
NODE_TYPE = {"node_config", "resources", "min_workers", "max_workers", "worker_setup_commands",
             "docker", "labels"}


def _check(value, schema, where: str) -> None:
    if isinstance(schema, dict):
        assert isinstance(value, dict), f"{where}: expected an object"
        for key, sub in value.items():
            assert key in schema, f"{where}.{key} is not a field of the KubeRay v1 API"
            _check(sub, schema[key], f"{where}.{key}")
    elif isinstance(schema, list):
        assert isinstance(value, list), f"{where}: expected a list"
        for i, item in enumerate(value):
            _check(item, schema[0], f"{where}[{i}]")
    elif schema == STR:
        assert isinstance(value, str), f"{where}: expected a string"
    elif schema == BOOL:
        assert isinstance(value, bool), f"{where}: expected a bool"
    elif schema == INT:
        assert isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31, where
    elif schema == "number":
        assert isinstance(value, (int, float)), where
    elif schema == MAP_STR:
        assert isinstance(value, dict) and all(isinstance(v, str) for v in value.values()), \
            f"{where}: values must be strings (quote numbers)"
    elif schema == "PodTemplateSpec":
        _check_pod_template(value, where)


def _check_pod_template(template: dict, where: str) -> None:
    containers = template["spec"]["containers"]
    assert containers, f"{where}: no containers"
    for c in containers:
        assert c["name"] and c["image"], where
        for kind in ("requests", "limits"):
            for resource, amount in c.get("resources", {}).get(kind, {}).items():
                assert isinstance(amount, (str, int)), f"{where}: {resource} must be a quantity"
        for env in c.get("env", []):
            assert "value" not in env or not re.search(r"SECRET|KEY|TOKEN", env["name"]), \
                f"{where}: {env['name']} must come from a secret, not a literal value"


def _load(name: str) -> dict:
    return yaml.safe_load((INFRA / name).read_text())


def _cluster_checks(spec: dict, where: str) -> None:
    # Ray's token auth: whoever reaches the dashboard could otherwise run code with the nodes'
    # credentials. Token auth needs Ray 2.52 or later.
    assert spec["authOptions"]["mode"] == "token", f"{where}: Ray's token auth must be on"
    assert tuple(map(int, spec["rayVersion"].split(".")[:2])) >= (2, 52), where
    for group in spec["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], where
        container = group["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"].get("nvidia.com/gpu"), f"{where}: workers need GPUs"
        env_names = {e["name"] for e in container.get("env", [])}
        secret_refs = [e for e in container.get("envFrom", []) if "secretRef" in e]
        assert secret_refs or {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= env_names, where


def test_rayjob_matches_the_kuberay_v1_api_and_runs_a_valid_compress():
    job = _load("kuberay/rayjob-compress.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    _check(job["spec"], RAY_JOB_SPEC, "spec")
    assert job["spec"]["submissionMode"] in SUBMISSION_MODES
    _cluster_checks(job["spec"]["rayClusterSpec"], "rayClusterSpec")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "jobs.compress"]
    args = build_parser().parse_args(["compress", *argv[3:]])  # a real latentarc invocation
    assert args.archive.startswith("s3://")
    text = job["spec"]["entrypoint"] + job["spec"]["runtimeEnvYAML"]
    assert not re.search(r"(?i)secret|aws_access_key|password|token", text)
    env_vars = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]  # the embedded YAML parses
    assert "RAY_AUTH_MODE" not in env_vars, "the operator sets the auth mode; the job must not undo it"


def test_raycluster_matches_the_kuberay_v1_api():
    cluster = _load("kuberay/raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    _check(cluster["spec"], RAY_CLUSTER_SPEC, "spec")
    _cluster_checks(cluster["spec"], "spec")


def test_cluster_launcher_yaml_uses_known_fields_and_no_keys():
    config = _load("cluster-launcher/aws-gpu.yaml")
    assert set(config) <= LAUNCHER_TOP, set(config) - LAUNCHER_TOP
    assert config["head_node_type"] in config["available_node_types"]
    for name, node in config["available_node_types"].items():
        assert set(node) <= NODE_TYPE, (name, set(node) - NODE_TYPE)
        assert "IamInstanceProfile" in node["node_config"]  # credentials from a role
    assert "aws_secret" not in (INFRA / "cluster-launcher/aws-gpu.yaml").read_text().lower()
    # Ray's token auth on every node, from the token file that file_mounts copies to each
    starts = [c for c in (*config["head_start_ray_commands"], *config["worker_start_ray_commands"])
              if "ray start" in c]
    assert len(starts) == 2 and all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts)
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}
    # Ray's own check of the launcher schema (worker_run_options and the like)
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(config))
    docker = config["docker"]
    assert "--gpus all" not in docker["run_options"], "the head has no GPU: workers only"
    assert "/" in docker["image"], "a bare name is pulled from Docker Hub"


@pytest.mark.parametrize("name", ["docker/Dockerfile"])
def test_container_installs_the_pinned_torch_with_cuda(name):
    text = (INFRA / name).read_text()
    pinned = re.search(r'"torch==([\d.]+)"', (INFRA.parent / "pyproject.toml").read_text()).group(1)
    assert f"torch=={pinned} --index-url https://download.pytorch.org/whl/cu" in text
    assert "pip install --no-cache-dir ." in text


def test_a_plain_install_has_every_package_and_the_shipped_weights():
    """The container installs with `pip install .` (not editable): models.weights, the shipped
    weights and their registry, was left out, and `import models.registry` failed there."""
    import fnmatch
    import tomllib

    root = INFRA.parent
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(root).parts)
             for top in ("pipeline", "models", "jobs") for p in (root / top).rglob("__init__.py")}
    assert found <= set(setup["packages"]), found - set(setup["packages"])
    patterns = setup["package-data"]["models.weights"]
    shipped = [p.name for p in (root / "models" / "weights").iterdir() if p.suffix != ".py"]
    assert shipped and all(any(fnmatch.fnmatch(n, pat) for pat in patterns) for n in shipped)
