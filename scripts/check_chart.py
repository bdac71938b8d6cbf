#!/usr/bin/env python3
"""Checks the Helm chart in helm/siphon with Helm's own engine.

For the chart's defaults and every helm/siphon/ci/*-values.yaml scenario it
lints, renders, validates each manifest against the Kubernetes OpenAPI
schemas, and asserts what siphon needs from its pod: connector files in the
ConfigMap verbatim, a config checksum that rolls the pod, one replica with
the Recreate strategy, probes on the health endpoints, a restricted security
context, a grace period longer than siphon's shutdown grace, and credentials
only from Secrets. It also feeds values that break the schema and expects
Helm to refuse them, and keeps values.yaml, values.schema.json, the chart
README and the Dockerfile in step.

Prints one line per check and `N passed, M failed` last; exits 1 on any
failure. Run it through scripts/check-chart.sh, which prepares the venv
(helm-python-sdk, kubernetes-validate, pyyaml).
"""

from __future__ import annotations

import copy
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "siphon"
DOCKERFILE = ROOT / "Dockerfile"
RELEASE = "cdc"
NAMESPACE = "data"
# A recent Kubernetes release whose schemas kubernetes-validate ships.
KUBE_VERSION = "1.35.0"
# Kinds of CRDs (not in the Kubernetes schemas): their shape is checked here.
CRD_GROUPS = ("monitoring.coreos.com/",)
CONNECTORS_DIR = "/etc/siphon/connectors"
SECRET_WORDS = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|API_?KEY", re.I)


class Checks:
    """Runs named checks, printing a line for each; counts the outcomes."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        try:
            result = fn()
        except Exception as err:  # a failed check, whatever raised
            self.failed += 1
            detail = str(err).strip().replace("\n", "\n       ")
            print(f"FAIL {name}: {detail}")
            return None
        self.passed += 1
        print(f"ok   {name}")
        return result


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


# ---------------------------------------------------------------- rendering


def load_values_file(path: Path) -> dict[str, Any]:
    # Helm's own parser, so YAML 1.1 details (0440 octal) read as in `helm -f`.
    return helm.values_from_yaml(path.read_text())


def render(chart: helm.Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Renders the chart; returns every manifest (NOTES.txt as a pseudo-kind)."""
    files = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            docs.append({"kind": "_Notes", "text": text})
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["_source"] = path
                docs.append(doc)
    return docs


def only(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d.get("kind") == kind]
    expect(len(found) == 1, f"expected one {kind}, rendered {len(found)}")
    return found[0]


def maybe(docs: list[dict[str, Any]], kind: str) -> dict[str, Any] | None:
    found = [d for d in docs if d.get("kind") == kind]
    expect(len(found) <= 1, f"expected at most one {kind}, rendered {len(found)}")
    return found[0] if found else None


def siphon_container(deploy: dict[str, Any]) -> dict[str, Any]:
    containers = deploy["spec"]["template"]["spec"]["containers"]
    expect(len(containers) == 1, f"expected one container, got {len(containers)}")
    return containers[0]


def strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


# ------------------------------------------------------- per-scenario checks


