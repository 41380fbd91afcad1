"""The evaluate step: score every ONNX variant, tune thresholds, pick what ships, judge the gate.

Thresholds are tuned per category on the validation split. Every variant is scored the same
way on the test split (generated text); the served variant is the smallest one whose macro F1
is within ``evaluate.variant_tolerance`` of fp32 and that passes the generated and release tiers.
Parity is measured against the PyTorch model's validation probabilities (saved by the export
step) at the tuned thresholds, i.e. on the decisions that will actually be served. The served
variant alone is then scored on the held-out real text (``real_test.jsonl``) and the behavioural
suite, which never pick a threshold or a variant, and judged on every tier
(:mod:`components.quality.gate`).

Outputs: a release folder (the served ONNX file, tokenizer, classifier.json, thresholds.json,
manifest.json with checksums and the verdict), ``reports/metrics.json`` and plots.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from components.core.contract import ContractError, read_records
from components.core.params import EvaluateParams
from components.model.folder import TORCH_VAL_PROBS, VARIANT_FILES, write_release
from components.model.onnx_runtime import OnnxClassifier
from components.model.scoring import label_matrix
from components.quality import behaviour as suite
from components.quality.gate import quality_gate, select_served_variant, variant_checks
from components.quality.metrics import calibration, category_metrics, cooccurrence, robustness, tune_thresholds
from components.quality.parity import parity as measure_parity
from components.quality.plots import write_plots, write_threshold_curves
from components.external import is_real
from components.quality.real_text import real_text_metrics

log = logging.getLogger(__name__)


LATENCY_SAMPLES = 64


def batch1_latency_ms(model: OnnxClassifier, texts: list[str]) -> dict:
    """One text at a time, as a moderation request arrives: p50 and p95 milliseconds."""
    if not texts:
        return {"latency_ms_p50": None, "latency_ms_p95": None}
    model.predict_proba(texts[:1], 1)  # warm-up: first-call allocations are not a request's cost
    times = []
    for text in texts:
        started = time.perf_counter()
        model.predict_proba([text], 1)
        times.append((time.perf_counter() - started) * 1000)
    return {"latency_ms_p50": round(float(np.percentile(times, 50)), 3),
            "latency_ms_p95": round(float(np.percentile(times, 95)), 3)}


def _read_split(path: Path, name: str):
    records = read_records(path).records
    if not records:
        raise ContractError(f"{path}: the {name} split is empty; run the merge step (content-moderation run --to merge)")
    return records


def _real_split(path: Path | None) -> list:
    """The held-out real text, or [] (the real tier then fails: "no held-out real text")."""
    if path is None or not Path(path).exists():
        log.warning("no held-out real text at %s: the gate's real-text tier cannot pass", path)
        return []
    return [r for r in read_records(path).records if is_real(r)]


def _unnormalised(model: OnnxClassifier, records: list, probs: np.ndarray, batch_size: int) -> np.ndarray:
    """``probs`` with the perturbed records' rows scored again without the text normalisation."""
    rows = [i for i, r in enumerate(records) if r.source == "perturbation"]
    out = probs.copy()
    if rows:
        out[rows] = model.predict_proba([records[i].text for i in rows], batch_size, normalize=False)
    return out


