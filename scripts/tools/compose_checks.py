#!/usr/bin/env python3
"""Project checks of the Docker path, run by scripts/validate-compose.sh.

Checks that the Docker path (Dockerfile, docker-compose.yml, deploy/compose/) and the local
scripts (scripts/kafka/, scripts/setup.sh, scripts/quickstart.sh) stay equivalent, and that
the compose services are wired to each other consistently:

- kafka: the image tag is the version scripts/kafka/lib.sh pins; the broker settings from
  the image's KAFKA_* variables equal the server.properties that scripts/kafka/start.sh
  writes, key by key (listener addresses and the data dir differ by nature and are checked
  for shape instead), and the JVM options equal start.sh's defaults;
- wiring: bootstrap servers, the metrics port, the Prometheus target, the Grafana
  datasource and dashboard folder, mounts, depends_on;
- quick start: the same campaigns file and partition count as scripts/quickstart.sh;
- Dockerfile: base images, the build packages of scripts/setup.sh, the cargo command, the
  runtime packages, a non-root user, ENTRYPOINT/CMD/EXPOSE, COPY sources.

Usage: compose_checks.py REPO_ROOT RESOLVED_JSON
  RESOLVED_JSON is docker-compose.yml as loaded by scripts/tools/composeload (compose-go:
  interpolated, normalised, paths resolved).
Prints one line per check; exits 1 if any check failed.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

# The apache/kafka image turns KAFKA_* variables into server.properties lines, except
# these (JVM and logging settings of its scripts). Same list as the image's
# KafkaDockerWrapper (kafka.docker.Constants.ExcludeServerPropsEnv), plus KAFKA_HEAP_OPTS,
# which kafka-server-start.sh reads (the image's list spells it KAFKA_HEAP_OPT, so the image
# also writes an unused heap.opts line; Kafka ignores it).
IMAGE_NON_PROPERTY_VARS = {
    "KAFKA_VERSION",
    "KAFKA_HEAP_OPT",
    "KAFKA_HEAP_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL",
    "KAFKA_JMX_HOSTNAME",
}
# Broker keys whose values name addresses or paths of the machine: compared by shape.
TOPOLOGY_KEYS = {
    "listeners",
    "advertised.listeners",
    "controller.quorum.voters",
    "listener.security.protocol.map",
    "log.dirs",
}
# scripts/setup.sh packages that are not build dependencies of the binary.
SETUP_NOT_FOR_BUILD = {"openjdk-17-jre-headless", "openjdk-17-jdk-headless", "maven"}
CONFIG_IN_CONTAINER = "/etc/connector/connector.yaml"


class Checks:
    def __init__(self) -> None:
        self.failed = 0
        self.passed = 0
        self.warned = 0

    def check(self, ok: bool, what: str, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"  ok    {what}")
        else:
            self.failed += 1
            print(f"  FAIL  {what}" + (f"\n        {detail}" if detail else ""))
        return ok

    def warn(self, what: str) -> None:
        self.warned += 1
        print(f"  warn  {what}")


def image_env_to_property(var: str) -> str:
    """The apache/kafka image's rule: KAFKA_ removed, lower case, _ -> ., ___ -> -, __ -> _."""
    return var.replace("KAFKA_", "").lower().replace("_", ".").replace("...", "-").replace("..", "_")