def check_scenario(checks: Checks, chart: helm.Chart, label: str, values: dict[str, Any]) -> None:
    def lint() -> None:
        report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + [
            {"path": "", "error": e} for e in report["errors"]
        ]
        expect(not problems, "; ".join(f"{m['path']}: {m['error']}" for m in problems))

    checks.run(f"{label}: helm lint --strict", lint)
    docs = checks.run(f"{label}: renders", lambda: render(chart, values))
    if docs is None:
        return
    merged = chart.merge_values(values)
    manifests = [d for d in docs if d["kind"] != "_Notes"]

    def kube_schemas() -> None:
        for doc in manifests:
            if doc["apiVersion"].startswith(CRD_GROUPS):
                continue
            try:
                kubernetes_validate.validate(strip(doc), KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as err:
                path = "/".join(str(p) for p in err.absolute_path)
                raise AssertionError(f"{doc['_source']}: {doc['kind']} {path}: {err.message}")

    checks.run(f"{label}: manifests valid for Kubernetes {KUBE_VERSION} (strict)", kube_schemas)

    def metadata() -> None:
        for doc in manifests:
            meta = doc["metadata"]
            expect(meta.get("namespace") == NAMESPACE, f"{doc['kind']} {meta['name']}: namespace")
            labels = meta.get("labels", {})
            for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "helm.sh/chart"):
                expect(key in labels, f"{doc['kind']} {meta['name']}: label {key} missing")
        expect(maybe(docs, "Secret") is None, "the chart must never render a Secret")

    checks.run(f"{label}: namespace and labels on every object; no Secret rendered", metadata)

    deploy = checks.run(f"{label}: one Deployment", lambda: only(docs, "Deployment"))
    if deploy is None:
        return
    pod = deploy["spec"]["template"]["spec"]

    def one_pod() -> None:
        spec = deploy["spec"]
        expect(spec.get("replicas") == 1, f"replicas is {spec.get('replicas')}, want 1")
        expect(spec.get("strategy") == {"type": "Recreate"}, f"strategy is {spec.get('strategy')}")
        selector = spec["selector"]["matchLabels"]
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        expect(selector.items() <= labels.items(), "pod labels do not match the selector")

    checks.run(f"{label}: replicas 1, strategy Recreate", one_pod)

    def connectors_configmap() -> None:
        cm = only(docs, "ConfigMap")
        data = cm.get("data") or {}
        want = merged["connectors"]
        expect(set(data) == {f"{k}.toml" for k in want}, f"ConfigMap keys {sorted(data)}")
        for name, text in want.items():
            got = data[f"{name}.toml"]
            expect(got == text, f"{name}.toml differs from connectors.{name}")
            parsed = tomllib.loads(got)
            expect(parsed == tomllib.loads(text), f"{name}.toml parses differently")
            expect("name" in parsed, f"{name}.toml has no connector name")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        mounts = {m["mountPath"]: m for m in siphon_container(deploy).get("volumeMounts", [])}
        mount = mounts.get(CONNECTORS_DIR)
        expect(mount is not None and mount.get("readOnly") is True, f"{CONNECTORS_DIR} not mounted read-only")
        vol = volumes[mount["name"]]
        expect(vol.get("configMap", {}).get("name") == cm["metadata"]["name"], "mount is not the ConfigMap")

    checks.run(f"{label}: ConfigMap holds each connector file verbatim (TOML), mounted read-only", connectors_configmap)

    def checksum() -> None:
        annotation = deploy["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/config")
        expect(bool(annotation) and re.fullmatch(r"[0-9a-f]{64}", annotation) is not None, "checksum/config missing")

    checks.run(f"{label}: pod template carries checksum/config", checksum)

    def security() -> None:
        psc = pod.get("securityContext", {})
        expect(psc.get("runAsNonRoot") is True, "pod runAsNonRoot is not true")
        for key in ("runAsUser", "runAsGroup", "fsGroup"):
            expect(isinstance(psc.get(key), int) and psc[key] > 0, f"pod {key} is {psc.get(key)}")
        expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccompProfile is not RuntimeDefault")
        expect(pod.get("hostNetwork") is not True and pod.get("hostPID") is not True, "host namespaces in use")
        sc = siphon_container(deploy).get("securityContext", {})
        expect(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is not false")
        expect(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is not true")
        expect(sc.get("privileged") is not True, "container is privileged")
        expect(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities.drop is not [ALL]")
        expect(not sc.get("capabilities", {}).get("add"), "capabilities added")
        expect(sc.get("runAsUser", 1) != 0, "container runs as root")
        expect(pod.get("automountServiceAccountToken") is False, "service account token is mounted")

    checks.run(f"{label}: non-root, read-only root FS, no privilege escalation, drop ALL, seccomp", security)

    def probes() -> None:
        c = siphon_container(deploy)
        ports = {p["name"]: p for p in c.get("ports", [])}
        expect("http" in ports, "no container port named http")
        expect(ports["http"]["containerPort"] == merged["httpPort"], "port http is not httpPort")
        if label == "defaults":
            expect(ports["http"]["containerPort"] == 9090, "the default port http is not 9090")
        for probe, path in (("livenessProbe", "/health/live"), ("readinessProbe", "/health/ready")):
            get = c.get(probe, {}).get("httpGet", {})
            expect(get.get("path") == path, f"{probe} path is {get.get('path')}, want {path}")
            expect(get.get("port") == "http", f"{probe} port is {get.get('port')}, want http")
        env = {e["name"]: e for e in c.get("env", [])}
        addr = env.get("SIPHON_HTTP_ADDR", {}).get("value", "")
        expect(addr.endswith(f":{ports['http']['containerPort']}"), f"SIPHON_HTTP_ADDR {addr!r} != container port")

    checks.run(f"{label}: probes on /health/live and /health/ready via port http ({merged['httpPort']})", probes)

    def grace() -> None:
        c = siphon_container(deploy)
        env = {e["name"]: e for e in c.get("env", [])}
        grace_ms = int(env["SIPHON_SHUTDOWN_GRACE_MS"]["value"])
        expect(grace_ms == merged["shutdownGraceMs"], "SIPHON_SHUTDOWN_GRACE_MS is not shutdownGraceMs")
        period = pod["terminationGracePeriodSeconds"]
        expect(period * 1000 > grace_ms, f"terminationGracePeriodSeconds {period}s <= shutdown grace {grace_ms}ms")
        expect(env["SIPHON_LOG_FORMAT"]["value"] == merged["logFormat"], "SIPHON_LOG_FORMAT is not logFormat")
        expect(c.get("args") == merged["args"], f"args {c.get('args')}")

    checks.run(f"{label}: terminationGracePeriodSeconds > SIPHON_SHUTDOWN_GRACE_MS; log format, args", grace)

    def secrets() -> None:
        c = siphon_container(deploy)
        env = {e["name"]: e for e in c.get("env", [])}
        secret = merged["existingSecret"]
        for var, key in secret["env"].items():
            ref = env.get(var, {}).get("valueFrom", {}).get("secretKeyRef")
            expect(ref == {"name": secret["name"], "key": key}, f"{var} is not from secret {secret['name']}/{key}")
        for name, e in env.items():
            if SECRET_WORDS.search(name):
                expect("value" not in e and "secretKeyRef" in e.get("valueFrom", {}), f"{name} is not from a secretKeyRef")
        secret_dirs: dict[str, set[str] | None] = {}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for m in c.get("volumeMounts", []):
            src = volumes.get(m["name"], {}).get("secret")
            if src is not None:
                expect(m.get("readOnly") is True, f"secret mount {m['mountPath']} is writable")
                items = src.get("items")
                secret_dirs[m["mountPath"].rstrip("/")] = {i["path"] for i in items} if items else None
        for name, text in merged["connectors"].items():
            for section, table in tomllib.loads(text).items():
                if not isinstance(table, dict):
                    continue
                expect("password" not in table, f"{name}.toml: {section}.password: a literal password")
                if "password_env" in table:
                    var = table["password_env"]
                    expect(
                        "secretKeyRef" in env.get(var, {}).get("valueFrom", {}),
                        f"{name}.toml: {section}.password_env = {var!r} is not set from a Secret",
                    )
                if "password_file" in table:
                    path = table["password_file"]
                    directory, _, file = path.rpartition("/")
                    expect(directory in secret_dirs, f"{name}.toml: {section}.password_file {path!r} is not in a mounted Secret")
                    files = secret_dirs[directory]
                    expect(files is None or file in files, f"{name}.toml: {path!r} is not one of the Secret's items")

    checks.run(f"{label}: credentials only from secretKeyRef / Secret volumes; password_env/_file resolvable", secrets)

    def control() -> None:
        env = {e["name"]: e for e in siphon_container(deploy).get("env", [])}
        ctl = merged["control"]
        if not ctl["enabled"]:
            expect("SIPHON_CONTROL_ADDR" not in env, "control endpoint enabled while control.enabled is false")
            return
        expect(env.get("SIPHON_CONTROL_ADDR", {}).get("value") == ctl["address"], "SIPHON_CONTROL_ADDR")
        ref = env.get("SIPHON_CONTROL_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
        expect(ref == {"name": ctl["token"]["secretName"], "key": ctl["token"]["key"]}, "SIPHON_CONTROL_TOKEN is not from the token's Secret")

    checks.run(f"{label}: control endpoint off unless enabled, token from its Secret", control)

    def service() -> None:
        svc = maybe(docs, "Service")
        if not merged["metrics"]["service"]["enabled"]:
            expect(svc is None, "Service rendered while disabled")
            return
        expect(svc is not None, "no Service")
        spec = svc["spec"]
        expect(spec["type"] == "ClusterIP", f"Service type {spec['type']}")
        expect(spec["selector"] == deploy["spec"]["selector"]["matchLabels"], "Service selector != pod selector")
        ports = {p["name"]: p for p in spec["ports"]}
        expect(ports.get("http", {}).get("targetPort") == "http", "Service port http does not target port http")
        expect(ports["http"]["port"] == merged["metrics"]["service"]["port"], "Service port")

    checks.run(f"{label}: metrics Service (ClusterIP, port http)", service)

    def service_monitor() -> None:
        sm = maybe(docs, "ServiceMonitor")
        sm_values = merged["metrics"]["serviceMonitor"]
        if not sm_values["enabled"]:
            expect(sm is None, "ServiceMonitor rendered while disabled")
            return
        expect(sm is not None, "no ServiceMonitor")
        expect(sm["apiVersion"] == "monitoring.coreos.com/v1", sm["apiVersion"])
        svc = only(docs, "Service")
        selector = sm["spec"]["selector"]["matchLabels"]
        expect(selector.items() <= svc["metadata"]["labels"].items(), "ServiceMonitor selector misses the Service")
        expect(sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}, "namespaceSelector")
        (endpoint,) = sm["spec"]["endpoints"]
        expect(endpoint["port"] == "http" and endpoint["path"] == "/metrics", f"endpoint {endpoint}")
        expect(endpoint["interval"] == sm_values["interval"], "interval")
        expect(sm_values["labels"].items() <= sm["metadata"]["labels"].items(), "labels")
        allowed = {"port", "path", "interval", "scrapeTimeout", "metricRelabelings"}
        expect(set(endpoint) <= allowed, f"unexpected endpoint fields {set(endpoint) - allowed}")

    checks.run(f"{label}: ServiceMonitor shape", service_monitor)

    def pdb() -> None:
        doc = maybe(docs, "PodDisruptionBudget")
        if not merged["podDisruptionBudget"]["enabled"]:
            expect(doc is None, "PodDisruptionBudget rendered while disabled")
            return
        expect(doc is not None, "no PodDisruptionBudget")
        expect("minAvailable" not in doc["spec"], "minAvailable would block drains of the only pod")
        value = doc["spec"]["maxUnavailable"]
        expect(value not in (0, "0%"), "maxUnavailable 0 blocks drains")
        expect(doc["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"], "selector")

    checks.run(f"{label}: PodDisruptionBudget never blocks a drain", pdb)

    def network_policy() -> None:
        doc = maybe(docs, "NetworkPolicy")
        np = merged["networkPolicy"]
        if not np["enabled"]:
            expect(doc is None, "NetworkPolicy rendered while disabled")
            return
        expect(doc is not None, "no NetworkPolicy")
        spec = doc["spec"]
        expect(spec["podSelector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"], "podSelector")
        (rule,) = spec["ingress"]
        expect(rule["ports"] == [{"port": "http", "protocol": "TCP"}], f"ingress ports {rule['ports']}")
        expect(rule.get("from", []) == np["ingress"]["from"], "ingress peers")
        expect(("Egress" in spec["policyTypes"]) == np["egress"]["enabled"], "policyTypes")
        if np["egress"]["enabled"]:
            dns = [r for r in spec["egress"] if {"port": 53, "protocol": "UDP"} in r.get("ports", [])]
            expect(bool(dns) == np["egress"]["allowDns"], "DNS egress rule")

    checks.run(f"{label}: NetworkPolicy", network_policy)

    def notes() -> None:
        text = only(docs, "_Notes")["text"]
        expect("/health/ready" in text, "NOTES.txt does not say how to check readiness")
        if not merged["connectors"]:
            expect("WARNING: no connector files" in text, "NOTES.txt does not warn about no connectors")

    checks.run(f"{label}: NOTES.txt", notes)


# ------------------------------------------------------ cross-scenario checks


def checksum_of(chart: helm.Chart, values: dict[str, Any]) -> str:
    deploy = only(render(chart, values), "Deployment")
    return deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def check_checksum_rolls(checks: Checks, chart: helm.Chart, base: dict[str, Any]) -> None:
    def changes_with_connector() -> None:
        before = checksum_of(chart, base)
        changed = copy.deepcopy(base)
        name = sorted(changed["connectors"])[0]
        changed["connectors"][name] = changed["connectors"][name].replace(
            'topic_prefix = "', 'topic_prefix = "x', 1
        )
        expect(changed["connectors"] != base["connectors"], "test edit did not change the connector")
        expect(checksum_of(chart, changed) != before, "checksum/config unchanged after a connector edit")
        added = copy.deepcopy(base)
        added["connectors"]["second"] = base["connectors"][name].replace(f'name = "{name}"', 'name = "second"')
        expect(checksum_of(chart, added) != before, "checksum/config unchanged after adding a connector")

    checks.run("checksum/config changes when a connector changes or is added", changes_with_connector)

    def stable_otherwise() -> None:
        other = copy.deepcopy(base)
        other["logFormat"] = "text"
        other["podAnnotations"] = {"a": "b"}
        expect(checksum_of(chart, other) == checksum_of(chart, base), "checksum/config depends on unrelated values")

    checks.run("checksum/config depends only on the connector files", stable_otherwise)


# TOML text that YAML block scalars mangle unless the chart quotes it right:
# leading indentation, trailing spaces, tabs, no final newline, non-ASCII,
# `#` and `: ` inside strings, an empty line at the end.
TRICKY_TOML = [
    '  name = "tricky"   \n[postgres]\n\ttables = ["public.été"]\nhost = "a: b # c"',
    'name = "tricky"\n\n[kafka.properties]\n"sasl.jaas" = \'x "y" \\\\z\'\n\n',
    'name = """\nmulti\n  line"""\n',
]


def check_verbatim(checks: Checks, chart: helm.Chart) -> None:
    def verbatim() -> None:
        for text in TRICKY_TOML:
            tomllib.loads(text)
            docs = render(chart, {"connectors": {"tricky": text}})
            got = only(docs, "ConfigMap")["data"]["tricky.toml"]
            expect(got == text, f"{text!r} came out as {got!r}")

    checks.run("ConfigMap keeps awkward TOML text byte for byte", verbatim)


BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("unknown top-level key (replicaCount)", {"replicaCount": 2}, "schema"),
    ("unknown nested key (image.tags)", {"image": {"tags": "x"}}, "schema"),
    ("unknown key under existingSecret.files", {"existingSecret": {"files": {"mode": 1}}}, "schema"),
    ("wrong type (httpPort as string)", {"httpPort": "9090"}, "schema"),
    ("wrong type (connector as a map)", {"connectors": {"shop": {"name": "shop"}}}, "schema"),
    ("enum (logFormat: yaml)", {"logFormat": "yaml"}, "schema"),
    ("enum (image.pullPolicy: Sometimes)", {"image": {"pullPolicy": "Sometimes"}}, "schema"),
    ("minimum (terminationGracePeriodSeconds: 0)", {"terminationGracePeriodSeconds": 0}, "schema"),
    ("PDB maxUnavailable 0 would block drains", {"podDisruptionBudget": {"maxUnavailable": 0}}, "schema"),
    ("bad connector file name", {"connectors": {"../etc": 'name = "x"'}}, "schema"),
    ("bad env variable name", {"existingSecret": {"name": "s", "env": {"1BAD": "k"}}}, "schema"),
    ("existingSecret.env without a name", {"existingSecret": {"env": {"PG_PASSWORD": "k"}}}, "schema"),
    ("existingSecret.files without a name", {"existingSecret": {"files": {"enabled": True}}}, "schema"),
    ("control.enabled without the token's Secret", {"control": {"enabled": True}}, "schema"),
    ("control.address without a port", {"control": {"address": "127.0.0.1"}}, "schema"),
    ("ServiceMonitor without the Service", {"metrics": {"service": {"enabled": False}, "serviceMonitor": {"enabled": True}}}, "schema"),
    # Arithmetic across values is beyond JSON Schema: the template fails.
    ("grace period not above shutdown grace", {"shutdownGraceMs": 60000}, "template"),
    ("grace period only equal to shutdown grace", {"shutdownGraceMs": 45000}, "template"),
]


def check_rejections(checks: Checks, chart: helm.Chart) -> None:
    for label, values, stage in BAD_VALUES:

        def rejected(values: dict[str, Any] = values, stage: str = stage) -> None:
            try:
                chart.render(values, name=RELEASE, namespace=NAMESPACE)
            except (helm.HelmValuesError, helm.HelmRenderError) as err:
                want = helm.HelmValuesError if stage == "schema" else helm.HelmRenderError
                expect(isinstance(err, want), f"rejected by the wrong stage: {err}")
            else:
                raise AssertionError("rendered without error")
            if stage == "schema":
                # helm lint runs templates leniently (`fail` only logs), so
                # only schema violations are lint errors.
                report = helm.lint(CHART, values)
                expect(bool(report["errors"]), "helm lint reported no error")

        checks.run(f"rejects {label} ({stage})", rejected)


# ---------------------------------------------------- chart files in step


def commented_keys(text: str) -> list[str]:
    """Dotted paths of the values.yaml keys that carry a helm-docs `# --` comment.

    Walks mapping keys by indentation; list items and block scalars are
    values, not keys. A comment belongs to the key right after it (helm-docs
    joins the `#` lines that follow `# --` into its description).
    """
    commented: list[str] = []
    stack: list[tuple[int, str]] = []
    documented = False
    in_comment_block = False
    skip_deeper_than: int | None = None
    for line in text.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip(" "))
        if skip_deeper_than is not None:
            if not stripped or indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        if not stripped:
            documented = in_comment_block = False
            continue
        if stripped.startswith("#"):
            if stripped.startswith("# --"):
                documented = in_comment_block = True
            elif not in_comment_block:
                documented = False
            continue
        in_comment_block = False
        if stripped.startswith("-"):
            skip_deeper_than = indent
            documented = False
            continue
        match = re.match(r"([A-Za-z0-9_.-]+):(\s|$)", stripped)
        if not match:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [match.group(1)])
        if documented:
            commented.append(path)
        rest = stripped[match.end():].strip()
        if rest == "" or rest.startswith("#"):
            stack.append((indent, match.group(1)))
        elif rest.startswith(("|", ">")):
            skip_deeper_than = indent
        documented = False
    return commented


