"""compose/k8s, offline: the rendered overlay (and base) is valid against a pinned Kubernetes
version's schemas (kubernetes-validate, strict), and every probe path, port, argument, setting
and ConfigMap it names exists in the code, settings and compose files it deploys."""
from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

import composekit

from stgym import cli, httpserver, settings as settings_module
from stgym import httpserver

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "compose" / "k8s"
KUBERNETES_VERSION = "1.32.0"  # the kubectl on these machines; kubernetes-validate bundles it
# compose/k8s/base/kustomization.yaml: the ConfigMaps come from files outside the base.
KUSTOMIZE = ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone"]
# The monitoring guide's probe timings (docs: monitoring guide, "Kubernetes Health Checks").
LIVENESS = {"initialDelaySeconds": 30, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
READINESS = {"initialDelaySeconds": 5, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 2}


SECRETS_MOUNT = "/etc/stgym/secrets"  # where the pods mount the stgym-credentials Secret


def render(path: Path) -> list[dict]:
    assert shutil.which("kubectl"), "kubectl (with kustomize) is needed to build compose/k8s"
    result = subprocess.run([*KUSTOMIZE, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {path} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=["overlays/production", "base"])
def docs(request) -> list[dict]:
    return render(K8S / request.param)


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def pod_specs(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            yield d["metadata"]["name"], d["spec"]["template"]


def containers(docs):
    for name, template in pod_specs(docs):
        for container in template["spec"]["containers"]:
            yield name, template, container


def test_valid_against_pinned_kubernetes(docs):
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {error.message} at "
                        f"{'.'.join(map(str, error.path))}")


def test_stream_probes_are_the_guides_and_answer_on_the_stream_server(docs):
    stream = by_kind(docs, "Deployment")["stgym-stream"]
    (container,) = stream["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["web"] == settings_module.Settings().stream_web_port
    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert {k: live[k] for k in LIVENESS} == LIVENESS
    assert {k: ready[k] for k in READINESS} == READINESS
    # The stream worker's own HTTP server answers both probe paths (readiness 503 = not ready).
    server = httpserver.serve(0, CollectorRegistry(), lambda: (False, {}))
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for probe, expected in ((live, 200), (ready, 503)):
            assert probe["httpGet"]["port"] in ports
            try:
                code = urllib.request.urlopen(base + probe["httpGet"]["path"], timeout=5).status
            except urllib.error.HTTPError as error:
                code = error.code
            assert code == expected, probe["httpGet"]["path"]
    finally:
        server.shutdown()


def test_every_probe_and_scrape_port_is_a_declared_container_port(docs):
    for name, template, container in containers(docs):
        declared = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
        for kind in ("livenessProbe", "readinessProbe"):
            if kind in container:
                port = container[kind]["httpGet"]["port"]
                assert port in declared or port in declared.values(), f"{name}: {kind} port {port}"
        annotations = template["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true" and container["image"].endswith(
                ("spin-torque-gym", "spin-torque-gym:0.1.0")):
            assert int(annotations["prometheus.io/port"]) in declared.values(), name
            assert annotations["prometheus.io/path"] == "/metrics"


def _expand(arg: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), "0"), arg)


def test_stgym_containers_parse_with_the_cli_and_use_the_settings_ports(docs):
    """Every stgym container's args are a valid `stgym` command line; the ports match the
    settings, and every STGYM_* variable it gets names a settings field."""
    s = settings_module.Settings()
    fields = {f"STGYM_{f.name.upper()}" for f in dataclasses.fields(settings_module.Settings)}
    config_maps = by_kind(docs, "ConfigMap")
    seen = set()
    for name, template, container in containers(docs):
        if "spin-torque-gym" not in container["image"]:
            continue
        # a downward-API value (pod IP, completion index) stands in as "0"
        env = {e["name"]: e.get("value", "0") for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            env.update(config_maps[source["configMapRef"]["name"]]["data"])
        unknown = {k for k in env if k.startswith("STGYM_")} - fields - {"STGYM_WORKER_INDEX"}
        assert not unknown, f"{name}: no such settings field {unknown}"
        args = cli.build_parser().parse_args([_expand(a, env) for a in container["args"]])
        seen.add(args.command)
        if args.command == "train":
            assert args.metrics_port == s.trainer_metrics_port
            assert args.bus == f"kafka://stgym-services:{s.kafka_sasl_port}"
            assert env["STGYM_KAFKA_SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
            assert args.workers == 1 and "--first-worker=$(STGYM_WORKER_INDEX)" in container["args"]
        if args.command == "stream":
            assert args.web_port == s.stream_web_port
        if args.command == "alerts":
            ports = [p["containerPort"] for p in container["ports"]]
            assert ports == [s.alert_webhook_port]
    assert seen == {"train", "stream", "alerts"}


def test_trainers_are_an_indexed_job_numbered_by_completion_index(docs):
    job = by_kind(docs, "Job")["stgym-train"]
    assert job["spec"]["completionMode"] == "Indexed"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    index = {e["name"]: e for e in container["env"]}["STGYM_WORKER_INDEX"]
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['batch.kubernetes.io/job-completion-index']")


def test_config_maps_are_the_compose_files(docs):
    config_maps = {name.rsplit("-", 1)[0]: d for name, d in by_kind(docs, "ConfigMap").items()}
    prometheus = config_maps["prometheus-config"]["data"]
    for rules in ("alert_rules.yml", "recording_rules.yml"):
        assert prometheus[rules] == (REPO / "compose" / "prometheus" / rules).read_text()
    assert prometheus["prometheus.yml"] == (K8S / "base" / "prometheus-config.yml").read_text()
    scrape = yaml.safe_load(prometheus["prometheus.yml"])
    assert set(scrape["rule_files"]) == {"alert_rules.yml", "recording_rules.yml"}
    # Alertmanager's: the compose file rendered with the webhook's bearer token from the
    # mounted Secret (the webhook checks the token it finds there, so one without it is refused).
    alertmanager = config_maps["alertmanager-config"]["data"]["alertmanager.yml"]
    assert alertmanager == (K8S / "base" / "alertmanager-config.yml").read_text()
    rendered = composekit.bare_module("render").render(REPO / "compose" / "alertmanager" / "alertmanager.yml",
                                      settings_module.Settings(secrets_dir=SECRETS_MOUNT))
    assert yaml.safe_load(alertmanager) == yaml.safe_load(rendered), (
        "compose/k8s/base/alertmanager-config.yml is out of date: regenerate it (its header)")
    token = f"{SECRETS_MOUNT}/{settings_module.ALERT_WEBHOOK_TOKEN}"
    webhooks = [w for r in yaml.safe_load(alertmanager)["receivers"] for w in r.get("webhook_configs", [])]
    assert webhooks and all(w["http_config"]["authorization"] == {"type": "Bearer", "credentials_file": token}
                            for w in webhooks)
    pod = by_kind(docs, "Deployment")["stgym-alertmanager"]["spec"]["template"]["spec"]
    for container in pod["containers"]:  # Alertmanager sends the token the webhook checks
        assert {m["mountPath"] for m in container["volumeMounts"]} >= {SECRETS_MOUNT}, container["name"]
    [credentials] = [v for v in pod["volumes"] if v["name"] == "credentials"]
    assert {i["path"] for i in credentials["secret"]["items"]} >= {settings_module.ALERT_WEBHOOK_TOKEN}
    # Every ConfigMap a pod names exists (kustomize appends the content hash to both).
    names = set(by_kind(docs, "ConfigMap"))
    for name, template, container in containers(docs):
        for source in container.get("envFrom", []):
            assert source["configMapRef"]["name"] in names, name
    for name, template in pod_specs(docs):
        for volume in template["spec"].get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in names, name


def test_secrets_are_referenced_never_inlined(docs):
    assert not by_kind(docs, "Secret"), "Secrets are created by the operator, not shipped"
    s = settings_module.Settings()
    files = {"postgres.password", "kafka.password", "alert-webhook.token", "metrics.token"}
    for name, template in pod_specs(docs):
        for volume in template["spec"].get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] == "stgym-credentials"
                assert {i["path"] for i in volume["secret"]["items"]} <= files
        for container in template["spec"]["containers"]:
            for e in container.get("env", []):
                assert "password" not in e["name"].lower() or "valueFrom" in e, name
    mounts = {m["mountPath"] for _, _, c in containers(docs) for m in c.get("volumeMounts", [])
              if m["name"] == "credentials"}
    settings_dir = by_kind(docs, "ConfigMap")
    (stgym,) = [d for n, d in settings_dir.items() if n.startswith("stgym-settings")]
    assert mounts == {stgym["data"]["STGYM_SECRETS_DIR"]}
    assert s.secret_path("postgres.password").name == "postgres.password"


def test_every_container_has_requests_and_limits(docs):
    for name, _, container in containers(docs):
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), f"{name}/{container['name']}"


def test_services_and_disruption_budget_select_the_pods(docs):
    pods = {name: t["metadata"]["labels"] for name, t in pod_specs(docs)}

    def selected(selector):
        return [n for n, labels in pods.items() if selector.items() <= labels.items()]

    for name, service in by_kind(docs, "Service").items():
        if service["spec"].get("type") == "ExternalName":
            continue
        assert selected(service["spec"]["selector"]), f"Service {name} selects no pod"
    (pdb,) = by_kind(docs, "PodDisruptionBudget").values()
    assert selected(pdb["spec"]["selector"]["matchLabels"]) == ["stgym-stream"]
    assert pdb["spec"]["minAvailable"] < by_kind(docs, "Deployment")["stgym-stream"]["spec"]["replicas"]


def test_prometheus_scrapes_the_annotated_pods_with_the_rules_job_names(docs):
    config = yaml.safe_load(next(d for n, d in by_kind(docs, "ConfigMap").items()
                                 if n.startswith("prometheus-config"))["data"]["prometheus.yml"])
    pods_job = next(j for j in config["scrape_configs"] if j["job_name"] == "pods")
    assert pods_job["kubernetes_sd_configs"][0]["role"] == "pod"
    jobs = {t["metadata"]["annotations"]["prometheus.io/job"] for _, t in pod_specs(docs)
            if t["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true"}
    bare = yaml.safe_load((REPO / "compose" / "prometheus" / "prometheus.yml").read_text())
    assert jobs <= {j["job_name"] for j in bare["scrape_configs"]}
    # The pods' /metrics ask for the metrics token: Prometheus sends the mounted Secret's, as
    # render.py makes the bare machine's Prometheus send its (the file is its own rendering).
    token = f"{SECRETS_MOUNT}/{settings_module.METRICS_TOKEN}"
    assert pods_job["authorization"] == {"type": "Bearer", "credentials_file": token}
    rendered = composekit.bare_module("render").with_scrape_token(
        yaml.safe_load(yaml.safe_dump(config)), settings_module.Settings(secrets_dir=SECRETS_MOUNT))
    assert rendered == config, "compose/k8s/base/prometheus-config.yml lacks the scrape token"
    prometheus = by_kind(docs, "Deployment")["stgym-prometheus"]
    for name, template in pod_specs(docs):
        if name in ("stgym-stream", "stgym-train", "stgym-prometheus"):
            [credentials] = [v for v in template["spec"]["volumes"] if v["name"] == "credentials"]
            assert settings_module.METRICS_TOKEN in {i["path"] for i in credentials["secret"]["items"]}, name
            for container in template["spec"]["containers"]:
                assert SECRETS_MOUNT in {m["mountPath"] for m in container["volumeMounts"]}, name
    args = prometheus["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--web.enable-admin-api" not in args
    assert json.dumps(args)  # rendered args are plain strings
