"""The deployment files, checked without a Docker engine: docker-compose.yml
and docker-compose.live.yml against the Compose Specification's JSON schema
(deploy/schemas/compose-spec.json), then against the repository: every sluice
command is a binary the workspace builds and the image carries, every file
mounted or named exists, every address a service is given names a service of
the file and a port that service listens on, every published port and health
check is one its service serves, and Prometheus scrapes each service's ops
port. Prints "all checks passed" only when every check held, else each
problem on its own line.

    python validate_deploy.py --root REPO --bins sluice,sluice-dispatcher,... [--compose FILE]
"""

import argparse
import json
import os
import re
import sys

import jsonschema
import yaml

# What each sluice binary listens on, read from its environment in the file.
LISTEN_VARS = re.compile(r"^SLUICE_[A-Z_]*(LISTEN)$")
URL = re.compile(r"^(?:nats|https?|wss?)://([a-z0-9-]+):(\d+)")


def load(path):
    with open(path) as f:
        return yaml.safe_load(f)


def ports_of(name, svc):
    """The ports a service listens on: its *_LISTEN variables, the simulator's
    port base and the four after it, `receive --listen`, and for the images
    that are not sluice's the ports they are known to serve."""
    known = {"nats": {4222, 8222}, "prometheus": {9090}, "grafana": {3000}}
    if name in known:
        return known[name]
    ports = set()
    for k, v in (svc.get("environment") or {}).items():
        if LISTEN_VARS.match(k) and isinstance(v, str) and ":" in v:
            ports.add(int(v.rsplit(":", 1)[1]))
    cmd = svc.get("command") or []
    if "--port-base" in cmd:
        base = int(cmd[cmd.index("--port-base") + 1])
        ports |= set(range(base, base + 5))
    if "--listen" in cmd:
        ports.add(int(cmd[cmd.index("--listen") + 1].rsplit(":", 1)[1]))
    return ports


def check_compose(root, path, bins, problems, base=None):
    doc = load(path)
    schema = json.load(open(os.path.join(root, "deploy/schemas/compose-spec.json")))
    for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
        problems.append(f"{os.path.basename(path)}: schema: {'/'.join(map(str, e.path))}: {e.message}")
    services = dict((base or {}).get("services") or {})
    for name, svc in (doc.get("services") or {}).items():
        merged = dict(services.get(name) or {})
        for k, v in svc.items():
            if isinstance(v, dict) and isinstance(merged.get(k), dict):
                merged[k] = {**merged[k], **v}
            else:
                merged[k] = v
        services[name] = merged
    where = os.path.basename(path)
    listening = {n: ports_of(n, s) for n, s in services.items()}
    for name, svc in (doc.get("services") or {}).items():
        full = services[name]
        sluice = str(full.get("image", "")).startswith("sluice")
        cmd = full.get("command") or []
        if sluice and cmd and cmd[0] not in bins:
            problems.append(f"{where}: {name}: command '{cmd[0]}' is not a binary the workspace builds")
        env = full.get("environment") or {}
        for k, v in env.items():
            if not isinstance(v, str):
                continue
            m = URL.match(v)
            if m and m.group(1) in services:
                host, port = m.group(1), int(m.group(2))
                if port not in listening[host]:
                    problems.append(f"{where}: {name}: {k}={v}: {host} does not listen on {port} (it does on {sorted(listening[host])})")
            elif m and "." not in m.group(1) and m.group(1) not in ("localhost",):
                problems.append(f"{where}: {name}: {k}={v}: no service '{m.group(1)}'")
            if k.endswith("_CONFIG") and v.startswith("/etc/sluice/"):
                shipped = os.path.join(root, "config", v[len("/etc/sluice/"):])
                mounted = any(str(vol).split(":")[1:2] == [v] for vol in full.get("volumes") or [])
                if not os.path.exists(shipped) and not mounted:
                    problems.append(f"{where}: {name}: {k}={v} is neither in config/ nor mounted")
        if sluice and name in ("sim", "dispatcher", "collector", "signal", "execution", "alerting"):
            health = env.get("SLUICE_HEALTH_URL") or ""
            m = re.match(r"^http://127\.0\.0\.1:(\d+)/", health)
            if not m or int(m.group(1)) not in listening[name]:
                problems.append(f"{where}: {name}: SLUICE_HEALTH_URL '{health}' is not a port it serves")
        for p in svc.get("ports") or []:
            container = int(str(p).rsplit(":", 1)[1].split("/")[0])
            if container not in listening[name]:
                problems.append(f"{where}: {name}: publishes {container}, which it does not listen on")
        for vol in svc.get("volumes") or []:
            src = str(vol).split(":")[0]
            # ./secrets/ is the user's, documented in the file's header.
            if src.startswith("./") and not src.startswith("./secrets/") and not os.path.exists(os.path.join(root, src)):
                problems.append(f"{where}: {name}: mounts {src}, which does not exist")
        for dep in svc.get("depends_on") or {}:
            if dep not in services:
                problems.append(f"{where}: {name}: depends on '{dep}', not a service")
    for sname, s in (doc.get("secrets") or {}).items():
        f = s.get("file", "")
        if f.startswith("./") and not f.startswith("./secrets/") and not os.path.exists(os.path.join(root, f)):
            problems.append(f"{where}: secret {sname}: {f} does not exist")
    return doc, services, listening


