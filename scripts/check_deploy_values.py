"""Checks that the values deploy/ spreads over several files agree with each other and with
the `corral` binary: environment variable names, ports, probe paths, session secret wiring
and shutdown grace periods, across the shared env files, the compose file (as `docker compose
config` renders it), every Kubernetes overlay (as `kubectl kustomize` renders it), the
Dockerfile and the Prometheus scrape config.

Usage: check_deploy_values.py CORRAL_BIN COMPOSE_JSON OVERLAY_YAML... (scripts/check-deploy
renders the inputs). `--self-test` feeds it broken copies and checks that each is caught.
"""

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy/k8s/base/config"


def env_file(path):
    """KEY=VALUE lines of a .env file (comments and blanks skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def help_text(corral, *subcommand):
    out = subprocess.run([corral, *subcommand, "--help"], capture_output=True, text=True, check=True)
    return out.stdout


def env_names(corral, subcommand):
    """The CORRAL_* variables `corral SUBCOMMAND --help` lists."""
    return set(re.findall(r"\[env: (CORRAL_[A-Z0-9_]+)", help_text(corral, subcommand)))


def flags(corral, *subcommand):
    """The long flags `corral SUBCOMMAND --help` lists."""
    return set(re.findall(r"^\s+(?:-\w, )?(--[a-z0-9-]+)", help_text(corral, *subcommand), re.M))


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def seconds(duration):
    """`25s`, `2500ms`, `1m` (the humantime forms the env files use) in seconds."""
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", duration):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def compose_seconds(value):
    """A compose duration (`35s`, `1m30s`) or the nanoseconds `config --format json` prints."""
    if isinstance(value, (int, float)):
        return value / 1e9
    return seconds(value)


class Checker:
    def __init__(self, corral):
        self.errors = []
        self.node_env = env_file(CONFIG / "node.env")
        self.gateway_env = env_file(CONFIG / "gateway.env")
        self.names = {s: env_names(corral, s) for s in ("node", "gateway", "loadtest")}
        self.loadtest_flags = flags(corral, "loadtest", "chat")
        self.node_port = port_of(self.node_env["CORRAL_LISTEN"])
        self.gateway_port = port_of(self.gateway_env["CORRAL_LISTEN"])
        self.admin_port = port_of(self.gateway_env["CORRAL_ADMIN_LISTEN"])
        # The longest a node or gateway may take to stop after SIGTERM.
        self.node_stop = seconds(self.node_env["CORRAL_DRAIN_TIMEOUT"])
        self.gateway_stop = seconds(self.gateway_env["CORRAL_DRAIN_TIMEOUT"])

    def fail(self, where, message):
        self.errors.append(f"{where}: {message}")

    def env_known(self, where, subcommand, names):
        for name in sorted(names):
            if name.startswith("CORRAL_") and name not in self.names[subcommand]:
                self.fail(where, f"{name} is not a variable of `corral {subcommand}`")

    def loadtest_args(self, where, args):
        if args[:1] != ["chat"]:
            self.fail(where, f"runs `corral loadtest {' '.join(args[:1])}`, not the chat scenario")
        for arg in args[1:]:
            if arg.startswith("--") and arg.split("=")[0] not in self.loadtest_flags:
                self.fail(where, f"{arg} is not a flag of `corral loadtest`")
        if "--namespace" not in args or args[args.index("--namespace") + 1] != self.node_env.get(
            "CORRAL_BENCH_NAMESPACE"
        ):
            self.fail(where, "the load test must use --namespace CORRAL_BENCH_NAMESPACE of node.env")

    def shared_env(self):
        self.env_known("node.env", "node", self.node_env)
        self.env_known("gateway.env", "gateway", self.gateway_env)

    # compose ------------------------------------------------------------------------------

    def compose(self, rendered):
        services = rendered["services"]
        for name, svc in services.items():
            if not str(svc.get("image", "")).startswith("corral"):
                continue
            where = f"compose {name}"
            command = svc.get("command") or ["node"]
            sub = command[0]
            env = svc.get("environment") or {}
            self.env_known(where, sub, env)
            probe = (svc.get("healthcheck") or {}).get("test", [])
            grace = compose_seconds(svc.get("stop_grace_period", "10s"))
            if sub == "node":
                for key, value in self.node_env.items():
                    if env.get(key) != value and key not in ("CORRAL_NODE_ID",):
                        self.fail(where, f"{key}={env.get(key)!r}, node.env says {value!r}")
                if probe[-1:] != [f"http://127.0.0.1:{self.node_port}/readyz"]:
                    self.fail(where, f"healthcheck {probe} is not /readyz on port {self.node_port}")
                if grace <= self.node_stop:
                    self.fail(where, f"stop_grace_period {grace}s is not above the drain ({self.node_stop}s)")
                if env.get("CORRAL_ADVERTISE_ADDRESS") != f"{name}:{self.node_port}":
                    self.fail(where, f"CORRAL_ADVERTISE_ADDRESS must be {name}:{self.node_port}")
            elif sub == "gateway":
                for key, value in self.gateway_env.items():
                    if key != "CORRAL_AFFINITY" and env.get(key) != value:
                        self.fail(where, f"{key}={env.get(key)!r}, gateway.env says {value!r}")
                if probe[-1:] != [f"http://127.0.0.1:{self.admin_port}/readyz"]:
                    self.fail(where, f"healthcheck {probe} is not /readyz on the admin port {self.admin_port}")
                if grace <= self.gateway_stop:
                    self.fail(where, f"stop_grace_period {grace}s is not above the drain ({self.gateway_stop}s)")
                if "CORRAL_SESSION_SECRET" not in env:
                    self.fail(where, "no CORRAL_SESSION_SECRET: replicas must share one")
                for port in svc.get("ports", []):
                    if int(port["target"]) not in (self.gateway_port, self.admin_port):
                        self.fail(where, f"publishes container port {port['target']}, not a gateway port")
            elif sub == "loadtest":
                self.loadtest_args(where, command[1:])
                for i, arg in enumerate(command):
                    if arg == "--url":
                        host, port = command[i + 1].split("//")[1].split(":")
                        if host not in services or int(port) != self.gateway_port:
                            self.fail(where, f"--url {command[i + 1]} is not a gateway on {self.gateway_port}")
        secrets = {
            svc["environment"].get("CORRAL_SESSION_SECRET")
            for svc in services.values()
            if (svc.get("command") or [""])[0] == "gateway"
        }
        if len(secrets) != 1:
            self.fail("compose", "the gateways do not share one CORRAL_SESSION_SECRET")

    def prometheus(self, config, node_names):
        targets = {t for job in config["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
        for node in node_names:
            if f"{node}:{self.node_port}" not in targets:
                self.fail("prometheus.yml", f"does not scrape {node}:{self.node_port}")
        if f"gateway:{self.admin_port}" not in targets:
            self.fail("prometheus.yml", f"does not scrape gateway:{self.admin_port}")

    def dockerfile(self, text):
        exposed = {int(p) for line in text.splitlines() if line.startswith("EXPOSE") for p in line.split()[1:]}
        wanted = {self.node_port, self.gateway_port, self.admin_port}
        if exposed != wanted:
            self.fail("Dockerfile", f"EXPOSE {sorted(exposed)}, the env files say {sorted(wanted)}")

    # Kubernetes -----------------------------------------------------------------------------

    def kubernetes(self, overlay, docs):
        by_kind = {}
        for doc in docs:
            if doc:
                by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
        where = f"k8s {overlay}"
        config_maps = by_kind.get("ConfigMap", {})
        for cm_prefix, shared in (("corral-node", self.node_env), ("corral-gateway", self.gateway_env)):
            maps = [cm for name, cm in config_maps.items() if name.startswith(cm_prefix)]
            if len(maps) != 1:
                self.fail(where, f"expected one ConfigMap {cm_prefix}*, found {len(maps)}")
                continue
            data = maps[0].get("data", {})
            for key, value in shared.items():
                # An overlay may switch the bench namespace off; nothing else may differ.
                if key not in data or (data[key] != value and key != "CORRAL_BENCH_NAMESPACE"):
                    self.fail(where, f"ConfigMap {cm_prefix}: {key}={data.get(key)!r}, the env file says {value!r}")

        workloads = list(by_kind.get("StatefulSet", {}).values()) + list(by_kind.get("Deployment", {}).values())
        workloads += [job for job in by_kind.get("Job", {}).values()]
        seen = set()
        for wl in workloads:
            pod = wl["spec"]["template"]["spec"]
            for c in pod["containers"]:
                args = c.get("args") or []
                if not str(c.get("image", "")).startswith(("corral", "registry.example.com/corral")):
                    continue
                sub = args[0] if args else "node"
                seen.add(sub)
                w = f"{where} {wl['kind']} {wl['metadata']['name']}"
                env = {e["name"]: e for e in c.get("env", [])}
                self.env_known(w, sub, env)
                ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
                pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
                grace = pod.get("terminationGracePeriodSeconds", 30)
                if sub == "node":
                    self.workload_ports(w, c, ports, {self.node_port}, self.node_port)
                    if grace <= pre_stop + self.node_stop:
                        self.fail(w, f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain {self.node_stop}")
                    if "CORRAL_ADVERTISE_ADDRESS" not in env or not env["CORRAL_ADVERTISE_ADDRESS"]["value"].endswith(
                        f":{self.node_port}"
                    ):
                        self.fail(w, f"CORRAL_ADVERTISE_ADDRESS must end in :{self.node_port}")
                    self.service_targets(where, by_kind, wl, {self.node_port})
                elif sub == "gateway":
                    self.workload_ports(w, c, ports, {self.gateway_port, self.admin_port}, self.admin_port)
                    if grace <= pre_stop + self.gateway_stop:
                        self.fail(w, f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain {self.gateway_stop}")
                    ref = env.get("CORRAL_SESSION_SECRET", {}).get("valueFrom", {}).get("secretKeyRef")
                    if not ref:
                        self.fail(w, "CORRAL_SESSION_SECRET does not come from a Secret")
                    elif overlay != "prod":
                        secret = by_kind.get("Secret", {}).get(ref["name"])
                        if secret is None or ref["key"] not in {**secret.get("data", {}), **secret.get("stringData", {})}:
                            self.fail(w, f"Secret {ref['name']} with key {ref['key']} is not in the overlay")
                    self.service_targets(where, by_kind, wl, {self.gateway_port, self.admin_port})
                elif sub == "loadtest":
                    self.loadtest_args(w, args[1:])
        for sub in ("node", "gateway"):
            if sub not in seen:
                self.fail(where, f"no corral {sub} workload")

    def workload_ports(self, where, container, ports, wanted, probe_port):
        if set(ports.values()) != wanted:
            self.fail(where, f"container ports {sorted(ports.values())}, the env files say {sorted(wanted)}")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container.get(probe, {}).get("httpGet")
            if not get:
                self.fail(where, f"no {probe}")
                continue
            port = ports.get(get["port"], get["port"])
            if get["path"] != path or port != probe_port:
                self.fail(where, f"{probe} is {get['path']} on {port}, wanted {path} on {probe_port}")

    def service_targets(self, where, by_kind, workload, wanted):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        container_ports = {
            p["name"]: p["containerPort"] for c in workload["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
        }
        matched = False
        for svc in by_kind.get("Service", {}).values():
            selector = svc["spec"].get("selector") or {}
            if not selector or any(labels.get(k) != v for k, v in selector.items()):
                continue
            matched = True
            for port in svc["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                target = container_ports.get(target, target)
                if target not in wanted:
                    self.fail(where, f"Service {svc['metadata']['name']} targets port {target}, not one of {sorted(wanted)}")
        if not matched:
            self.fail(where, f"no Service selects {workload['metadata']['name']}")


def run(corral, compose_json, overlays):
    checker = Checker(corral)
    checker.shared_env()
    rendered = json.loads(Path(compose_json).read_text())
    checker.compose(rendered)
    nodes = [n for n, s in rendered["services"].items() if (s.get("command") or [""])[0] == "node"]
    checker.prometheus(yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text()), nodes)
    checker.dockerfile((ROOT / "deploy/docker/Dockerfile").read_text())
    for overlay in overlays:
        name = Path(overlay).stem
        checker.kubernetes(name, list(yaml.safe_load_all(Path(overlay).read_text())))
    return checker


def self_test(corral, compose_json, overlays):
    """Each broken copy must be reported: the check is only worth something if it can fail."""
    good = json.loads(Path(compose_json).read_text())
    dev = list(yaml.safe_load_all(Path(overlays[0]).read_text()))
    baseline = Checker(corral)
    baseline.compose(good)
    baseline.kubernetes("dev", dev)
    if baseline.errors:
        return ["the unbroken files already fail: " + "; ".join(baseline.errors)]

    def compose_errors(mutate):
        c = Checker(corral)
        broken = copy.deepcopy(good)
        mutate(broken["services"])
        c.compose(broken)
        return c.errors

    def k8s_errors(mutate):
        c = Checker(corral)
        broken = copy.deepcopy(dev)
        mutate([d for d in broken if d])
        c.kubernetes("dev", broken)
        return c.errors

    def first(docs, kind, prefix):
        return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(prefix))

    cases = {
        "a node healthcheck on the wrong port": lambda s: s["node-1"]["healthcheck"]["test"].__setitem__(-1, "http://127.0.0.1:4001/readyz"),
        "an unknown variable": lambda s: s["gateway"]["environment"].__setitem__("CORRAL_NO_SUCH_THING", "1"),
        "a short stop grace": lambda s: s["node-2"].__setitem__("stop_grace_period", "5s"),
        "a missing session secret": lambda s: s["gateway"]["environment"].pop("CORRAL_SESSION_SECRET"),
        "a load test flag that does not exist": lambda s: s["loadtest"]["command"].append("--no-such-flag"),
    }
    failures = []
    for what, mutate in cases.items():
        if not compose_errors(mutate):
            failures.append(f"compose with {what} passed")
    k8s_cases = {
        "a readiness probe on /healthz": lambda d: first(d, "StatefulSet", "corral-node")["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"].__setitem__("path", "/healthz"),
        "a grace period shorter than the drain": lambda d: first(d, "Deployment", "corral-gateway")["spec"]["template"]["spec"].__setitem__("terminationGracePeriodSeconds", 10),
        "a ConfigMap value that differs": lambda d: first(d, "ConfigMap", "corral-node")["data"].__setitem__("CORRAL_HEARTBEAT_INTERVAL", "9s"),
    }
    for what, mutate in k8s_cases.items():
        if not k8s_errors(mutate):
            failures.append(f"Kubernetes with {what} passed")
    return failures


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    corral, compose_json, overlays = argv[1], argv[2], argv[3:]
    if overlays[0] == "--self-test":
        failures = self_test(corral, compose_json, overlays[1:])
        for f in failures:
            print(f"self-test: {f}", file=sys.stderr)
        return 1 if failures else 0
    checker = run(corral, compose_json, overlays)
    for error in checker.errors:
        print(f"deploy values: {error}", file=sys.stderr)
    return 1 if checker.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
