#!/usr/bin/env python3
"""Computes the true answers of the evaluation set with DuckDB, independently of the engine.

    python eval/truth.py           writes eval/expected.json from eval/questions.yaml
    python eval/truth.py --check   recomputes and fails (exit 1) when eval/expected.json differs

Each question's `sql` runs over three tables loaded from the demo CSV files (sales, customers, inventory).
Floats are rounded to 6 decimals so that DuckDB's parallel summation order cannot change the file.
"""
import argparse
import datetime as dt
import decimal
import json
import math
import sys
from pathlib import Path

import duckdb
import yaml

HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "demo"
QUESTIONS = HERE / "questions.yaml"
EXPECTED = HERE / "expected.json"

VIEWS = {
    "sales": "sales.csv.gz",
    "customers": "customers.csv",
    "inventory": "inventory.csv",
}
TOOLS = {"nlq", "trend", "prediction", "outlier", "correlation", "change", "pareto"}
QUESTION_KEYS = {"id", "ds", "q", "sql", "tool", "ordered", "tol_rel", "tol_abs", "ratio", "check", "measures", "tags"}
META_KEYS = {"id", "ds", "rule", "a", "b", "parts", "tool", "tags"}
META_RULES = {"same", "not_more", "parts"}
# The analysis checks each tool's question may ask for (README.md says what each one compares).
CHECKS = {
    "correlation": {"pearson"},
    "pareto": {"pareto"},
    "trend": {"trend"},
    "change": {"shift"},
    "prediction": {"horizon"},
    "outlier": {"flagged"},
}


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    # One thread: the same summation order on every machine.
    con.execute("SET threads TO 1")
    for view, file in VIEWS.items():
        path = (DEMO / file).as_posix().replace("'", "''")
        con.execute(f"CREATE TABLE {view} AS SELECT * FROM read_csv('{path}', header = true)")
    return con


