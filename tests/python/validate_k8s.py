"""The Kubernetes manifests, checked without a cluster: each overlay under
k8s/overlays rendered by kustomize (`kubectl kustomize`), every object
validated strictly against the Kubernetes schemas of a named version
(kubernetes-validate; the Prometheus Operator's ServiceMonitor, not in them,
by its required fields), then against what a production deployment of
sluice needs: NATS a 3-node JetStream StatefulSet with a volume per pod, a
PodDisruptionBudget, JetStream health probes and a lame-duck preStop; the
dispatcher 3 replicas with a PodDisruptionBudget, anti-affinity, a native
gRPC readiness probe and a NetworkPolicy; every pod non-root with a
read-only root filesystem, resource requests and limits and probes; every
sluice command a binary the workspace builds; every address a Service of the
render and one of its ports; every ConfigMap and Secret a pod uses rendered
or, in the live overlay, one the operator creates (named in its
kustomization). Prints "all checks passed" only when every check held.

    python validate_k8s.py --root REPO --bins sluice,... [--kubectl kubectl] [--k8s-version 1.32.0] [--overlay DIR]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys

import kubernetes_validate
import yaml

URL = re.compile(r"^(?:nats|https?|wss?)://([a-z0-9-]+):(\d+)")
# Created by the operator before applying the live overlay (its header says how).
EXTERNAL = re.compile(r"^(sluice-keys-[a-z]+-[a-z0-9-]+|sluice-client-tokens|sluice-receivers|sluice-gateway)$")


def render(kubectl, path):
    out = subprocess.run([kubectl, "kustomize", path], capture_output=True, text=True)
    if out.returncode != 0:
        return None, out.stderr.strip()
    return [d for d in yaml.safe_load_all(out.stdout) if d], None


def pods(docs):
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            yield d, d["spec"]["template"]["spec"]


def check(overlay, docs, bins, version, problems):
    where = os.path.basename(overlay)
    say = lambda m: problems.append(f"{where}: {m}")
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
        if d["kind"] == "ServiceMonitor":
            if d.get("apiVersion") != "monitoring.coreos.com/v1" or not d["spec"].get("endpoints") or "selector" not in d["spec"]:
                say(f"ServiceMonitor {d['metadata']['name']}: needs monitoring.coreos.com/v1, a selector and endpoints")
            continue
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            say(f"{d['kind']} {d['metadata']['name']}: {'/'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError:
            say(f"{d['kind']} {d['metadata']['name']}: no schema for {d['apiVersion']} {d['kind']} in Kubernetes {version}")
    services = by_kind.get("Service", {})
    ports = {n: {p["port"] for p in s["spec"]["ports"]} for n, s in services.items()}
    rendered = {(k, n) for k in ("ConfigMap", "Secret") for n in by_kind.get(k, {})}

    for d, spec in pods(docs):
        name = f"{d['kind']} {d['metadata']['name']}"
        psc = spec.get("securityContext") or {}
        if not psc.get("runAsNonRoot") or (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            say(f"{name}: the pod must run as non-root with the RuntimeDefault seccomp profile")
        for c in spec["containers"]:
            sc = c.get("securityContext") or {}
            if not sc.get("readOnlyRootFilesystem") or sc.get("allowPrivilegeEscalation") is not False or sc.get("capabilities", {}).get("drop") != ["ALL"]:
                say(f"{name}/{c['name']}: needs a read-only root filesystem, no privilege escalation, all capabilities dropped")
            res = c.get("resources") or {}
            if not all(k in res.get(w, {}) for w in ("requests", "limits") for k in ("cpu", "memory")):
                say(f"{name}/{c['name']}: needs cpu and memory requests and limits")
            if d["metadata"]["name"] != "webhook" and "readinessProbe" not in c:
                say(f"{name}/{c['name']}: no readiness probe")
            image = c.get("image", "")
            if "sluice" in image.split("/")[-1] and (c.get("command") or [""])[0] not in bins:
                say(f"{name}/{c['name']}: command {c.get('command')} is not a binary the workspace builds")
            telemetry = any(((ef.get("configMapRef") or {}).get("name", "")).startswith("sluice-telemetry") for ef in c.get("envFrom") or [])
            # Every service (the command line's own tools log as they like).
            if "sluice" in image.split("/")[-1] and (c.get("command") or [""])[0] in bins - {"sluice"} and not telemetry:
                say(f"{name}/{c['name']}: does not read the ConfigMap sluice-telemetry (log format, trace export)")
            for e in c.get("env") or []:
                m = URL.match(str(e.get("value", "")))
                if m:
                    host, port = m.group(1), int(m.group(2))
                    if host not in ports:
                        say(f"{name}: {e['name']}={e['value']}: no Service '{host}'")
                    elif port not in ports[host]:
                        say(f"{name}: {e['name']}={e['value']}: Service {host} has no port {port}")
            for ef in c.get("envFrom") or []:
                ref = (ef.get("secretRef") or ef.get("configMapRef") or {}).get("name", "")
                kind = "Secret" if "secretRef" in ef else "ConfigMap"
                if (kind, ref) not in rendered and not EXTERNAL.match(ref):
                    say(f"{name}: envFrom {kind} {ref} is neither rendered nor one the operator creates")
        for v in spec.get("volumes") or []:
            refs = []
            if "configMap" in v:
                refs.append(("ConfigMap", v["configMap"]["name"]))
            if "secret" in v:
                refs.append(("Secret", v["secret"]["secretName"]))
            for src in (v.get("projected") or {}).get("sources") or []:
                if "secret" in src:
                    refs.append(("Secret", src["secret"]["name"]))
            for kind, ref in refs:
                if (kind, ref) not in rendered and not (where == "live" and kind == "Secret" and EXTERNAL.match(ref)):
                    say(f"{name}: volume {v['name']}: {kind} {ref} is not rendered")

    nats = by_kind.get("StatefulSet", {}).get("nats")
    if not nats:
        say("no NATS StatefulSet")
    else:
        c = nats["spec"]["template"]["spec"]["containers"][0]
        probe = (c.get("readinessProbe") or {}).get("httpGet", {}).get("path", "")
        if nats["spec"]["replicas"] != 3 or not nats["spec"].get("volumeClaimTemplates"):
            say("NATS: 3 replicas, a volume per pod")
        if "js-enabled-only=true" not in probe or "preStop" not in (c.get("lifecycle") or {}):
            say("NATS: probes on /healthz?js-enabled-only=true and a lame-duck preStop")
        conf = by_kind.get("ConfigMap", {}).get("nats-config", {}).get("data", {}).get("nats.conf", "")
        if "jetstream" not in conf or conf.count("nats-headless:6222") != 3:
            say("NATS: JetStream on, routes to all three nodes")
    disp = by_kind.get("Deployment", {}).get("dispatcher")
    if not disp or disp["spec"]["replicas"] != 3:
        say("the dispatcher runs 3 replicas")
    else:
        spec = disp["spec"]["template"]["spec"]
        if "grpc" not in (spec["containers"][0].get("readinessProbe") or {}):
            say("dispatcher: readiness is the native gRPC probe")
        if "podAntiAffinity" not in (spec.get("affinity") or {}):
            say("dispatcher: pod anti-affinity")
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        if not env.get("SLUICE_DISPATCHER_NATS_URL") or not env.get("SLUICE_DISPATCHER_ADVERTISE"):
            say("dispatcher: replicas need SLUICE_DISPATCHER_NATS_URL and _ADVERTISE")
    for pdb in ("nats", "dispatcher"):
        p = by_kind.get("PodDisruptionBudget", {}).get(pdb)
        if not p or p["spec"].get("maxUnavailable") != 1:
            say(f"PodDisruptionBudget {pdb}: maxUnavailable 1")
    np = by_kind.get("NetworkPolicy", {}).get("dispatcher")
    if not np or np["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name") != "dispatcher":
        say("a NetworkPolicy guards the dispatcher")
    if not by_kind.get("ServiceMonitor"):
        say("no ServiceMonitor")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--bins", required=True)
    ap.add_argument("--kubectl", default="kubectl")
    ap.add_argument("--k8s-version", default="1.32.0")
    ap.add_argument("--overlay", action="append", help="an overlay directory (default: every one under k8s/overlays)")
    args = ap.parse_args()
    kubectl = shutil.which(args.kubectl)
    if not kubectl:
        print(f"{args.kubectl} is not installed: it renders the kustomizations in k8s/ (kubectl kustomize); "
              "install kubectl (kubernetes.io/docs/tasks/tools) and run again")
        sys.exit(2)
    overlays = args.overlay or sorted(os.path.join(args.root, "k8s/overlays", d) for d in os.listdir(os.path.join(args.root, "k8s/overlays")))
    bins = set(args.bins.split(","))
    problems = []
    for o in overlays:
        docs, err = render(kubectl, o)
        if err:
            problems.append(f"{os.path.basename(o)}: kustomize: {err}")
            continue
        check(o, docs, bins, args.k8s_version, problems)
        print(f"{os.path.basename(o)}: {len(docs)} objects")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
