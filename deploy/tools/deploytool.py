#!/usr/bin/env python3
"""Offline helpers for `cargo xtask test` (step "deploy"): render the Helm
chart with Helm's own engine (helm-python-sdk, Helm v4 Go SDK) and pull
pieces out of YAML/JSON the Rust side then checks. Run with the interpreter
of target/deploy-venv (deploy/requirements.txt).

  render [--set-json JSON] [--name N] [--namespace NS]   manifest on stdout
  lint [--set-json JSON]   `helm lint --strict`; fails on any finding above
                           INFO (the missing-icon note is the only INFO)
  config MANIFEST          the daemon config held by the chart's ConfigMap
  rules MANIFEST           the PrometheusRule's groups, as a rule file
  exprs FILE...            every PromQL expression in rule files (YAML) and
                           Grafana dashboards (JSON), one JSON string a line
"""

import argparse
import json
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parent.parent / "helm" / "trigate"

# `helm template` prints objects in the order `helm install` creates them
# (pkg/release/util/kind_sorter.go): dependencies before their users.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret",
    "SecretList", "ConfigMap", "StorageClass", "PersistentVolume",
    "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole",
    "ClusterRoleList", "ClusterRoleBinding", "ClusterRoleBindingList", "Role",
    "RoleList", "RoleBinding", "RoleBindingList", "Service", "DaemonSet", "Pod",
    "ReplicationController", "ReplicaSet", "Deployment", "HorizontalPodAutoscaler",
    "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress", "APIService",
]


def fail(msg):
    print(f"deploytool: {msg}", file=sys.stderr)
    sys.exit(1)


def render(args):
    import helm_python as helm

    values = json.loads(args.set_json) if args.set_json else {}
    with helm.Chart.load(str(CHART)) as chart:
        chart.validate_schema(values)
        rendered = chart.render(values, name=args.name, namespace=args.namespace)
    docs = []
    for path, text in rendered.items():
        if not path.endswith((".yaml", ".yml")):
            continue  # NOTES.txt, helpers
        for part in split_documents(text):
            obj = yaml.safe_load(part)
            if not obj:
                continue
            if not isinstance(obj, dict) or "kind" not in obj:
                fail(f"{path}: a document that is not a Kubernetes object")
            docs.append((order(obj["kind"]), path, obj["metadata"]["name"], part))
    docs.sort(key=lambda d: (d[0], d[1], d[2]))
    out = []
    for _, path, _, part in docs:
        out.append(f"---\n# Source: {path}\n{part.strip()}\n")
    sys.stdout.write("".join(out))


def lint(args):
    import helm_python as helm

    values = json.loads(args.set_json) if args.set_json else {}
    result = helm.lint(str(CHART), values, strict=True, namespace="trigate")
    # Helm's severities: 1 INFO, 2 WARNING, 3 ERROR.
    bad = [m for m in result.get("messages", []) if m.get("severity", 3) > 1]
    bad += [{"error": e} for e in result.get("errors", [])]
    for m in result.get("messages", []):
        print(f"lint: {m.get('path', '')}: {m.get('error')}", file=sys.stderr)
    if bad:
        fail(f"helm lint found {len(bad)} problem(s): " + "; ".join(str(m.get("error")) for m in bad))


def split_documents(text):
    parts, cur = [], []
    for line in text.splitlines():
        if line.rstrip() == "---":
            parts.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    parts.append("\n".join(cur))
    return [p for p in parts if p.strip() and not all(
        not l.strip() or l.lstrip().startswith("#") for l in p.splitlines())]


def order(kind):
    # Unknown kinds (CRs such as ServiceMonitor) go last, as Helm does.
    return INSTALL_ORDER.index(kind) if kind in INSTALL_ORDER else len(INSTALL_ORDER)


def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def config(args):
    found = [d for d in load_all(args.manifest)
             if d.get("kind") == "ConfigMap" and "config.yaml" in (d.get("data") or {})]
    if len(found) != 1:
        fail(f"{args.manifest}: want one ConfigMap with data config.yaml, found {len(found)}")
    sys.stdout.write(found[0]["data"]["config.yaml"])


def rules(args):
    found = [d for d in load_all(args.manifest) if d.get("kind") == "PrometheusRule"]
    if len(found) != 1:
        fail(f"{args.manifest}: want one PrometheusRule, found {len(found)}")
    yaml.safe_dump(found[0]["spec"], sys.stdout, sort_keys=False)


def exprs(args):
    for name in args.files:
        path = Path(name)
        if path.suffix == ".json":
            with open(path) as f:
                found = list(json_exprs(json.load(f)))
        else:
            found = [r["expr"] for docs in load_all(path) for g in docs.get("groups", [])
                     for r in g.get("rules", []) if "expr" in r]
        if not found:
            fail(f"{path}: no PromQL expression found")
        for e in found:
            if not isinstance(e, str) or not e.strip():
                fail(f"{path}: an empty or non-string expr: {e!r}")
            print(json.dumps(e))


def json_exprs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr":
                yield value
            else:
                yield from json_exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from json_exprs(item)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render")
    r.add_argument("--set-json", default="")
    r.add_argument("--name", default="trigate")
    r.add_argument("--namespace", default="trigate")
    r.set_defaults(func=render)
    li = sub.add_parser("lint")
    li.add_argument("--set-json", default="")
    li.set_defaults(func=lint)
    c = sub.add_parser("config")
    c.add_argument("manifest")
    c.set_defaults(func=config)
    ru = sub.add_parser("rules")
    ru.add_argument("manifest")
    ru.set_defaults(func=rules)
    e = sub.add_parser("exprs")
    e.add_argument("files", nargs="+")
    e.set_defaults(func=exprs)
    args = p.parse_args()
    try:
        args.func(args)
    except yaml.YAMLError as err:
        fail(f"invalid YAML: {err}")
    except Exception as err:  # helm_python errors: name the chart
        fail(f"{type(err).__name__}: {err}")


if __name__ == "__main__":
    main()
