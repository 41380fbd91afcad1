"""The report step: one self-contained page per run (``reports/report.html``) that a reviewer reads before
trusting a model, also logged to the run's MLflow record.

It reads what the earlier steps wrote (``metrics.json``, ``benchmark_env.json``, ``registry.json``,
``train.json``, ``export.json``, the data steps' statistics, ``plots/pr_curves.json`` and
``plots/threshold_curves.json``) and renders, through a Jinja2 template with autoescaping (texts in the
report are user content), eleven sections: the verdict, per-category figures on each tier, PR and threshold
curves, calibration, label co-occurrence, robustness, the behavioural table, real text per source, the
environment scores, sizes and latencies, and the lineage position. Charts are inline SVG
(:mod:`components.quality.report_charts`), the CSS is inline: the page needs no network and no script.
Every section tolerates missing data (an older ``metrics.json``, a run without real text, no champion)
and then says "not measured".

The page is written atomically, then logged as an artifact (``report/report.html``) of the MLflow run
``registry.json`` names. Without a run, or with the store unreachable, the page is still written and the
returned statistics say why it was not logged.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from components.core.contract import atomic_write
from components.core.taxonomy import LABELS
from components.quality import report_charts as charts
from components.quality.gate import TIERS

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "resources/report"
ARTIFACT_PATH = "report"
SECTIONS = ("verdict", "categories", "curves", "calibration", "cooccurrence", "robustness", "behaviour", "real",
            "environment", "sizes", "lineage")
_EPS = 1e-9


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _map(x: Any) -> Mapping:
    return x if isinstance(x, Mapping) else {}


def _at_least(value: Any, floor: Any) -> bool | None:
    return value + _EPS >= floor if _finite(value) and _finite(floor) else None


def _categories(*found: Any) -> list[str]:
    """The taxonomy's categories first (in order), then any other name the figures carry."""
    names = {c for f in found for c in _map(f)}
    return [c for c in LABELS if c in names] + sorted(names - set(LABELS))


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Scalars of a nested mapping by dotted key (lists left out)."""
    out: dict[str, Any] = {}
    for key, value in _map(obj).items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(_flat(value, name))
        elif not isinstance(value, (list, tuple)):
            out[name] = value
    return out


# ------------------------------------------------------------------------------ inputs


def load_inputs(reports_dir: Path, data_dir: Path) -> tuple[dict[str, Any], list[str]]:
    """Every file the page reads (None where absent) and the problems met reading them."""
    problems: list[str] = []

    def read(path: Path) -> Any:
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{path.name} could not be read ({str(exc).splitlines()[0][:200]}); left out")
            return None

    reports_dir, data_dir = Path(reports_dir), Path(data_dir)
    inputs = {name: read(reports_dir / f"{name}.json") for name in ("metrics", "benchmark_env", "registry", "train",
                                                                     "export")}
    inputs["pr"] = read(reports_dir / "plots" / "pr_curves.json")
    inputs["threshold_curves"] = read(reports_dir / "plots" / "threshold_curves.json")
    inputs["data"] = {p.stem: d for p in sorted(data_dir.glob("*.json")) if isinstance(d := read(p), Mapping)}
    for key in ("metrics", "benchmark_env", "registry", "train", "export", "pr", "threshold_curves"):
        if inputs[key] is not None and not isinstance(inputs[key], Mapping):
            problems.append(f"{key}: not a JSON object; left out")
            inputs[key] = None
    return inputs, problems


# ------------------------------------------------------------------------------ sections


def _champion(metrics: Mapping) -> dict[str, Any]:
    gate = _map(metrics.get("gate"))
    champ = metrics.get("champion") if "champion" in metrics else gate.get("champion")
    if not isinstance(champ, Mapping):
        return {"known": False, "text": "no champion yet: nothing to regress against"}
    if champ.get("unavailable"):
        return {"known": False, "text": f"unknown: the tracking store did not answer ({champ['unavailable']})"}
    f1 = champ.get("macro_f1")
    text = f"version {champ.get('version')}" + (f", macro F1 {f1:.4f}" if _finite(f1) else "")
    return {"known": True, "text": text, **champ}


def _tier(check: Mapping) -> str:
    if isinstance(check.get("tier"), str) and check["tier"]:
        return check["tier"]
    head = str(check.get("name", "")).split(":", 1)[0]
    return head if head in TIERS else "generated" if head == "f1_floor" else "release"


def verdict(metrics: Mapping) -> dict | None:
    gate = metrics.get("gate")
    if not isinstance(gate, Mapping):
        return None
    checks = [{"name": str(c.get("name")), "tier": _tier(c), "passed": bool(c.get("passed")),
               "detail": str(c.get("detail") or "")} for c in gate.get("checks") or [] if isinstance(c, Mapping)]
    by_tier: dict[str, list[dict]] = {}
    for c in checks:
        by_tier.setdefault(c["tier"], []).append(c)
    rank = {t: i for i, t in enumerate(TIERS)}
    order = sorted(by_tier, key=lambda t: (all(c["passed"] for c in by_tier[t]), rank.get(t, len(TIERS)), t))
    groups = [{"tier": t, "passed": all(c["passed"] for c in by_tier[t]), "n": len(by_tier[t]),
               "failing": sum(not c["passed"] for c in by_tier[t]),
               "checks": sorted(by_tier[t], key=lambda c: c["passed"])} for t in order]
    return {"passed": gate.get("passed"), "groups": groups, "n": len(checks),
            "failing": sum(not c["passed"] for c in checks),
            "unmeasured_tiers": [t for t in TIERS if t not in by_tier], "served": metrics.get("served_variant"),
            "champion": _champion(metrics), "tolerance": gate.get("regression_tolerance")}


def _generated(metrics: Mapping) -> tuple[Mapping, bool]:
    """The generated tier's figures, and whether they are the older report's whole-test-split figures."""
    gen = _map(metrics.get("generated"))
    return (gen, False) if gen.get("per_category") else (_map(metrics.get("test")), True)


def categories(metrics: Mapping) -> dict | None:
    gen, whole_test = _generated(metrics)
    per = _map(gen.get("per_category"))
    real = _map(_map(metrics.get("real")).get("groups"))
    if not per and not real:
        return None
    floor, champ = metrics.get("f1_floor"), _champion(metrics)
    thresholds = _map(metrics.get("thresholds"))
    rows = [{"category": c, **_map(per.get(c)), "threshold": _map(per.get(c)).get("threshold", thresholds.get(c)),
             "passed": _at_least(_map(per.get(c)).get("f1"), floor)} for c in _categories(per)]
    champ_pr = _map(champ.get("real_pr_auc"))
    auc_floor = _map(metrics.get("real")).get("roc_auc_floor")
    cells = {(g, c): {**_map(m), "champion_pr_auc": _map(champ_pr.get(g)).get(c),
                      "roc_passed": _at_least(_map(m).get("roc_auc"), auc_floor)}
             for g, block in real.items() for c, m in _map(_map(block).get("per_category")).items()}
    real_rows = [{"category": c, "cells": [cells.get((g, c)) for g in real]}
                 for c in _categories(*(_map(_map(b).get("per_category")) for b in real.values()))]
    champ_f1 = champ.get("macro_f1", metrics.get("champion_macro_f1"))
    return {"rows": rows, "floor": floor, "whole_test": whole_test, "macro_f1": gen.get("macro_f1"),
            "micro_f1": gen.get("micro_f1"), "champion_macro_f1": champ_f1 if _finite(champ_f1) else None,
            "groups": list(real), "real_rows": real_rows, "roc_auc_floor": auc_floor}


def curves(metrics: Mapping, inputs: Mapping) -> dict | None:
    tuned = {**_map(_map(inputs.get("threshold_curves")).get("tuned")), **_map(metrics.get("thresholds"))}
    per = _map(_generated(metrics)[0].get("per_category"))
    points = {c: {**_map(per.get(c)), "threshold": tuned.get(c)} for c in per}
    pr = charts.pr_curves(_map(inputs.get("pr")).get("pr") or [], points, LABELS)
    thr = charts.threshold_curves(_map(inputs.get("threshold_curves")).get("threshold_curves") or [], tuned, LABELS)
    return None if pr is None and thr is None else {"pr": pr, "thresholds": thr}


def calibration(metrics: Mapping) -> dict | None:
    cal = metrics.get("calibration")
    if not isinstance(cal, Mapping):
        return None
    bins = cal.get("reliability") if isinstance(cal.get("reliability"), list) else []
    per = _map(cal.get("per_category_brier"))
    return {"brier": cal.get("brier"), "ece": cal.get("ece"), "chart": charts.reliability(bins),
            "per_category": [(c, per[c]) for c in _categories(per)]}


def cooccurrence(metrics: Mapping) -> dict | None:
    co = _map(metrics.get("cooccurrence"))
    labels, true, pred = list(co.get("labels") or []), co.get("true"), co.get("predicted")
    chart = charts.cooccurrence(labels, true or [], pred or []) if labels else None
    if chart is None:
        return None
    n = len(labels)
    pairs = [{"a": labels[i], "b": labels[j], "true": int(true[i][j]), "predicted": int(pred[i][j])}
             for i in range(n) for j in range(i + 1, n) if true[i][j] != pred[i][j]]
    pairs.sort(key=lambda p: -abs(p["predicted"] - p["true"]))
    return {"chart": chart, "pairs": pairs[:10]}


def robustness(metrics: Mapping) -> dict | None:
    rob = metrics.get("robustness")
    if not isinstance(rob, Mapping):
        return None
    kinds = {str(k): _flat(v) for k, v in _map(rob.get("by_kind")).items()}
    columns: list[str] = []
    for figures in kinds.values():
        columns += [k for k in figures if k not in columns]
    summary = {k: v for k, v in _flat({k: v for k, v in rob.items() if k != "by_kind"}).items()}
    return {"summary": summary, "columns": columns, "kinds": kinds}


def behaviour(metrics: Mapping) -> dict | None:
    b = metrics.get("behaviour")
    funcs = _map(_map(b).get("functionalities"))
    if not funcs:
        return None
    floor, champ = b.get("floor"), _map(_champion(metrics).get("behaviour_pass_rate"))
    rows = []
    for name, f in funcs.items():
        f, gating = _map(f), _map(f).get("gating", True) is not False
        ok = _at_least(f.get("pass_rate"), floor)
        failures = [{**_map(x), "top": sorted(((str(c), float(s)) for c, s in _map(_map(x).get("scores")).items()
                                                if _finite(s)), key=lambda t: -t[1])[:4]}
                    for x in f.get("failures") or [] if isinstance(x, Mapping)]
        rows.append({"name": str(name), **f, "gating": gating, "floor": floor, "champion": champ.get(name),
                     "status": "known limit" if not gating else "pass" if ok else "fail", "failures": failures})
    rows.sort(key=lambda r: ({"fail": 0, "pass": 1}.get(r["status"], 2)))
    return {"n_cases": b.get("n_cases"), "passed": b.get("passed"), "pass_rate": b.get("pass_rate"),
            "gating_pass_rate": b.get("gating_pass_rate"), "floor": floor, "rows": rows}


def real(metrics: Mapping) -> dict | None:
    r = metrics.get("real")
    old = not isinstance(r, Mapping) or not (r.get("groups") or r.get("overall"))
    if old:  # an older report: figures on the real records of the test split, per source
        groups = {str(k).split(":", 1)[-1]: v for k, v in _map(metrics.get("external")).items()}
        overall, r = None, {}
    else:
        groups, overall = _map(r.get("groups")), r.get("overall")
    if not groups and not overall:
        return None
    blocks = [{"name": str(name), **_map(block), "rows": [{"category": c, **_map(m)} for c, m in
                                                          _map(_map(block).get("per_category")).items()]}
              for name, block in [*groups.items(), *([("all real text", overall)] if overall else [])]]
    for block in blocks:
        block["rows"].sort(key=lambda x: LABELS.index(x["category"]) if x["category"] in LABELS else len(LABELS))
    supported = {row["category"] for b in blocks for row in b["rows"]
                 if _finite(row.get("support")) and row["support"] > 0}
    return {"old": old, "blocks": blocks, "min_support": r.get("min_support"), "roc_auc_floor": r.get("roc_auc_floor"),
            "unsupported": [c for c in LABELS if c not in supported]}


def environment(env: Mapping | None) -> dict | None:
    scores = _map(_map(env).get("scores"))
    if not scores:
        return None
    tasks: list[str] = []
    for s in scores.values():
        tasks += [t for t in _map(s) if t != "mean" and t not in tasks]
    return {"tasks": [*tasks, "mean"], "agents": [(a, _map(s)) for a, s in scores.items()],
            "seed": env.get("seed"), "bank_version": env.get("bank_version"), "model": env.get("model")}


def sizes(metrics: Mapping, inputs: Mapping) -> dict | None:
    variants = _map(metrics.get("variants")) or _map(_map(inputs.get("export")).get("variants"))
    rows = sorted(({"variant": v, **_map(f), "served": v == metrics.get("served_variant")}
                   for v, f in variants.items()),
                  key=lambda r: r.get("size_bytes") if _finite(r.get("size_bytes")) else math.inf)
    steps = []
    for name, d in _map(inputs.get("data")).items():
        records = d.get("records") if d.get("records") is not None else d.get("written")
        steps.append({"step": d.get("stage", name), "seconds": d.get("seconds"), "records": records})
    for key in ("train", "export", "metrics", "benchmark_env", "registry"):
        d = _map(inputs.get(key) if key != "metrics" else metrics)
        if d:
            step = {"metrics": "evaluate", "registry": "register"}.get(d.get("stage", key), d.get("stage", key))
            steps.append({"step": step, "seconds": d.get("seconds"), "records": d.get("train_examples")})
    train = {k: v for k, v in _map(inputs.get("train")).items() if k != "stage" and not isinstance(v, (dict, list))}
    if not rows and not steps:
        return None
    return {"variants": rows, "steps": steps, "train": train}


def lineage(registry: Mapping | None, model_name: str) -> dict | None:
    if not isinstance(registry, Mapping) or not registry.get("lineage_version"):
        return None
    champ = registry.get("champion")
    other = registry.get("model_name") not in (None, model_name)
    return {**registry, "champion": champ if isinstance(champ, Mapping) else None, "other_model": other,
            "reasons": [str(r) for r in registry.get("reasons") or []]}


def build_context(inputs: Mapping, problems: Sequence[str], model_name: str) -> dict[str, Any]:
    """Everything the template shows: one entry per section (None: not measured), plus the header."""
    metrics = _map(inputs.get("metrics"))
    registry = _map(inputs.get("registry"))
    sections = {
        "verdict": verdict(metrics), "categories": categories(metrics), "curves": curves(metrics, inputs),
        "calibration": calibration(metrics), "cooccurrence": cooccurrence(metrics), "robustness": robustness(metrics),
        "behaviour": behaviour(metrics), "real": real(metrics), "environment": environment(inputs.get("benchmark_env")),
        "sizes": sizes(metrics, inputs), "lineage": lineage(inputs.get("registry"), model_name),
    }
    return {**sections, "model_name": registry.get("model_name") or model_name, "problems": list(problems),
            "has_metrics": bool(metrics), "run_id": registry.get("run_id"), "version": registry.get("version"),
            "lineage_version": registry.get("lineage_version")}


# ------------------------------------------------------------------------------ rendering and logging


def _number(value: Any, digits: int = 3) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if _finite(value):
        return f"{value:,.{digits}f}"
    return "—" if value is None or not isinstance(value, str) else value


def render(context: Mapping[str, Any]) -> str:
    """The page as HTML text: the template, autoescaped; charts (SVG made here) are the only markup passed in."""
    from jinja2 import ChainableUndefined, Environment, FileSystemLoader
    from markupsafe import Markup

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, undefined=ChainableUndefined,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["num"] = _number
    env.filters["mb"] = lambda b: f"{b / 1e6:,.1f} MB" if _finite(b) else "—"
    env.filters["pct"] = lambda x: f"{100 * x:.1f}%" if _finite(x) else "—"
    ctx = dict(context)
    charts_in = {"curves": ("pr", "thresholds"), "calibration": ("chart",), "cooccurrence": ("chart",)}
    for key, chart_keys in charts_in.items():
        if ctx.get(key):
            ctx[key] = {**ctx[key], **{k: Markup(ctx[key][k]) if ctx[key].get(k) else None for k in chart_keys}}
    return env.get_template("report.html.j2").render(**ctx, sections=SECTIONS)


def log_report(path: Path, run_id: str, tracking_uri: str, retry: Any = None) -> str:
    """Log the page as ``report/<name>`` of the MLflow run ``run_id``; returns the artifact's location."""
    from components.tracking.store import Store

    store = Store(tracking_uri, retry)
    run = store.get_run(run_id)
    store.log_artifact(run_id, str(path), ARTIFACT_PATH)
    return f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_PATH}/{Path(path).name}"