def cell(v):
    """A JSON value for one result cell: dates as ISO strings, floats rounded to 6 decimals."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, decimal.Decimal):
        v = float(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError(f"non-finite result {v}")
        return round(v, 6)
    if isinstance(v, dt.datetime):
        if v.time() == dt.time(0):
            return v.date().isoformat()
        return v.isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    raise TypeError(f"unsupported result type {type(v).__name__}")


def validate(spec: dict) -> list[str]:
    errors = []
    ids = set()
    datasets = spec.get("datasets") or {}
    for q in spec.get("questions") or []:
        qid = q.get("id", "?")
        if qid in ids:
            errors.append(f"{qid}: duplicate id")
        ids.add(qid)
        unknown = set(q) - QUESTION_KEYS
        if unknown:
            errors.append(f"{qid}: unknown field(s) {sorted(unknown)}")
        for key in ("id", "ds", "q", "sql"):
            if not q.get(key):
                errors.append(f"{qid}: field '{key}' is required")
        if q.get("ds") not in datasets:
            errors.append(f"{qid}: ds must be one of {sorted(datasets)}")
        tool = q.get("tool", "nlq")
        if tool not in TOOLS:
            errors.append(f"{qid}: tool must be one of {sorted(TOOLS)}")
        if tool != "nlq" and q.get("check") not in CHECKS.get(tool, set()):
            errors.append(f"{qid}: tool {tool} needs check one of {sorted(CHECKS.get(tool, set()))}")
    for m in spec.get("metamorphic") or []:
        mid = m.get("id", "?")
        if mid in ids:
            errors.append(f"{mid}: duplicate id")
        ids.add(mid)
        unknown = set(m) - META_KEYS
        if unknown:
            errors.append(f"{mid}: unknown field(s) {sorted(unknown)}")
        if m.get("rule") not in META_RULES:
            errors.append(f"{mid}: rule must be one of {sorted(META_RULES)}")
        if m.get("ds") not in datasets:
            errors.append(f"{mid}: ds must be one of {sorted(datasets)}")
        if not m.get("a"):
            errors.append(f"{mid}: field 'a' is required")
        if m.get("rule") == "parts" and not m.get("parts"):
            errors.append(f"{mid}: rule 'parts' needs 'parts' (the separate questions)")
        if m.get("rule") in ("same", "not_more") and not m.get("b"):
            errors.append(f"{mid}: rule '{m.get('rule')}' needs 'b'")
    return errors


def derive(con, q: dict, columns: list, rows: list) -> dict:
    """Figures an analysis check needs beyond the rows, computed by DuckDB from the same SQL."""
    check = q.get("check")
    if check == "trend":
        if columns != ["period", "value"]:
            raise SystemExit(f"{q['id']}: a trend check's SQL must return (period, value)")
        slope = con.execute(
            "SELECT regr_slope(value, i) FROM "
            f"(SELECT value, row_number() OVER (ORDER BY period) AS i FROM ({q['sql']}))"
        ).fetchone()[0]
        return {
            "direction": "up" if slope > 0 else "down",
            "slope": cell(slope),
            "first_value": rows[0][1],
            "last_value": rows[-1][1],
            "periods": len(rows),
        }
    if check == "pareto":
        if columns != ["member", "v", "cum", "share"]:
            raise SystemExit(f"{q['id']}: a pareto check's SQL must return (member, v, cum, share)")
        ranked = f"({q['sql']})"
        vital = con.execute(f"SELECT member, v, cum FROM {ranked} WHERE cum - share < 0.8 ORDER BY cum").fetchall()
        ties = con.execute(
            f"SELECT member FROM {ranked} WHERE cum - share >= 0.8 "
            f"AND v = (SELECT min(v) FROM {ranked} WHERE cum - share < 0.8) ORDER BY member"
        ).fetchall()
        return {
            "vital_few_count": len(vital),
            "vital_few_share": cell(vital[-1][2]),
            "vital_few": [cell(r[0]) for r in vital],
            "tied_at_cut": [cell(r[0]) for r in ties],
        }
    if check == "pearson" and len(q.get("measures", [])) != 2:
        raise SystemExit(f"{q['id']}: a pearson check names its two measures in 'measures'")
    return {}


def compute(spec: dict) -> dict:
    con = connect()
    datasets = spec["datasets"]
    out_questions = []
    for q in spec["questions"]:
        try:
            res = con.execute(q["sql"])
        except duckdb.Error as e:
            raise SystemExit(f"{q['id']}: SQL failed: {e}") from None
        columns = [d[0] for d in res.description]
        rows = [[cell(v) for v in r] for r in res.fetchall()]
        if not q.get("ordered") and not q.get("check"):
            # Row order carries no meaning here: a canonical order keeps the file stable.
            rows.sort(key=lambda r: json.dumps(r))
        if not rows:
            raise SystemExit(f"{q['id']}: the SQL returned no rows (a truth must not be empty)")
        derived = derive(con, q, columns, rows)
        if q.get("check") == "pareto":
            # The truth is the vital few (in derived); rows keep the first 10 for display only.
            rows = [r[:3] for r in rows[: min(10, derived["vital_few_count"])]]
            columns = columns[:3]
        entry = {
            "id": q["id"],
            "schema_id": datasets[q["ds"]],
            "dataset": q["ds"],
            "tool": q.get("tool", "nlq"),
            "question": q["q"],
            "sql": " ".join(q["sql"].split()),
            "ordered": bool(q.get("ordered", False)),
            "ratio": bool(q.get("ratio", False)),
            "tol_rel": q.get("tol_rel", 1e-6),
            "tol_abs": q.get("tol_abs", 0.01),
            "check": q.get("check"),
            "measures": q.get("measures", []),
            "derived": derived,
            "tags": q.get("tags", []),
            "columns": columns,
            "rows": rows,
        }
        out_questions.append(entry)
    metamorphic = []
    for m in spec.get("metamorphic") or []:
        metamorphic.append(
            {
                "id": m["id"],
                "schema_id": datasets[m["ds"]],
                "dataset": m["ds"],
                "tool": m.get("tool", "nlq"),
                "rule": m["rule"],
                "a": m["a"],
                "b": m.get("b"),
                "parts": m.get("parts", []),
                "tags": m.get("tags", []),
            }
        )
    return {
        "generated_by": "eval/truth.py (DuckDB " + duckdb.__version__ + ")",
        "questions": out_questions,
        "metamorphic": metamorphic,
    }


def render(doc: dict) -> str:
    """One question per line, so a changed truth shows as a one-line diff."""
    def block(items):
        return "[\n" + ",\n".join("  " + json.dumps(i, ensure_ascii=False) for i in items) + "\n ]"
    return (
        "{\n"
        f' "generated_by": {json.dumps(doc["generated_by"])},\n'
        f' "questions": {block(doc["questions"])},\n'
        f' "metamorphic": {block(doc["metamorphic"])}\n'
        "}\n"
    )


def numbers_close(a, b) -> bool:
    # Values are rounded to 6 decimals: allow a flip of the last rounded digit, nothing more.
    return abs(a - b) <= 2e-6 + 1e-12 * max(abs(a), abs(b))


def same(a, b) -> bool:
    """Equal JSON, floats within the last rounded digit (the last bits of a sum may differ between builds)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return numbers_close(a, b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="fail when expected.json is not what DuckDB computes")
    args = ap.parse_args()
    spec = yaml.safe_load(QUESTIONS.read_text(encoding="utf-8"))
    errors = validate(spec)
    if errors:
        print("questions.yaml is invalid:\n  " + "\n  ".join(errors), file=sys.stderr)
        return 1
    doc = compute(spec)
    n_q, n_m = len(doc["questions"]), len(doc["metamorphic"])
    if args.check:
        if not EXPECTED.exists():
            print(f"{EXPECTED} is missing: run python eval/truth.py", file=sys.stderr)
            return 1
        committed = json.loads(EXPECTED.read_text(encoding="utf-8"))
        committed.pop("generated_by", None)
        fresh = dict(doc)
        fresh.pop("generated_by", None)
        if not same(committed, fresh):
            old = {q["id"]: q for q in committed.get("questions", [])}
            for q in fresh["questions"]:
                if not same(old.get(q["id"]), q):
                    print(f"differs: {q['id']}", file=sys.stderr)
            print("expected.json is stale or edited: run python eval/truth.py", file=sys.stderr)
            return 1
        print(f"expected.json matches DuckDB {duckdb.__version__}: {n_q} questions, {n_m} metamorphic checks")
        return 0
    EXPECTED.write_text(render(doc), encoding="utf-8")
    print(f"wrote {EXPECTED.name}: {n_q} questions, {n_m} metamorphic checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