def leaf_paths(value: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves of a values tree (an empty map is a leaf)."""
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in leaf_paths(v, f"{prefix}{k}.")]
    return [prefix.rstrip(".")]


def check_files(checks: Checks, chart: helm.Chart) -> None:
    values_text = (CHART / "values.yaml").read_text()
    commented = set(commented_keys(values_text))
    defaults = chart.values
    leaves = leaf_paths(defaults)

    def documented() -> None:
        def covered(path: str) -> bool:
            parts = path.split(".")
            return any(".".join(parts[:i]) in commented for i in range(1, len(parts) + 1))

        bare = [p for p in leaves if not covered(p)]
        expect(not bare, f"values without a `# --` comment: {', '.join(bare)}")
        unknown = commented - {".".join(p.split(".")[:i]) for p in leaves for i in range(1, p.count(".") + 2)}
        expect(not unknown, f"comments on keys the parser misread: {sorted(unknown)}")

    checks.run(f"values.yaml: every value has a helm-docs comment ({len(leaves)} values)", documented)

    schema = chart.schema or {}

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
        return node

    def schema_covers() -> None:
        expect(bool(schema), "no values.schema.json")
        missing: list[str] = []
        loose: list[str] = []

        def walk(value: Any, node: dict[str, Any], path: str) -> None:
            shared = "$ref" in node  # a Kubernetes-shaped type: values may omit keys
            node = resolve(node)
            if not isinstance(value, dict) or "properties" not in node:
                return
            if node.get("additionalProperties") is not False:
                loose.append(path or "<root>")
            for key, child in value.items():
                if key not in node["properties"]:
                    missing.append(f"{path}{key}")
                else:
                    walk(child, node["properties"][key], f"{path}{key}.")
            for key in node["properties"]:
                if key not in value and key != "global" and not shared:
                    missing.append(f"{path}{key} (in schema, not in values.yaml)")

        walk(defaults, schema, "")
        expect(not missing, f"values and schema differ: {', '.join(missing)}")
        expect(not loose, f"objects with properties but without additionalProperties: false: {loose}")
        chart.validate_schema(defaults)

    checks.run("values.schema.json: strict, covers values.yaml, accepts the defaults", schema_covers)

    def readme() -> None:
        text = (CHART / "README.md").read_text()
        rows = set(re.findall(r"^\| ([A-Za-z0-9_.-]+) \|", text, re.M)) - {"Key"}
        expect(not (commented - rows), f"README.md lacks rows for {sorted(commented - rows)}")
        expect(not (rows - commented), f"README.md has rows for unknown values {sorted(rows - commented)}")

    checks.run("helm/siphon/README.md: a row for every value", readme)

    def dockerfile() -> None:
        text = DOCKERFILE.read_text()
        user = re.search(r"^USER\s+(\d+)(?::(\d+))?\s*$", text, re.M)
        expect(user is not None, "Dockerfile has no numeric USER")
        psc = defaults["podSecurityContext"]
        expect(int(user.group(1)) == psc["runAsUser"], "USER differs from podSecurityContext.runAsUser")
        expect(user.group(2) is None or int(user.group(2)) == psc["runAsGroup"], "USER group differs")
        expect(re.search(rf"^EXPOSE\s+{defaults['httpPort']}\b", text, re.M) is not None, "EXPOSE != httpPort")
        expect('ENTRYPOINT ["/usr/local/bin/siphon"]' in text, "ENTRYPOINT is not siphon")
        cmd = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.M)
        expect(cmd is not None and yaml.safe_load(cmd.group(1)) == defaults["args"], "CMD differs from args")

    checks.run("Dockerfile: USER, EXPOSE, ENTRYPOINT and CMD match the chart", dockerfile)


def main() -> int:
    start = time.monotonic()
    helm.disable_logging()  # the template engine logs each `fail` it meets
    checks = Checks()
    chart = helm.Chart.load(CHART)
    try:
        scenarios = [("defaults", {})] + [
            (p.name, load_values_file(p)) for p in sorted((CHART / "ci").glob("*-values.yaml"))
        ]
        expect(len(scenarios) >= 4, "expected ci/*-values.yaml scenarios")
        for label, values in scenarios:
            check_scenario(checks, chart, label, values)
        base = dict(scenarios)["default-values.yaml"]
        check_checksum_rolls(checks, chart, base)
        check_verbatim(checks, chart)
        check_rejections(checks, chart)
        check_files(checks, chart)
    finally:
        chart.close()
    print(f"chart checks took {time.monotonic() - start:.1f}s")
    print(f"{checks.passed} passed, {checks.failed} failed")
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