def parse_properties(text: str, where: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise SystemExit(f"{where}:{n}: not a property line: {raw!r}")
        key, value = line.split("=", 1)
        if key.strip() in props:
            raise SystemExit(f"{where}:{n}: {key.strip()} set twice")
        props[key.strip()] = value.strip()
    return props


def start_sh_properties(start_sh: Path) -> dict[str, str]:
    """The server.properties heredoc of scripts/kafka/start.sh, variables left as written."""
    text = start_sh.read_text()
    m = re.search(r'^cat >"\$KAFKA_SERVER_PROPS" <<\'?EOF\'?\n(.*?)^EOF$', text, re.S | re.M)
    if not m:
        raise SystemExit(f"{start_sh}: server.properties heredoc (cat >\"$KAFKA_SERVER_PROPS\" <<EOF) not found")
    return parse_properties(m.group(1), str(start_sh))


def shell_default(text: str, var: str, where: str) -> str:
    """The default of ${VAR:-default} in a script."""
    m = re.search(r"\$\{" + re.escape(var) + r":-([^}]*)\}", text)
    if not m:
        raise SystemExit(f"{where}: no ${{{var}:-...}} default found")
    return m.group(1).strip()


def listener_list(value: str) -> list[tuple[str, str, str]]:
    """'NAME://host:port,...' -> [(NAME, host, port)]."""
    out = []
    for item in filter(None, (s.strip() for s in value.split(","))):
        m = re.fullmatch(r"([A-Za-z0-9_]+)://(\[[^\]]*\]|[^:]*):(\d+|\$\w+|\$\{\w+\})", item)
        if not m:
            raise SystemExit(f"not a listener: {item!r}")
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


def protocol_map(value: str) -> dict[str, str]:
    return dict(item.split(":", 1) for item in value.split(",") if item)


def voters(value: str) -> list[tuple[str, str, str]]:
    out = []
    for item in value.split(","):
        m = re.fullmatch(r"(\d+)@(.*):(\S+)", item.strip())
        if not m:
            raise SystemExit(f"not a quorum voter: {item!r}")
        out.append((m.group(1), m.group(2), m.group(3)))
    return out


def mounts(service: dict) -> list[dict]:
    return service.get("volumes") or []


def mount_source_for(service: dict, target: str) -> dict | None:
    for v in mounts(service):
        if v.get("target") == target:
            return v
    return None


def host_path_for(service: dict, container_path: str) -> Path | None:
    """The host path a container path maps to through the service's bind mounts."""
    best = None
    for v in mounts(service):
        if v.get("type") != "bind":
            continue
        t = v["target"].rstrip("/")
        if container_path == t or container_path.startswith(t + "/"):
            if best is None or len(t) > len(best[0]):
                best = (t, v["source"])
    if best is None:
        return None
    return Path(best[1] + container_path[len(best[0]):])


def command_words(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return cmd if isinstance(cmd, list) else shlex.split(cmd)


def check_kafka(c: Checks, root: Path, project: dict) -> str:
    """Kafka image and settings against scripts/kafka/; returns the internal bootstrap."""
    print("kafka broker vs scripts/kafka/start.sh and lib.sh")
    services = project["services"]
    kafka = services.get("kafka")
    if not c.check(kafka is not None, "a service named kafka"):
        return ""
    lib_sh = root / "scripts/kafka/lib.sh"
    start_sh = root / "scripts/kafka/start.sh"
    version = shell_default(lib_sh.read_text(), "KAFKA_VERSION", str(lib_sh))
    c.check(
        kafka.get("image") == f"apache/kafka:{version}",
        f"image apache/kafka:{version} (KAFKA_VERSION pinned in scripts/kafka/lib.sh)",
        f"docker-compose.yml has image {kafka.get('image')!r}",
    )

    env: dict[str, str] = {k: ("" if v is None else str(v)) for k, v in (kafka.get("environment") or {}).items()}
    compose_props: dict[str, str] = {}
    vars_of: dict[str, list[str]] = {}
    for var, value in env.items():
        if var.startswith("KAFKA_") and var not in IMAGE_NON_PROPERTY_VARS:
            key = image_env_to_property(var)
            vars_of.setdefault(key, []).append(var)
            compose_props[key] = value
    dups = {k: v for k, v in vars_of.items() if len(v) > 1}
    c.check(not dups, f"{len(compose_props)} broker properties from KAFKA_* variables, one variable each", f"{dups}")
    script_props = start_sh_properties(start_sh)

    # Every setting that is not an address or path: the same key, the same value.
    for key in sorted(set(script_props) | set(compose_props)):
        if key in TOPOLOGY_KEYS:
            continue
        var = "KAFKA_" + key.upper().replace("_", "__").replace("-", "___").replace(".", "_")
        if key not in compose_props:
            c.check(False, f"{key}={script_props[key]}", f"start.sh sets it; docker-compose.yml has no {var}")
        elif key not in script_props:
            c.check(False, f"{key}={compose_props[key]}", f"docker-compose.yml sets {var}; start.sh does not set {key}")
        else:
            c.check(
                compose_props[key] == script_props[key],
                f"{key}={script_props[key]}",
                f"start.sh: {script_props[key]!r}, docker-compose.yml {var}: {compose_props[key]!r}",
            )

    missing = [k for k in sorted(TOPOLOGY_KEYS) if k not in compose_props or k not in script_props]
    if not c.check(not missing, "listeners, advertised.listeners, controller.quorum.voters, "
                   "listener.security.protocol.map, log.dirs set on both sides", f"missing: {missing}"):
        return ""

    # Security protocols: every listener name of start.sh with the same protocol; extra
    # names (the host listener) are PLAINTEXT like the scripts' client listener.
    s_map, k_map = protocol_map(script_props["listener.security.protocol.map"]), protocol_map(
        compose_props["listener.security.protocol.map"])
    drift = {n: (p, k_map.get(n)) for n, p in s_map.items() if k_map.get(n) != p}
    c.check(not drift, "listener.security.protocol.map keeps start.sh's entries", f"(start.sh, compose): {drift}")
    extra = {n: p for n, p in k_map.items() if n not in s_map}
    c.check(all(p == "PLAINTEXT" for p in extra.values()),
            f"extra listener names are PLAINTEXT: {sorted(extra) or 'none'}", f"{extra}")

    s_listeners, k_listeners = listener_list(script_props["listeners"]), listener_list(compose_props["listeners"])
    k_names = {n for n, _, _ in k_listeners}
    c.check({n for n, _, _ in s_listeners} <= k_names, "listeners include start.sh's listener names "
            + ",".join(n for n, _, _ in s_listeners), f"compose listeners: {sorted(k_names)}")
    c.check(k_names <= set(k_map), "every listener has a security protocol", f"{sorted(k_names - set(k_map))}")
    k_port = {n: p for n, _, p in k_listeners}

    s_adv, k_adv = listener_list(script_props["advertised.listeners"]), listener_list(compose_props["advertised.listeners"])
    controller_names = set(compose_props.get("controller.listener.names", "").split(","))
    c.check({n for n, _, _ in s_adv} <= {n for n, _, _ in k_adv}, "advertised.listeners include start.sh's names "
            + ",".join(n for n, _, _ in s_adv))
    c.check(not ({n for n, _, _ in k_adv} & controller_names), "the controller listener is not advertised")
    c.check({n for n, _, _ in k_adv} <= k_names, "every advertised listener is a listener")

    ports = kafka.get("ports") or []
    internal = ""
    for name, host, port in k_adv:
        if name == compose_props.get("inter.broker.listener.name"):
            # Inside the compose network: the service's own name and the listener's port.
            ok = host in {"kafka", kafka.get("hostname")} and port == k_port.get(name)
            c.check(ok, f"{name} advertises {host}:{port}, the service on its listener port",
                    f"listener port {k_port.get(name)}")
            internal = f"{host}:{port}"
        else:
            # For the host: a published port on 127.0.0.1 (as the scripts' broker) that
            # forwards to this listener's port.
            fwd = [p for p in ports if str(p.get("published")) == port and str(p.get("target")) == k_port.get(name)]
            c.check(bool(fwd) and host in {"127.0.0.1", "localhost"} and all(p.get("host_ip") == "127.0.0.1" for p in fwd),
                    f"{name} advertises {host}:{port}, published on 127.0.0.1:{port} -> {k_port.get(name)}",
                    f"ports: {ports}")

    s_voters, k_voters = voters(script_props["controller.quorum.voters"]), voters(compose_props["controller.quorum.voters"])
    c.check([v[0] for v in s_voters] == [v[0] for v in k_voters] == [compose_props.get("node.id")],
            "controller.quorum.voters: the one voter is node.id " + str(compose_props.get("node.id")))
    c.check(all(h in {"kafka", kafka.get("hostname")} and p == k_port.get(next(iter(controller_names)), "")
                for _, h, p in k_voters),
            "the voter is this service on its CONTROLLER listener port", f"{k_voters}")

    log_dirs = compose_props["log.dirs"]
    vol = mount_source_for(kafka, log_dirs)
    c.check(vol is not None and vol.get("type") == "volume",
            f"log.dirs {log_dirs} is a named volume (storage kept across restarts, like start.sh's data dir)")

    # JVM: start.sh's defaults.
    start_text = start_sh.read_text()
    for var, script_var in (("KAFKA_HEAP_OPTS", "KAFKA_HEAP_OPTS"), ("KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_JVM_OPTS")):
        want = shell_default(start_text, script_var, str(start_sh))
        c.check(env.get(var, "").split() == want.split(), f"{var}={want} (start.sh's {script_var} default)",
                f"docker-compose.yml: {env.get(var)!r}")

    hc = " ".join((kafka.get("healthcheck") or {}).get("test") or [])
    c.check(bool(internal) and internal in hc, f"healthcheck asks the broker at {internal}", f"test: {hc!r}")
    return internal


def check_wiring(c: Checks, root: Path, project: dict, internal_bootstrap: str, expose: set[str], cmd: list[str]) -> None:
    print("compose wiring")
    services = project["services"]
    for name in ("topics", "connector", "prometheus", "grafana"):
        c.check(name in services, f"a service named {name}")
    if not all(n in services for n in ("topics", "connector", "prometheus", "grafana")):
        return
    topics, connector, prom, grafana = (services[n] for n in ("topics", "connector", "prometheus", "grafana"))

    for sname, s in sorted(services.items()):
        for v in mounts(s):
            if v.get("type") == "bind":
                c.check(Path(v["source"]).exists(), f"{sname}: bind mount source {Path(v['source']).relative_to(root)} exists")

    dep = lambda s, d: ((s.get("depends_on") or {}).get(d) or {}).get("condition")  # noqa: E731
    c.check(dep(topics, "kafka") == "service_healthy", "topics waits for kafka healthy")
    c.check(dep(connector, "topics") == "service_completed_successfully", "connector waits for topics to complete")
    c.check(connector.get("image") == topics.get("image") and bool(connector.get("build")) and
            connector.get("build") == topics.get("build"), "topics and connector run the image built from the Dockerfile")
    c.check(connector.get("build", {}).get("dockerfile") == "Dockerfile", "connector builds ./Dockerfile")

    # Connector configuration: the mounted file plus CONNECTOR_* overrides.
    users = {n: s for n, s in services.items() if s.get("image") == connector.get("image")}
    c.check({"topics", "connector"} <= set(users), "topics and connector use the connector image")
    for sname, s in sorted(users.items()):
        src = host_path_for(s, CONFIG_IN_CONTAINER)
        if not c.check(src is not None and src.is_file(), f"{sname}: {CONFIG_IN_CONTAINER} is a mounted file"):
            continue
        if sname != "connector":
            # The CMD passes --config; other commands find the file through CONNECTOR_CONFIG.
            c.check((s.get("environment") or {}).get("CONNECTOR_CONFIG") == CONFIG_IN_CONTAINER,
                    f"{sname}: CONNECTOR_CONFIG={CONFIG_IN_CONTAINER}")
        cfg = yaml.safe_load(src.read_text()) or {}
        env = s.get("environment") or {}
        bootstrap = env.get("CONNECTOR_BOOTSTRAP_SERVERS") or cfg.get("bootstrap_servers")
        c.check(bootstrap == internal_bootstrap, f"{sname}: bootstrap_servers {bootstrap} is kafka's internal listener",
                f"kafka advertises {internal_bootstrap!r}")
    c.check(command_words(connector) in ([], cmd), f"connector runs the image's CMD {cmd}", f"{command_words(connector)}")
    c.check(bool((connector.get("environment") or {}).get("CONNECTOR_INSTANCE_ID")), "connector sets CONNECTOR_INSTANCE_ID")

    # Metrics: listen address, published port, EXPOSE, Prometheus target.
    listen = (connector.get("environment") or {}).get("CONNECTOR_HTTP_LISTEN", "")
    m = re.fullmatch(r"0\.0\.0\.0:(\d+)", listen)
    c.check(bool(m), f"connector: CONNECTOR_HTTP_LISTEN={listen} listens on all interfaces of the container")
    mport = m.group(1) if m else "?"
    c.check(mport in expose, f"Dockerfile EXPOSEs the metrics port {mport}", f"EXPOSE {sorted(expose)}")
    c.check(any(str(p.get("target")) == mport and p.get("host_ip") == "127.0.0.1" for p in connector.get("ports") or []),
            f"connector publishes {mport} on 127.0.0.1")

    prom_file = host_path_for(prom, "/etc/prometheus/prometheus.yml")
    if c.check(prom_file is not None and prom_file.is_file(), "prometheus: /etc/prometheus/prometheus.yml is mounted"):
        pcfg = yaml.safe_load(prom_file.read_text())
        jobs = pcfg.get("scrape_configs") or []
        targets = [(j.get("metrics_path", "/metrics"), t) for j in jobs for sc in j.get("static_configs") or []
                   for t in sc.get("targets") or []]
        c.check(("/metrics", f"connector:{mport}") in targets, f"prometheus scrapes connector:{mport}/metrics", f"{targets}")
    c.check(any(str(p.get("target")) == "9090" for p in prom.get("ports") or []), "prometheus publishes 9090")

    prov = host_path_for(grafana, "/etc/grafana/provisioning")
    if c.check(prov is not None and prov.is_dir(), "grafana: /etc/grafana/provisioning is mounted"):
        ds = [d for f in sorted((prov / "datasources").glob("*.y*ml")) for d in yaml.safe_load(f.read_text()).get("datasources", [])]
        c.check(any(d.get("type") == "prometheus" and d.get("url") == "http://prometheus:9090" for d in ds),
                "grafana datasource: prometheus at http://prometheus:9090", f"{ds}")
        providers = [p for f in sorted((prov / "dashboards").glob("*.y*ml")) for p in yaml.safe_load(f.read_text()).get("providers", [])]
        paths = [p.get("options", {}).get("path", "") for p in providers]
        dash_dirs = [host_path_for(grafana, p) for p in paths]
        ok = any(d is not None and d.resolve() == (root / "deploy/grafana").resolve() for d in dash_dirs)
        c.check(ok, "grafana dashboards provider reads deploy/grafana/ (mounted)", f"provider paths {paths}")
        if ok and not list((root / "deploy/grafana").glob("*.json")):
            c.warn("deploy/grafana/ has no dashboard JSON yet (campaign-connector.json is written separately)")
    c.check(any(str(p.get("target")) == "3000" for p in grafana.get("ports") or []), "grafana publishes 3000")

    # The quick start's campaigns and partitions, as scripts/quickstart.sh.
    qs = (root / "scripts/quickstart.sh").read_text()
    m = re.search(r'campaigns publish (\S+)', qs)
    qs_file = m.group(1) if m else None
    words = " ".join(command_words(topics) + list(topics.get("entrypoint") or [])).split()
    published = [w for w in words if w.endswith((".yaml", ".yml")) and w != CONFIG_IN_CONTAINER]
    hosts = [host_path_for(topics, w) for w in published]
    c.check(bool(qs_file) and any(h is not None and h.resolve() == (root / qs_file).resolve() for h in hosts),
            f"topics publishes {qs_file} like scripts/quickstart.sh", f"publishes {published} -> {hosts}")
    c.check("topics create" in " ".join(words), "topics runs `topics create`")
    m = re.search(r"CONNECTOR_PARTITIONS=(\d+)", qs)
    cfg = yaml.safe_load((host_path_for(topics, CONFIG_IN_CONTAINER) or Path("/dev/null")).read_text()) or {}
    c.check(m is not None and str(cfg.get("partitions")) == m.group(1),
            f"partitions {cfg.get('partitions')} as scripts/quickstart.sh's CONNECTOR_PARTITIONS")


def stages(df: DockerfileParser) -> list[dict]:
    """Stages with their FROM (ARG defaults substituted) and instructions."""
    args: dict[str, str] = {}
    out: list[dict] = []
    for ins in df.structure:
        name, value = ins["instruction"], ins["value"]
        if name == "ARG" and not out and "=" in value:
            k, v = value.split("=", 1)
            args[k.strip()] = v.strip().strip('"')
        elif name == "FROM":
            words = value.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), words[0])
            alias = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            out.append({"image": image, "alias": alias, "ins": []})
        elif out:
            out[-1]["ins"].append(ins)
    return out


