#!/usr/bin/env python3
"""Check the PromQL of the chart's alert rules and Grafana dashboard.

Every expression must parse (PyPI `promql-parser`, a binding of the Rust PromQL parser), name its metric in
every selector, and use only metrics of this project (`lumenore_connector_*`, `lumenore_operator_*`). With
`--scrape PREFIX=FILE` (a live /metrics scrape of the binary whose metrics start with PREFIX), every selector
of that prefix must name a series the scrape exports, and every label the query matches or groups by must
be a label of that series in the scrape, or a label the scrape adds (TARGET_LABELS).

Usage: check_queries.py RULES.yaml DASHBOARD.json [--scrape lumenore_connector_=conn.txt ...] [--list]
Exit status 1 with one line per problem; 0 prints a summary.
"""

import argparse
import json
import re
import sys

import promql_parser
import yaml

PREFIXES = ("lumenore_connector_", "lumenore_operator_")
# Labels Prometheus adds to every series of a target (job, instance), the Prometheus Operator's
# ServiceMonitor/PodMonitor (namespace, pod, service, container, endpoint) and the chart's PodMonitor
# relabelings (tenant, region; templates/podmonitor.yaml).
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint", "tenant", "region"}
# Grafana's variables, replaced by values of the right type before parsing.
GRAFANA_VARS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${namespace}": "x",
    "$namespace": "x",
    "${tenant}": "x",
    "$tenant": "x",
}
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="(?:[^"\\]|\\.)*"')
TYPE = re.compile(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (\w+)")
SUFFIXES = {"counter": ["_total", "_created"], "histogram": ["_bucket", "_sum", "_count", "_created"],
            "gauge": [""], "summary": ["", "_sum", "_count"], "unknown": [""]}


def parse_scrape(text):
    """Series name -> set of label names seen (names declared without samples map to an empty set)."""
    series = {}
    for line in text.splitlines():
        m = TYPE.match(line)
        if m:
            name, kind = m.groups()
            for suffix in SUFFIXES.get(kind, [""]):
                series.setdefault(name + suffix, set())
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if m:
            labels = set(LABEL.findall(m.group(2) or ""))
            series.setdefault(m.group(1), set()).update(labels)
    return series


def queries(rules_path, dashboard_path):
    """(where, PromQL) of every alert/record rule and every dashboard target and variable."""
    out = []
    for group in yaml.safe_load(open(rules_path))["groups"]:
        for rule in group["rules"]:
            out.append((f"rule {rule.get('alert') or rule.get('record')}", rule["expr"]))
    dash = json.load(open(dashboard_path))

    def panels(items):
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t.get('refId')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)\s*", q)
        if not m:
            out.append((f"variable {v['name']}", q))
            continue
        # label_values(selector, label): the selector must have the label.
        out.append((f"variable {v['name']}", f"count by ({m.group(2)}) ({m.group(1)})"))
    return out


def substitute(expr):
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def walk(node, selectors, groupings):
    """Collect vector selectors and grouping/matching label lists of the expression tree."""
    if isinstance(node, promql_parser.VectorSelector):
        selectors.append(node)
    elif isinstance(node, promql_parser.MatrixSelector):
        selectors.append(node.vector_selector)
    elif isinstance(node, promql_parser.AggregateExpr):
        if node.modifier is not None:
            groupings.append(list(node.modifier.labels))
        walk(node.expr, selectors, groupings)
        if node.param is not None:
            walk(node.param, selectors, groupings)
    elif isinstance(node, promql_parser.BinaryExpr):
        mod = node.modifier
        if mod is not None and mod.matching is not None:
            groupings.append(list(mod.matching.labels))
        walk(node.lhs, selectors, groupings)
        walk(node.rhs, selectors, groupings)
    elif isinstance(node, promql_parser.Call):
        for a in node.args:
            walk(a, selectors, groupings)
    elif isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        walk(node.expr, selectors, groupings)


def check(where, expr, scrapes, problems):
    try:
        ast = promql_parser.parse(substitute(expr))
    except Exception as e:  # the parser raises ValueError-like errors with the position
        problems.append(f"{where}: does not parse: {e}")
        return None
    selectors, groupings = [], []
    walk(ast, selectors, groupings)
    if not selectors:
        problems.append(f"{where}: selects no series")
    available = set(TARGET_LABELS)
    for s in selectors:
        name = s.name
        matchers = [m.name for m in s.matchers.matchers]
        if not name:
            problems.append(f"{where}: a selector without a metric name")
            continue
        prefix = next((p for p in PREFIXES if name.startswith(p)), None)
        if prefix is None:
            problems.append(f"{where}: {name} is not a metric of this project")
            continue
        if prefix not in scrapes:
            continue
        series = scrapes[prefix]
        if name not in series:
            problems.append(f"{where}: {name} is not exported (live scrape)")
            continue
        labels = series[name] | TARGET_LABELS
        available |= series[name]
        for label in matchers:
            if label not in labels:
                problems.append(f"{where}: {name} has no label {label!r} (live scrape: {sorted(series[name])})")
    if all(next((p for p in PREFIXES if (s.name or "").startswith(p)), None) in scrapes for s in selectors):
        for group in groupings:
            for label in group:
                if label not in available:
                    problems.append(f"{where}: groups by {label!r}, which none of its series has")
    return ast


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rules")
    ap.add_argument("dashboard")
    ap.add_argument("--scrape", action="append", default=[], metavar="PREFIX=FILE")
    ap.add_argument("--list", action="store_true", help="print every query after parsing")
    args = ap.parse_args()
    scrapes = {}
    for item in args.scrape:
        prefix, _, path = item.partition("=")
        if prefix not in PREFIXES:
            ap.error(f"--scrape prefix must be one of {PREFIXES}")
        scrapes[prefix] = parse_scrape(open(path).read())
    problems = []
    qs = queries(args.rules, args.dashboard)
    for where, expr in qs:
        ast = check(where, expr, scrapes, problems)
        if args.list and ast is not None:
            print(f"{where}: {ast}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
    checked = ", ".join(sorted(scrapes)) or "syntax only"
    print(f"{len(qs)} queries parse and reference exported series ({checked})")


if __name__ == "__main__":
    main()
