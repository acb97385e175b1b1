#!/usr/bin/env python3
"""Offline helpers for the chart/example checks (run with the tools venv's python: PyYAML).

  split OUT_DIR FILE...        split multi-document YAML into OUT_DIR/builtin/*.yaml (Kubernetes kinds),
                               OUT_DIR/cr/*.yaml (LumenoreConnector, CRD defaults applied, as JSON) and
                               OUT_DIR/other/*.yaml (other custom kinds); prints a count per kind
  crd-schema CRD_FILE OUT      write a JSON Schema for LumenoreConnector objects from the CRD's
                               openAPIV3Schema: nullable, int-or-string, unknown fields rejected
                               (like `kubectl apply`'s strict field validation), apiVersion/kind/
                               metadata added, and the simple CEL rules translated (the others listed)
  crd-equal A B                A and B are the same CRD, ignoring metadata.annotations/labels
  count-kind KIND FILE...      print how many documents of KIND the files hold
  operator-args FILE           print the args of the operator container of the rendered Deployment,
                               one per line (nothing when the file has no operator Deployment)
"""
import copy
import json
import os
import re
import sys

import yaml

CR_KIND = ("lumenore.io", "LumenoreConnector")


def docs(path):
    with open(path, encoding="utf-8") as f:
        for d in yaml.safe_load_all(f):
            if d:
                yield d


def is_builtin(api_version):
    group = api_version.split("/")[0] if "/" in api_version else ""
    return group == "" or group.endswith(".k8s.io") or group in (
        "apps", "batch", "policy", "autoscaling", "coordination.k8s.io")


def crd_version_schema(crd):
    for v in crd["spec"]["versions"]:
        if v.get("storage"):
            return v["schema"]["openAPIV3Schema"]
    raise SystemExit("no storage version in CRD")


def apply_defaults(schema, obj):
    """Structural defaulting, as the API server does before validation."""
    if not isinstance(obj, dict) or schema.get("type") != "object":
        if isinstance(obj, list) and "items" in schema:
            for item in obj:
                apply_defaults(schema["items"], item)
        return obj
    for name, sub in schema.get("properties", {}).items():
        if name not in obj and "default" in sub:
            obj[name] = copy.deepcopy(sub["default"])
        if name in obj and obj[name] is not None:
            apply_defaults(sub, obj[name])
    return obj


def cmd_split(out_dir, files, crd_path=None):
    crd_schema = None
    if crd_path:
        crd_schema = crd_version_schema(next(docs(crd_path)))
    counts = {}
    for sub in ("builtin", "cr", "other"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    n = 0
    for path in files:
        for d in docs(path):
            n += 1
            api, kind = d.get("apiVersion", ""), d.get("kind", "")
            if not api or not kind:
                raise SystemExit(f"{path}: document {n} has no apiVersion/kind")
            name = (d.get("metadata") or {}).get("name", "unnamed")
            base = f"{n:03d}-{kind}-{name}".replace("/", "_")
            group = api.split("/")[0]
            if (group, kind) == CR_KIND:
                if crd_schema is not None:
                    d = apply_defaults(crd_schema, d)
                dest = os.path.join(out_dir, "cr", base + ".json")
                with open(dest, "w", encoding="utf-8") as f:
                    json.dump(d, f, indent=1)
                sub = "cr"
            else:
                sub = "builtin" if is_builtin(api) else "other"
                if sub == "other":  # named <n>@<group>_<Kind>@<name>.yaml: the schema to use is in the name
                    base = f"{n:03d}@{group}_{kind}@{name}".replace("/", "_")
                with open(os.path.join(out_dir, sub, base + ".yaml"), "w", encoding="utf-8") as f:
                    yaml.safe_dump(d, f, sort_keys=False)
            counts[f"{sub}:{kind}"] = counts.get(f"{sub}:{kind}", 0) + 1
    for k in sorted(counts):
        print(f"  {counts[k]:3d} {k}")


# ---- CRD schema -> JSON Schema ------------------------------------------------

STR = r"'((?:[^'\\]|\\.)*)'"


def translate_has_expr(r):
    """`has(self.a) && !has(self.b) || (...)` -> JSON Schema (required / not required), or None."""
    tokens = re.findall(r"!?has\(self\.\w+\)|&&|\|\||\(|\)|\S+", r)
    if not tokens or any(not (re.fullmatch(r"!?has\(self\.\w+\)", t) or t in ("&&", "||", "(", ")"))
                         for t in tokens):
        return None
    pos = 0

    def atom():
        nonlocal pos
        t = tokens[pos]
        pos += 1
        if t == "(":
            e = disj()
            assert tokens[pos] == ")"
            pos += 1
            return e
        field = re.search(r"self\.(\w+)", t).group(1)
        return {"not": {"required": [field]}} if t.startswith("!") else {"required": [field]}

    def conj():
        nonlocal pos
        parts = [atom()]
        while pos < len(tokens) and tokens[pos] == "&&":
            pos += 1
            parts.append(atom())
        return parts[0] if len(parts) == 1 else {"allOf": parts}

    def disj():
        nonlocal pos
        parts = [conj()]
        while pos < len(tokens) and tokens[pos] == "||":
            pos += 1
            parts.append(conj())
        return parts[0] if len(parts) == 1 else {"anyOf": parts}

    try:
        e = disj()
        return {"allOf": [e]} if pos == len(tokens) else None
    except (AssertionError, IndexError):
        return None


def translate_rule(rule):
    """A JSON Schema equivalent of a simple CEL rule, or None."""
    r = " ".join(rule.split())
    if r == "self == oldSelf":
        return "transition"  # immutability: needs the old object, not checkable offline
    h = translate_has_expr(r)
    if h is not None:
        return h
    parts = [p.strip() for p in r.split("&&")]
    out = {"allOf": []}
    for p in parts:
        m = re.fullmatch(r"self\.matches\(" + STR + r"\)", p)
        if m:
            out["allOf"].append({"pattern": m.group(1).encode().decode("unicode_escape")})
            continue
        m = re.fullmatch(r"self\.startsWith\(" + STR + r"\)", p)
        if m:
            out["allOf"].append({"pattern": "^" + re.escape(m.group(1))})
            continue
        m = re.fullmatch(r"self\.size\(\) > (\d+)", p)
        if m:
            out["allOf"].append({"minLength": int(m.group(1)) + 1})
            continue
        ors = [o.strip() for o in p.split("||")]
        if len(ors) > 1 and all(re.fullmatch(r"self\.startsWith\(" + STR + r"\)", o) for o in ors):
            out["allOf"].append({"anyOf": [
                {"pattern": "^" + re.escape(re.fullmatch(r"self\.startsWith\(" + STR + r"\)", o).group(1))}
                for o in ors]})
            continue
        m = re.fullmatch(r"self\.(\w+) != " + STR + r" \|\| has\(self\.(\w+)\)", p)
        if m:
            field, value, needed = m.groups()
            out["allOf"].append({"if": {"properties": {field: {"const": value}}, "required": [field]},
                                 "then": {"required": [needed]}})
            continue
        return None
    return out


def to_json_schema(node, path, report):
    node = copy.deepcopy(node)
    rules = node.pop("x-kubernetes-validations", [])
    if node.pop("nullable", False) and "type" in node:
        node["type"] = [node["type"], "null"]
    if node.pop("x-kubernetes-int-or-string", False):
        node.pop("type", None)
        node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False)
    for k in list(node):
        if k.startswith("x-kubernetes-"):
            node.pop(k)
    node.pop("format", None) if node.get("format") in ("int32", "int64", "uint32", "double", "float") else None
    if "properties" in node:
        node["properties"] = {k: to_json_schema(v, f"{path}.{k}", report) for k, v in node["properties"].items()}
        if not preserve and "additionalProperties" not in node:
            node["additionalProperties"] = False  # unknown fields rejected (strict field validation)
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = to_json_schema(node["additionalProperties"], f"{path}.*", report)
    if "items" in node:
        node["items"] = to_json_schema(node["items"], f"{path}[]", report)
    for rule in rules:
        t = translate_rule(rule["rule"])
        if t == "transition":
            report["transition"].append(f"{path}: {rule['rule']}")
        elif t is None:
            report["untranslated"].append(f"{path}: {' '.join(rule['rule'].split())}")
        else:
            t["description"] = f"CEL: {rule.get('message', rule['rule'])}"
            node.setdefault("allOf", []).append(t)
            report["translated"].append(f"{path}: {rule.get('message', '')}")
    return node