def report(reports_dir: Path, out_path: Path, *, data_dir: Path, model_name: str, tracking_uri: str | None = None,
           retry: Any = None) -> dict:
    """Render the run's page to ``out_path`` (atomically) and log it to the run ``registry.json`` names.

    Returns ``{"path", "bytes", "sections": {name: measured}, "problems", "mlflow": {"logged", "run_id",
    "artifact_uri" | "reason"}}``. Never fails for a missing input or an unreachable store: the page is written
    and ``mlflow.reason`` says why it was not logged.
    """
    from components.tracking.store import TrackingError
    from mlflow.exceptions import MlflowException

    inputs, problems = load_inputs(reports_dir, data_dir)
    context = build_context(inputs, problems, model_name)
    html = render(context)
    out_path = Path(out_path)
    with atomic_write(out_path) as fh:
        fh.write(html)
    run_id = _map(inputs.get("registry")).get("run_id")
    mlflow: dict[str, Any] = {"logged": False, "run_id": run_id}
    if not run_id:
        mlflow["reason"] = "registry.json names no MLflow run: the register step has not recorded this run"
    elif not tracking_uri:
        mlflow["reason"] = "no tracking store given"
    else:
        try:
            mlflow.update(logged=True, artifact_uri=log_report(out_path, run_id, tracking_uri, retry))
        except (TrackingError, MlflowException, OSError) as exc:
            mlflow["reason"] = " ".join(str(exc).split())[:500] or type(exc).__name__
    if mlflow["logged"]:
        log.info("report %s logged to MLflow run %s: %s", out_path, run_id, mlflow["artifact_uri"])
    else:
        log.warning("report written to %s but not logged to MLflow: %s", out_path, mlflow["reason"])
    return {"path": str(out_path), "bytes": len(html.encode("utf-8")),
            "sections": {name: context[name] is not None for name in SECTIONS}, "problems": problems, "mlflow": mlflow}
