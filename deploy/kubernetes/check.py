#!/usr/bin/env python3
"""Checks the Kubernetes manifests under deploy/kubernetes/.

1. Every resource of a Kubernetes API group validates against that API's schema, strictly
   (unknown fields are errors), with kubernetes-validate (PyPI) when it is installed.
2. The fields docs/kubernetes.md promises are there and agree with each other: the DaemonSet's
   node label, host paths, privileges and metrics port; the Service and ServiceMonitor reaching
   that port; the plugin's and the daemon's configuration naming the paths the DaemonSet mounts.
3. Each kustomization names files that exist.

The TOML files are also parsed by the programs' own parsers in
k8s-device-plugin/tests/deploy_files.rs. Usage: check.py [--k8s-version 1.33] (exit 1 on any
problem, each printed as FILE: what).
"""

import argparse
import pathlib
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

import yaml

HERE = pathlib.Path(__file__).resolve().parent
# API groups whose schemas kubernetes-validate has; others (the Prometheus Operator's
# ServiceMonitor, kustomize's own file) are checked by the field checks only.
CRD_GROUPS = ("monitoring.coreos.com/", "kustomize.config.k8s.io/")

problems = []


def problem(path, what):
    problems.append(f"{path.relative_to(HERE.parent.parent)}: {what}")


def load_all():
    docs = []
    for path in sorted(HERE.rglob("*.yaml")):
        try:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc is not None:
                    docs.append((path, doc))
        except yaml.YAMLError as e:
            problem(path, f"not YAML: {e}")
    return docs