def cmd_crd_schema(crd_path, out):
    crd = next(docs(crd_path))
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    version = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
    report = {"translated": [], "untranslated": [], "transition": []}
    schema = to_json_schema(crd_version_schema(crd), "", report)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    props = schema.setdefault("properties", {})
    props["apiVersion"] = {"const": f"{group}/{version}"}
    props["kind"] = {"const": kind}
    props["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": 253,
                     "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"},
            "namespace": {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    with open(out, "w", encoding="utf-8") as f:
        json.dump(schema, f, indent=1)
    print(f"  CEL rules: {len(report['translated'])} translated to JSON Schema, "
          f"{len(report['transition'])} transition rules (need the old object; not checkable offline), "
          f"{len(report['untranslated'])} not translated:")
    for r in report["untranslated"]:
        print(f"    - {r}")


def strip_meta(crd):
    crd = copy.deepcopy(crd)
    crd.get("metadata", {}).pop("annotations", None)
    crd.get("metadata", {}).pop("labels", None)
    return crd


def cmd_crd_equal(a, b):
    da = [d for d in docs(a) if d.get("kind") == "CustomResourceDefinition"]
    db = [d for d in docs(b) if d.get("kind") == "CustomResourceDefinition"]
    if len(da) != 1 or len(db) != 1:
        raise SystemExit(f"expected one CRD in each file, got {len(da)} and {len(db)}")
    if strip_meta(da[0]) != strip_meta(db[0]):
        ja = json.dumps(strip_meta(da[0]), indent=1, sort_keys=True).splitlines()
        jb = json.dumps(strip_meta(db[0]), indent=1, sort_keys=True).splitlines()
        import difflib
        print("\n".join(list(difflib.unified_diff(ja, jb, a, b, lineterm=""))[:60]))
        raise SystemExit(f"CRDs differ: {a} vs {b}")


def cmd_count_kind(kind, files):
    print(sum(1 for p in files for d in docs(p) if d.get("kind") == kind))


def cmd_operator_args(path):
    for d in docs(path):
        if d.get("kind") == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                if c["name"] == "operator":
                    for a in c.get("args", []):
                        print(a)


def main(argv):
    if len(argv) < 2:
        raise SystemExit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "split":
        crd = None
        if args and args[0].startswith("--crd="):
            crd, args = args[0].split("=", 1)[1], args[1:]
        cmd_split(args[0], args[1:], crd)
    elif cmd == "crd-schema":
        cmd_crd_schema(args[0], args[1])
    elif cmd == "crd-equal":
        cmd_crd_equal(args[0], args[1])
    elif cmd == "operator-args":
        cmd_operator_args(args[0])
    elif cmd == "count-kind":
        cmd_count_kind(args[0], args[1:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