def check_prometheus(root, services, listening, problems):
    prom = load(os.path.join(root, "deploy/prometheus/prometheus.yml"))
    for rf in prom.get("rule_files") or []:
        if os.path.basename(rf) != "alerts.yml":
            problems.append(f"prometheus.yml: rule file {rf} is not deploy/prometheus/alerts.yml")
    scraped = set()
    for job in prom.get("scrape_configs") or []:
        for sc in job.get("static_configs") or []:
            for t in sc.get("targets") or []:
                host, port = t.rsplit(":", 1)
                scraped.add(host)
                ops = (services.get(host, {}).get("environment") or {})
                want = [v for k, v in ops.items() if k.endswith("OPS_LISTEN")]
                if host not in services:
                    problems.append(f"prometheus.yml: {job['job_name']}: no service '{host}'")
                elif not want or int(port) != int(want[0].rsplit(":", 1)[1]):
                    problems.append(f"prometheus.yml: {job['job_name']}: {t} is not {host}'s ops port")
    for name in ("dispatcher", "collector", "signal", "execution", "alerting"):
        if name not in scraped:
            problems.append(f"prometheus.yml: {name} is not scraped")


def check_dockerfile(root, bins, problems):
    text = open(os.path.join(root, "deploy/Dockerfile")).read()
    for b in bins:
        if f"target/release/{b} " not in text and f"target/release/{b}\n" not in text:
            problems.append(f"deploy/Dockerfile: the image does not carry {b}")
        if b != "sluice" and f"-p {b} " not in text and f"-p {b}\n" not in text:
            problems.append(f"deploy/Dockerfile: {b} is not built")
    if "USER 10001" not in text or "HEALTHCHECK" not in text:
        problems.append("deploy/Dockerfile: runs as root or has no health check")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True)
    ap.add_argument("--bins", required=True, help="comma-separated binaries the workspace builds")
    ap.add_argument("--compose", help="another compose file in place of ROOT/docker-compose.yml")
    args = ap.parse_args()
    bins = set(args.bins.split(","))
    problems = []
    compose = args.compose or os.path.join(args.root, "docker-compose.yml")
    base, services, listening = check_compose(args.root, compose, bins, problems)
    check_compose(args.root, os.path.join(args.root, "docker-compose.live.yml"), bins, problems, base=base)
    check_prometheus(args.root, services, listening, problems)
    check_dockerfile(args.root, sorted(bins), problems)
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