def validate_schemas(docs, version):
    try:
        import kubernetes_validate
    except ImportError:
        print("check.py: kubernetes-validate not installed: schema checks skipped", file=sys.stderr)
        return 0
    n = 0
    for path, doc in docs:
        if str(doc.get("apiVersion", "")).startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            n += 1
        except kubernetes_validate.ValidationError as e:
            where = "/".join(str(p) for p in e.path) or "(top)"
            problem(path, f"{doc.get('kind')} {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problem(path, f"no schema for {doc.get('apiVersion')} {doc.get('kind')} in Kubernetes {version}")
    return n


def one(docs, kind, name):
    found = [(p, d) for p, d in docs if d.get("kind") == kind and d["metadata"]["name"] == name]
    if len(found) != 1:
        problem(HERE, f"expected one {kind} {name}, found {len(found)}")
        return None, {}
    return found[0]


def expect(path, what, got, want):
    if got != want:
        problem(path, f"{what} is {got!r}, expected {want!r}")


def check_deployment(docs):
    base = HERE / "base"
    path, ds = one(docs, "DaemonSet", "baton")
    if not ds:
        return
    pod = ds["spec"]["template"]
    spec = pod["spec"]
    labels = pod["metadata"]["labels"]
    expect(path, "spec.selector.matchLabels", ds["spec"]["selector"]["matchLabels"], labels)
    expect(path, "nodeSelector", spec.get("nodeSelector"), {"baton.dev/gpu": "true"})
    expect(path, "hostPID", spec.get("hostPID"), True)
    ann = pod["metadata"].get("annotations", {})
    expect(path, "prometheus.io/scrape", ann.get("prometheus.io/scrape"), "true")
    expect(path, "prometheus.io/port", ann.get("prometheus.io/port"), "9464")
    volumes = {v["name"]: v for v in spec["volumes"]}
    host = {n: v["hostPath"]["path"] for n, v in volumes.items() if "hostPath" in v}
    expect(path, "host paths", sorted(host.values()),
           ["/run/baton", "/var/lib/baton/lib", "/var/lib/kubelet/device-plugins"])
    containers = {c["name"]: c for c in spec["containers"]}
    expect(path, "containers", sorted(containers), ["batond", "device-plugin"])
    batond, plugin = containers.get("batond", {}), containers.get("device-plugin", {})
    expect(path, "batond privileged", batond.get("securityContext", {}).get("privileged"), True)
    expect(path, "device-plugin privileged", plugin.get("securityContext", {}).get("privileged"), False)
    ports = {p["name"]: p["containerPort"] for p in batond.get("ports", [])}
    expect(path, "batond metrics port", ports.get("metrics"), 9464)

    def mounts(c):
        return {m["mountPath"]: (m["name"], m.get("readOnly", False)) for m in c.get("volumeMounts", [])}

    # The plugin names host paths in Allocate, so each host directory it uses is mounted at
    # its own path.
    pm = mounts(plugin)
    for name in ("device-plugins", "baton-run", "baton-lib"):
        at = host.get(name)
        if pm.get(at, (None,))[0] != name:
            problem(path, f"device-plugin does not mount volume {name} at its host path {at}")
    expect(path, "batond's /run/baton", mounts(batond).get("/run/baton"), ("baton-run", False))
    cm = volumes.get("config", {}).get("configMap", {}).get("name")

    kust = yaml.safe_load((base / "kustomization.yaml").read_text())
    generated = {g["name"]: g["files"] for g in kust.get("configMapGenerator", [])}
    if cm not in generated:
        problem(path, f"config volume names ConfigMap {cm!r}, which kustomization.yaml does not generate")
    cfg_dir = mounts(batond)
    if "/etc/baton" not in cfg_dir:
        problem(path, "batond does not mount its configuration at /etc/baton")

    # The configuration files agree with the mounts.
    try:
        daemon = tomllib.loads((base / "baton.toml").read_text())
        dp = tomllib.loads((base / "device-plugin.toml").read_text())
    except tomllib.TOMLDecodeError as e:
        problem(base, f"a configuration file is not TOML: {e}")
        return
    expect(base / "baton.toml", "[daemon] socket", daemon["daemon"].get("socket"), "/run/baton/baton.sock")
    expect(base / "baton.toml", "[daemon] metrics_listen", daemon["daemon"].get("metrics_listen"), "0.0.0.0:9464")
    # The scrape token: a file of the optional Secret's volume, and the Secret the
    # ServiceMonitor presents.
    token_file = pathlib.PurePosixPath(daemon["daemon"].get("metrics_token_file", ""))
    token_mount = mounts(batond).get(str(token_file.parent), (None,))[0]
    secret = volumes.get(token_mount, {}).get("secret", {})
    if not secret:
        problem(path, f"batond mounts no Secret at {token_file.parent} for metrics_token_file")
    expect(path, "metrics token Secret optional", secret.get("optional"), True)
    expect(path, "metrics token key", token_file.name, "token")
    expect(base / "device-plugin.toml", "socket_dir", dp.get("socket_dir"), host.get("baton-run"))
    expect(base / "device-plugin.toml", "kubelet_dir", dp.get("kubelet_dir"), host.get("device-plugins"))
    shim = pathlib.PurePosixPath(dp.get("shim", ""))
    expect(base / "device-plugin.toml", "shim's directory", str(shim.parent), host.get("baton-lib"))
    if "install-shim" not in {c["name"] for c in spec.get("initContainers", [])}:
        problem(path, "no install-shim init container to put the shim on the host")

    spath, svc = one(docs, "Service", "baton-metrics")
    if svc:
        expect(spath, "selector", svc["spec"]["selector"], labels)
        expect(spath, "port", [(p["name"], p["port"]) for p in svc["spec"]["ports"]], [("metrics", 9464)])
    mpath, sm = one(docs, "ServiceMonitor", "baton")
    if sm and svc:
        expect(mpath, "selector", sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
        expect(mpath, "endpoint port", sm["spec"]["endpoints"][0]["port"], "metrics")
        creds = sm["spec"]["endpoints"][0].get("authorization", {}).get("credentials", {})
        expect(mpath, "token Secret", (creds.get("name"), creds.get("key")),
               (secret.get("secretName"), "token"))


def check_examples(docs):
    for path, doc in docs:
        if path.parent.name != "examples" or doc.get("kind") != "Pod":
            continue
        spec = doc["spec"]
        uid = spec.get("securityContext", {}).get("runAsUser")
        if uid is None:
            problem(path, f"pod {doc['metadata']['name']}: no runAsUser, so no policy entry binds it")
        for c in spec["containers"]:
            limits = c.get("resources", {}).get("limits", {})
            if "baton.dev/gpu" not in limits:
                problem(path, f"container {c['name']} asks for no baton.dev/gpu")
            if not any(e["name"] == "BATON_TENANT" for e in c.get("env", [])):
                problem(path, f"container {c['name']} names no BATON_TENANT")


def check_kustomizations():
    for k in HERE.rglob("kustomization.yaml"):
        doc = yaml.safe_load(k.read_text())
        names = list(doc.get("resources", []))
        for g in doc.get("configMapGenerator", []):
            names += g.get("files", [])
        for n in names:
            if not (k.parent / n).exists():
                problem(k, f"names {n}, which does not exist")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s-version", default="1.33")
    args = ap.parse_args()
    docs = load_all()
    n = validate_schemas(docs, args.k8s_version)
    check_deployment(docs)
    check_examples(docs)
    check_kustomizations()
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(f"check.py: {len(docs)} documents, {n} schema-validated against Kubernetes {args.k8s_version}, fields agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