def evaluate(onnx_dir: Path, val_path: Path, test_path: Path, params: EvaluateParams, release_dir: Path,
             plots_dir: Path, champion: Mapping[str, Any] | None = None, real_test_path: Path | None = None) -> dict:
    """Score every variant in ``onnx_dir``; write the release folder and plots; return the metrics report.

    ``champion``: the registry's current champion as ``{"version": str, "macro_f1": float | None,
    "real_pr_auc": {group: {category: float}}, "behaviour_pass_rate": {functionality: float}}``
    (the caller looks it up; this step imports no tracking), or None when there is none. The
    gate's regression checks compare with it and the report records which one it was
    (``gate.champion``), so the register step can tell whether the champion moved since.
    ``real_test_path``: the held-out real text (``real_test.jsonl``); absent, the real tier fails.
    Raises ContractError for an empty or invalid split or a folder without model.onnx.
    """
    onnx_dir = Path(onnx_dir)
    val, test = _read_split(val_path, "validation"), _read_split(test_path, "test")
    real = _real_split(real_test_path)
    generated = [i for i, r in enumerate(test) if not is_real(r)]
    yva, yte = label_matrix(val), label_matrix(test)
    val_texts, test_texts = [r.text for r in val], [r.text for r in test]
    reference = np.load(onnx_dir / TORCH_VAL_PROBS) if (onnx_dir / TORCH_VAL_PROBS).exists() else None
    if reference is not None and len(reference) != len(val):
        log.warning("PyTorch reference probabilities cover %d examples, the validation split %d: re-run export",
                    len(reference), len(val))
        reference = None

    variants = [v for v, f in VARIANT_FILES.items() if (onnx_dir / f).exists()]
    if "fp32" not in variants:
        raise ContractError(f"{onnx_dir}: no fp32 model.onnx; re-run the export step")
    results, probs_by_variant = {}, {}
    for variant in variants:
        model = OnnxClassifier(onnx_dir, variant)
        started = time.perf_counter()
        pv = model.predict_proba(val_texts, params.batch_size)
        pt = model.predict_proba(test_texts, params.batch_size)
        seconds = time.perf_counter() - started
        latency = batch1_latency_ms(model, test_texts[:LATENCY_SAMPLES])
        thresholds = tune_thresholds(yva, pv, params)
        metrics = category_metrics(yte, pt, thresholds)
        # The merge step keeps public real text out of the test split, so the two are usually one set.
        gen_metrics = metrics if len(generated) == len(test) else category_metrics(yte[generated], pt[generated],
                                                                                    thresholds)
        parity = measure_parity(reference, pv, thresholds) if reference is not None else None
        checks = variant_checks(gen_metrics, parity, params, champion)
        results[variant] = {
            "file": VARIANT_FILES[variant],
            "size_bytes": (onnx_dir / VARIANT_FILES[variant]).stat().st_size,
            "texts_per_second": round((len(val_texts) + len(test_texts)) / seconds, 1),
            **latency,
            "macro_f1": gen_metrics["macro_f1"], "micro_f1": gen_metrics["micro_f1"],
            "thresholds": thresholds, "metrics": metrics, "generated": gen_metrics, "parity": parity,
            "gate_passed": all(c.passed for c in checks),
        }
        probs_by_variant[variant] = (model, pv, pt)
        log.info("%s: generated macro F1 %.4f, variant checks %s", variant, gen_metrics["macro_f1"],
                 "pass" if results[variant]["gate_passed"] else "FAIL")

    served = select_served_variant(results, params.variant_tolerance)
    # With nothing passing, the fp32 model is still released as a candidate: never promoted, but inspectable.
    chosen = served or "fp32"
    best = results[chosen]
    model, pv, pt = probs_by_variant[chosen]
    thresholds = best["thresholds"]
    real_report = None
    if real:
        pr = model.predict_proba([r.text for r in real], params.batch_size)
        real_report = real_text_metrics(real, label_matrix(real), pr, thresholds, params.real_min_support)
    cases = suite.expand(suite.load_suite())
    case_texts = [OnnxClassifier.with_context(c.text) for c in cases]
    pb = model.predict_proba(case_texts, params.batch_size)
    judged = [v.judged for v in model.languages(case_texts)]
    behaviour_report = {**suite.score(cases, pb, thresholds, judged), "floor": params.behaviour_floor}
    verdict = quality_gate(best["generated"], best["parity"], params, champion,
                           real=real_report, behaviour=behaviour_report)
    gate = verdict.to_dict()
    report = {
        "served_variant": chosen,
        "gate": gate,
        "generated": best["generated"],
        "test": best["metrics"],
        "real": None if real_report is None else {**real_report, "roc_auc_floor": params.real_roc_auc_floor},
        "behaviour": behaviour_report,
        "thresholds": thresholds,
        "calibration": calibration(yte, pt, params.calibration_bins),
        "robustness": robustness(test, yte, pt, thresholds, _unnormalised(model, test, pt, params.batch_size)),
        "cooccurrence": cooccurrence(yte, pt, thresholds),
        "variants": {v: {k: r[k] for k in ("file", "size_bytes", "texts_per_second", "latency_ms_p50",
                                           "latency_ms_p95", "macro_f1", "micro_f1", "gate_passed", "parity")}
                     for v, r in results.items()},
        "f1_floor": params.f1_floor,
        "champion": gate["champion"],
        "champion_macro_f1": None if champion is None else champion.get("macro_f1"),
    }
    write_plots(yte, pt, thresholds, {**best["generated"], "f1_floor": params.f1_floor}, plots_dir)
    write_threshold_curves(yva, pv, thresholds, params, plots_dir)
    write_release(onnx_dir, release_dir, chosen, thresholds, report)
    return report