def apt_packages(stage: dict) -> set[str]:
    pkgs: set[str] = set()
    for ins in stage["ins"]:
        if ins["instruction"] == "RUN":
            for m in re.finditer(r"apt-get install ([^&;|]*)", ins["value"]):
                pkgs |= {w for w in m.group(1).replace("\\", " ").split() if not w.startswith("-")}
    return pkgs


def check_dockerfile(c: Checks, root: Path) -> tuple[set[str], list[str]]:
    print("Dockerfile (project rules)")
    df = DockerfileParser(path=str(root / "Dockerfile"))
    st = stages(df)
    if not c.check(len(st) >= 2, "multi-stage: a build stage and a runtime stage", f"{len(st)} stage(s)"):
        return set(), []
    build, runtime = st[0], st[-1]
    c.check(re.fullmatch(r"rust:[0-9.]+-bookworm", build["image"]) is not None,
            f"build stage FROM {build['image']} (official rust image, bookworm, pinned version)")
    c.check(runtime["image"] == "debian:bookworm-slim", f"runtime stage FROM {runtime['image']}")

    setup = (root / "scripts/setup.sh").read_text()
    needed = set(re.findall(r"need\+=\(([\w.+-]+)\)", setup)) - SETUP_NOT_FOR_BUILD
    have = apt_packages(build)
    c.check(bool(needed) and needed <= have, "build stage installs scripts/setup.sh's build packages: "
            + " ".join(sorted(needed)), f"missing {sorted(needed - have)}")
    runs = " ".join(i["value"] for i in build["ins"] if i["instruction"] == "RUN")
    c.check("cargo build --release --locked --bin campaign-connector" in runs,
            "build: cargo build --release --locked --bin campaign-connector")
    want_rt = {"libssl3", "libcurl4", "ca-certificates"}
    c.check(want_rt <= apt_packages(runtime), "runtime installs " + " ".join(sorted(want_rt)),
            f"missing {sorted(want_rt - apt_packages(runtime))}")

    users = [i["value"].split(":")[0] for i in runtime["ins"] if i["instruction"] == "USER"]
    c.check(bool(users) and users[-1] not in {"root", "0"}, f"runtime runs as a non-root user ({users[-1] if users else 'none'})")
    last = {i["instruction"]: i["value"] for i in runtime["ins"]}
    entry = json.loads(last.get("ENTRYPOINT", "null"))
    cmd = json.loads(last.get("CMD", "null"))
    c.check(entry == ["campaign-connector"], f"ENTRYPOINT {entry}")
    c.check(cmd == ["run", "--config", CONFIG_IN_CONTAINER], f"CMD {cmd}")
    expose = {p.split("/")[0] for i in runtime["ins"] if i["instruction"] == "EXPOSE" for p in i["value"].split()}
    c.check("9464" in expose, f"EXPOSE {' '.join(sorted(expose))}")
    c.check(any(i["instruction"] == "COPY" and CONFIG_IN_CONTAINER in i["value"] for i in runtime["ins"]),
            f"the image has a default {CONFIG_IN_CONTAINER} (the CMD's config file)")

    ignore = [l.strip().rstrip("/") for l in (root / ".dockerignore").read_text().splitlines()
              if l.strip() and not l.startswith("#")]
    for stage in st:
        for ins in stage["ins"]:
            if ins["instruction"] != "COPY" or "--from=" in ins["value"]:
                continue
            srcs = [w for w in ins["value"].split()[:-1] if not w.startswith("--")]
            for s in srcs:
                p = s.rstrip("/").removeprefix("./") or "."
                ignored = any(p == g or p.startswith(g + "/") for g in ignore)
                c.check((root / s).exists() and not ignored, f"COPY source {s} exists and is not in .dockerignore")
    c.check({"target", ".cache", ".git"} <= set(ignore), ".dockerignore excludes target/, .cache/, .git", f"{ignore}")
    return expose, cmd or []


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(sys.argv[1]).resolve()
    project = json.loads(Path(sys.argv[2]).read_text())
    c = Checks()
    expose, cmd = check_dockerfile(c, root)
    internal = check_kafka(c, root, project)
    check_wiring(c, root, project, internal, expose, cmd)
    print(f"project checks: {c.passed} passed, {c.failed} failed" + (f", {c.warned} warnings" if c.warned else ""))
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
