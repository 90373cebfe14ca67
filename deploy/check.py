#!/usr/bin/env python3
"""Syntax checks of the deployment files, with no cluster, docker or systemd needed.

    python3 deploy/check.py

- every YAML file under deploy/ (all documents) parses;
- every Kubernetes document under deploy/k8s/ has apiVersion, kind and metadata.name; the
  files a kustomization lists exist, and secret.example.yaml is not among them;
- every Secret under deploy/ has only empty values (real keys are never committed);
- a ConfigMap's `*.toml` entry parses and uses only keys that deploy/examples/interflow.toml
  documents (the node refuses unknown keys);
- compose.yaml: services have an image or a build, and the volumes, `network_mode: service:`
  and `depends_on` they name exist;
- every TOML file under deploy/ (deploy/examples/*.toml) parses with tomllib;
- every systemd unit under deploy/systemd/ has [Unit], [Service] and [Install] and an
  ExecStart= with an absolute path;
- the Dockerfile labels its image with the OCI annotations (title, description, version,
  revision, created, licenses), and its VERSION default is the workspace version;
- every Grafana dashboard (deploy/grafana/*.json) parses, has a title, a uid and panels, and
  each panel query names an interflow_* or process_* metric; every Prometheus alert rule
  (deploy/prometheus/*.yaml) has a name and an expression naming an interflow_* metric.
  That those metrics exist is checked against a real node's /metrics by the Rust test
  `service::every_metric_the_alerts_and_dashboards_name_is_exported` (tests/federation).

Directories starting with `.` (such as a dev federation in deploy/.interflow-dev/) are
skipped. Exit status: 0 all good, 1 a check failed (each problem is printed with its file),
2 PyYAML or tomllib is missing.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
EXAMPLE_CONFIG = DEPLOY / "examples" / "interflow.toml"

problems: list[str] = []


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def problem(path: Path, message: str) -> None:
    problems.append(f"{rel(path)}: {message}")


def files(suffixes: tuple[str, ...]) -> list[Path]:
    """Files under deploy/ with one of `suffixes`, outside hidden directories."""
    found = []
    for p in sorted(DEPLOY.rglob("*")):
        parts = p.relative_to(DEPLOY).parts
        if any(part.startswith(".") for part in parts[:-1]):
            continue
        if p.is_file() and p.name.endswith(suffixes):
            found.append(p)
    return found


def toml_keys(table: dict, prefix: str = "") -> set[str]:
    """Dotted key paths of a TOML document; arrays of tables share their element keys."""
    keys = set()
    for k, v in table.items():
        path = f"{prefix}{k}"
        keys.add(path)
        if isinstance(v, dict):
            keys |= toml_keys(v, path + ".")
        elif isinstance(v, list) and v and all(isinstance(e, dict) for e in v):
            for e in v:
                keys |= toml_keys(e, path + ".")
    return keys


def check_toml_files(tomllib) -> int:
    count = 0
    for path in files((".toml",)):
        count += 1
        try:
            with path.open("rb") as f:
                tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            problem(path, f"invalid TOML: {e}")
    if not EXAMPLE_CONFIG.is_file():
        problem(EXAMPLE_CONFIG, "missing (it documents every node config key)")
    return count


def example_keys(tomllib) -> set[str] | None:
    try:
        with EXAMPLE_CONFIG.open("rb") as f:
            return toml_keys(tomllib.load(f))
    except (OSError, tomllib.TOMLDecodeError):
        return None  # reported by check_toml_files


def load_yaml(yaml, path: Path) -> list | None:
    try:
        with path.open(encoding="utf-8") as f:
            docs = list(yaml.safe_load_all(f))
    except yaml.YAMLError as e:
        problem(path, f"invalid YAML: {e}".replace("\n", " "))
        return None
    except UnicodeDecodeError as e:
        problem(path, f"not UTF-8: {e}")
        return None
    if not any(d is not None for d in docs):
        problem(path, "no YAML document")
        return None
    return docs


def check_k8s_doc(path: Path, n: int, doc, known_keys, tomllib) -> None:
    where = f"document {n}"
    if not isinstance(doc, dict):
        problem(path, f"{where}: a Kubernetes object must be a mapping, not {type(doc).__name__}")
        return
    for key in ("apiVersion", "kind"):
        if not isinstance(doc.get(key), str) or not doc[key].strip():
            problem(path, f"{where}: missing or empty `{key}`")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"].strip():
        problem(path, f"{where} ({doc.get('kind', '?')}): missing or empty `metadata.name`")
    kind = doc.get("kind")
    name = meta.get("name") if isinstance(meta, dict) else "?"
    if kind == "Kustomization":
        for section in ("resources", "components"):
            for entry in doc.get(section) or []:
                if not isinstance(entry, str):
                    problem(path, f"{where}: `{section}` entry {entry!r} is not a path")
                elif "://" in entry:
                    continue
                elif not (path.parent / entry).exists():
                    problem(path, f"{where}: `{section}` names `{entry}`, which does not exist")
                elif Path(entry).name == "secret.example.yaml":
                    problem(path, f"{where}: `{section}` must not list `{entry}`: applying it "
                            "would replace the real Secrets with empty values")
    if kind == "ConfigMap":
        for key, text in (doc.get("data") or {}).items():
            if not str(key).endswith(".toml"):
                continue
            label = f"{where} (ConfigMap {name}), `data.{key}`"
            if not isinstance(text, str):
                problem(path, f"{label}: not a string")
                continue
            try:
                parsed = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                problem(path, f"{label}: invalid TOML: {e}")
                continue
            if known_keys is not None:
                for k in sorted(toml_keys(parsed) - known_keys):
                    problem(path, f"{label}: key `{k}` is not in {rel(EXAMPLE_CONFIG)} "
                            "(the node refuses unknown keys)")


def check_secret_doc(path: Path, n: int, doc) -> None:
    if not isinstance(doc, dict) or doc.get("kind") != "Secret":
        return
    name = (doc.get("metadata") or {}).get("name", "?")
    for section in ("data", "stringData"):
        values = doc.get(section) or {}
        if not isinstance(values, dict):
            problem(path, f"document {n} (Secret {name}): `{section}` must be a mapping")
            continue
        for key, value in values.items():
            if value not in ("", None):
                problem(path, f"document {n} (Secret {name}): `{section}.{key}` has a value; "
                        "secrets in this repository must stay empty placeholders")


def check_compose(path: Path, doc) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict) or not doc["services"]:
        problem(path, "no `services` mapping")
        return
    services = doc["services"]
    volumes = doc.get("volumes") or {}
    for name, svc in services.items():
        if not isinstance(svc, dict):
            problem(path, f"service `{name}`: must be a mapping")
            continue
        if "image" not in svc and "build" not in svc:
            problem(path, f"service `{name}`: has neither `image` nor `build`")
        mode = svc.get("network_mode")
        if isinstance(mode, str) and mode.startswith("service:") and mode[8:] not in services:
            problem(path, f"service `{name}`: network_mode names unknown service `{mode[8:]}`")
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, (list, dict)) else []:
            if dep not in services:
                problem(path, f"service `{name}`: depends_on names unknown service `{dep}`")
        for vol in svc.get("volumes") or []:
            if isinstance(vol, dict):
                if vol.get("type", "volume") != "volume":
                    continue
                source = vol.get("source")
            else:
                source = str(vol).split(":", 1)[0] if ":" in str(vol) else None
            if not source or source.startswith((".", "/", "~", "$")):
                continue  # an anonymous volume or a bind mount
            if source not in volumes:
                problem(path, f"service `{name}`: volume `{source}` is not declared under "
                        "top-level `volumes`")


def check_yaml_files(yaml, tomllib) -> tuple[int, int, int]:
    known_keys = example_keys(tomllib)
    n_files = n_docs = n_k8s = 0
    k8s_dir = DEPLOY / "k8s"
    for path in files((".yaml", ".yml")):
        n_files += 1
        docs = load_yaml(yaml, path)
        if docs is None:
            continue
        is_k8s = k8s_dir in path.parents
        for n, doc in enumerate(docs, start=1):
            if doc is None:
                continue  # an empty document, e.g. after a trailing `---`
            n_docs += 1
            check_secret_doc(path, n, doc)
            if is_k8s:
                n_k8s += 1
                check_k8s_doc(path, n, doc, known_keys, tomllib)
        if path.parent == DEPLOY and path.stem in ("compose", "docker-compose"):
            check_compose(path, docs[0])
    return n_files, n_docs, n_k8s


def check_systemd_units() -> int:
    units = files((".service",))
    for path in units:
        sections: dict[str, list[tuple[int, str, str]]] = {}
        current = None
        lines = path.read_text(encoding="utf-8").splitlines()
        i = 0
        while i < len(lines):
            lineno, line = i + 1, lines[i].strip()
            # A trailing backslash continues the setting on the next line.
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            i += 1
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                if not line.endswith("]") or len(line) < 3:
                    problem(path, f"line {lineno}: malformed section header `{line}`")
                    continue
                current = line[1:-1]
                sections.setdefault(current, [])
                continue
            if "=" not in line:
                problem(path, f"line {lineno}: expected `Key=value`, got `{line}`")
                continue
            if current is None:
                problem(path, f"line {lineno}: setting before the first [Section]")
                continue
            key, value = line.split("=", 1)
            sections[current].append((lineno, key.strip(), value.strip()))
        for required in ("Unit", "Service", "Install"):
            if required not in sections:
                problem(path, f"no [{required}] section")
        starts = [(n, v) for n, k, v in sections.get("Service", []) if k == "ExecStart"]
        if "Service" in sections and not starts:
            problem(path, "[Service] has no ExecStart=")
        for n, v in starts:
            command = v.lstrip("@-:+!")
            if not command.startswith("/"):
                problem(path, f"line {n}: ExecStart= must start with an absolute path, got `{v}`")
    return len(units)


METRIC = re.compile(r"\b(?:interflow|process)_[a-z0-9_]+")


def check_dashboards() -> int:
    dashboards = sorted((DEPLOY / "grafana").glob("*.json"))
    for path in dashboards:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            problem(path, f"invalid JSON: {e}")
            continue
        if not isinstance(doc, dict):
            problem(path, "a dashboard must be a JSON object")
            continue
        for key in ("title", "uid"):
            if not isinstance(doc.get(key), str) or not doc[key].strip():
                problem(path, f"missing or empty `{key}`")
        panels = doc.get("panels")
        if not isinstance(panels, list) or not panels:
            problem(path, "no `panels`")
            continue
        for n, panel in enumerate(panels, start=1):
            title = panel.get("title", "?") if isinstance(panel, dict) else "?"
            targets = panel.get("targets") if isinstance(panel, dict) else None
            if not isinstance(targets, list) or not targets:
                problem(path, f"panel {n} ({title}): no `targets`")
                continue
            for t in targets:
                expr = t.get("expr") if isinstance(t, dict) else None
                if not isinstance(expr, str) or not METRIC.search(expr):
                    problem(path, f"panel {n} ({title}): a target has no query naming an "
                            "interflow_* or process_* metric")
    return len(dashboards)


OCI_LABELS = ("title", "description", "version", "revision", "created", "licenses")


def check_dockerfile(tomllib) -> None:
    path = DEPLOY / "Dockerfile"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        problem(path, f"cannot read: {e}")
        return
    # Join continued lines, so a multi-line LABEL reads as one instruction.
    joined = re.sub(r"\\\n", " ", text)
    labels = set()
    for line in joined.splitlines():
        if line.strip().upper().startswith("LABEL "):
            labels |= set(re.findall(r"org\.opencontainers\.image\.([a-z.]+)=", line))
    for label in OCI_LABELS:
        if label not in labels:
            problem(path, f"no LABEL org.opencontainers.image.{label}")
    m = re.search(r"^ARG VERSION=(\S+)", text, re.MULTILINE)
    try:
        with (ROOT / "Cargo.toml").open("rb") as f:
            version = tomllib.load(f)["workspace"]["package"]["version"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        problem(ROOT / "Cargo.toml", f"no [workspace.package] version: {e}")
        return
    if not m:
        problem(path, "no `ARG VERSION=<default>` for the version label")
    elif m.group(1) != version:
        problem(path, f"ARG VERSION defaults to `{m.group(1)}`, but the workspace version is "
                f"`{version}` (Cargo.toml)")


def check_alert_rules(yaml) -> int:
    count = 0
    for path in sorted((DEPLOY / "prometheus").glob("*.y*ml")):
        docs = load_yaml(yaml, path)
        if not docs or not isinstance(docs[0], dict):
            continue
        for group in docs[0].get("groups") or []:
            for rule in (group or {}).get("rules") or []:
                if not isinstance(rule, dict) or "alert" not in rule:
                    continue
                count += 1
                expr = rule.get("expr")
                if not isinstance(expr, str) or "interflow_" not in expr:
                    problem(path, f"alert `{rule['alert']}`: no expression naming an "
                            "interflow_* metric")
    return count


def main() -> int:
    try:
        import yaml
    except ImportError:
        print("deploy/check.py: PyYAML is required to parse the manifests: "
              "pip install pyyaml (or apt-get install python3-yaml)", file=sys.stderr)
        return 2
    try:
        import tomllib
    except ImportError:
        print(f"deploy/check.py: Python 3.11 or later is required (tomllib); this is "
              f"{sys.version.split()[0]}", file=sys.stderr)
        return 2
    n_toml = check_toml_files(tomllib)
    n_yaml, n_docs, n_k8s = check_yaml_files(yaml, tomllib)
    n_units = check_systemd_units()
    n_dashboards = check_dashboards()
    if n_dashboards == 0:
        problem(DEPLOY / "grafana", "no Grafana dashboard (*.json) found")
    n_alerts = check_alert_rules(yaml)
    check_dockerfile(tomllib)
    if n_units == 0:
        problem(DEPLOY / "systemd", "no systemd unit (*.service) found")
    if problems:
        for p in problems:
            print(p, file=sys.stderr)
        print(f"deploy/check.py: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"deploy/check.py: ok: {n_yaml} YAML files ({n_docs} documents, {n_k8s} Kubernetes "
          f"objects), {n_toml} TOML files, {n_units} systemd unit(s), {n_dashboards} "
          f"dashboard(s), {n_alerts} alert rules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
