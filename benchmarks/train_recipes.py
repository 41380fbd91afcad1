"""Benchmark: candidate CPU training recipes, each trained cold on the default splits and judged on
every tier the gate judges, to choose the CPU profile by measurement.

For each recipe (an override of ``train.profiles.cpu`` in params.yaml), in this process:

- train it with the project's own ``train()`` from nothing cached (a fresh cache folder), timed;
- score validation, test, the held-out real text and the behavioural suite with the PyTorch
  model (``run_batched``: normalised, windowed, as served); tune thresholds on validation;
- judge the generated, real and behaviour tiers with the gate module (``quality_gate``; parity
  and the champion comparison belong to the pipeline, not to a recipe).

Writes ``reports/train_recipes.json`` after every recipe (atomically), so an interrupted run keeps
what it measured and a rerun skips recipes already measured on the same splits (``--force`` redoes
them); figures measured on other splits are kept under ``earlier``, by the splits' digest.
Figures: train seconds, examples/s, test macro F1 on generated text, categories below the F1
floor, real-text macro ROC-AUC and judged pairs below the floor, behaviour gating pass rate.

    python benchmarks/train_recipes.py                          # every recipe below
    python benchmarks/train_recipes.py --recipes top2 top1 --max-train 4000

Run it on a quiet machine: anything else running makes every time worse.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# name -> overrides of the cpu profile (components.core.params.ProfileParams fields)
RECIPES: dict[str, dict] = {
    "head": {"mode": "head"},  # the frozen encoder with an MLP head (the CPU default before fine-tuning)
    "top1": {"mode": "finetune", "train_layers": 1, "epochs": 3, "learning_rate": 2e-4, "head_hidden": 0},
    "top2": {"mode": "finetune", "train_layers": 2, "epochs": 3, "learning_rate": 2e-4, "head_hidden": 0},
    "top2-len64": {"mode": "finetune", "train_layers": 2, "epochs": 3, "learning_rate": 2e-4, "head_hidden": 0,
                   "max_length": 64},
    "top3": {"mode": "finetune", "train_layers": 3, "epochs": 3, "learning_rate": 1e-4, "head_hidden": 0},
    "top2-meanmax": {"mode": "finetune", "train_layers": 2, "epochs": 3, "learning_rate": 2e-4, "head_hidden": 0,
                     "pooling": "mean_max"},
    # positive weights: negatives/positives capped at 10 weigh a rare category's positives up to 10x, which
    # makes a false positive on a look-alike negative (counter-speech, a negated threat) cheap to the loss
    "top2-pw3": {"mode": "finetune", "train_layers": 2, "epochs": 3, "learning_rate": 2e-4, "head_hidden": 0,
                 "pos_weight_cap": 3.0},
    "top2-pw1": {"mode": "finetune", "train_layers": 2, "epochs": 3, "learning_rate": 2e-4, "head_hidden": 0,
                 "pos_weight_cap": 1.0},
    "top2-pw1-2ep": {"mode": "finetune", "train_layers": 2, "epochs": 2, "learning_rate": 2e-4, "head_hidden": 0,
                     "pos_weight_cap": 1.0},  # a third less training time: what it costs in quality
}


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def measure(name: str, overrides: dict, splits: Path, max_train: int | None) -> dict:
    import numpy as np

    from components.core.contract import read_records, write_records
    from components.core.params import load_params
    from components.external import is_real
    from components.model.classifier import ModerationClassifier, run_batched
    from components.model.onnx_runtime import OnnxClassifier
    from components.model.scoring import label_matrix
    from components.quality import behaviour as suite
    from components.quality.gate import quality_gate
    from components.quality.metrics import category_metrics, tune_thresholds
    from components.quality.real_text import real_text_metrics
    from components.text.language import identify
    from components.train import train

    params = load_params(ROOT / "params.yaml")
    cpu = params.train.profiles["cpu"].model_copy(update=overrides)
    train_params = params.train.model_copy(update={"profile": "cpu", "profiles": {"cpu": cpu}})
    with tempfile.TemporaryDirectory(prefix=f"recipe-{name}-") as tmp:
        tmp = Path(tmp)
        train_path = splits / "train.jsonl"
        if max_train:
            records = read_records(train_path).records[:max_train]
            write_records(tmp / "train.jsonl", records)
            train_path = tmp / "train.jsonl"
        started = time.perf_counter()
        stats = train(train_params, train_path, splits / "val.jsonl", tmp / "checkpoint", tmp / "cache")
        seconds = time.perf_counter() - started
        model, tokenizer = ModerationClassifier.load(tmp / "checkpoint")

    val = read_records(splits / "val.jsonl").records
    test = read_records(splits / "test.jsonl").records
    real = [r for r in read_records(splits / "real_test.jsonl").records if is_real(r)]
    cases = suite.expand(suite.load_suite())
    case_texts = [OnnxClassifier.with_context(c.text) for c in cases]
    started = time.perf_counter()
    pv, pt = (run_batched(model, tokenizer, [r.text for r in rs], 64) for rs in (val, test))
    pr = run_batched(model, tokenizer, [r.text for r in real], 64)
    pb = run_batched(model, tokenizer, case_texts, 64)
    score_seconds = time.perf_counter() - started
    ev = params.evaluate
    thresholds = tune_thresholds(label_matrix(val), pv, ev)
    generated = [i for i, r in enumerate(test) if not is_real(r)]
    gen = category_metrics(label_matrix(test)[generated], pt[generated], thresholds)
    real_report = real_text_metrics(real, label_matrix(real), pr, thresholds, ev.real_min_support)
    judged = [v.judged for v in identify(case_texts, supported=model.config.languages)]
    behaviour = suite.score(cases, pb, thresholds, judged)
    verdict = quality_gate(gen, None, ev, None, real=real_report, behaviour=behaviour)
    failing = [c.name for c in verdict.checks if not c.passed and c.tier != "release"]
    per_cat = {c: round(m["f1"], 4) for c, m in gen["per_category"].items()}
    return {
        "recipe": name, "overrides": overrides, "train_examples": stats["train_examples"],
        "train_seconds": round(seconds, 1), "examples_per_second": stats["examples_per_second"],
        "epochs_run": stats["epochs_run"], "best_val_macro_f1_at_0.5": stats["best_val_macro_f1_at_0.5"],
        "score_seconds": round(score_seconds, 1),
        "generated_macro_f1": round(gen["macro_f1"], 4),
        "generated_below_floor": sorted(c for c, f in per_cat.items() if f < ev.f1_floor),
        "generated_f1": per_cat,
        "real_macro_roc_auc": real_report["overall"]["macro_roc_auc"],
        "real_macro_f1": real_report["overall"]["macro_f1"],
        "behaviour_gating_pass_rate": round(behaviour["gating_pass_rate"], 4),
        "behaviour_pass_rates": {n: round(f["pass_rate"], 3) for n, f in behaviour["functionalities"].items()},
        "tiers": {t: v for t, v in verdict.tiers().items() if t != "release"},
        "failing_checks": failing,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES))
    ap.add_argument("--splits", type=Path, default=ROOT / "data/splits")
    ap.add_argument("--max-train", type=int, default=None, help="train on the first N training records only")
    ap.add_argument("--out", type=Path, default=ROOT / "reports/train_recipes.json")
    ap.add_argument("--force", action="store_true", help="measure recipes already in --out again")
    args = ap.parse_args(argv)

    from components.core.contract import write_json
    from flows.settings import apply_defaults

    apply_defaults(ROOT)
    missing = [f for f in ("train.jsonl", "val.jsonl", "test.jsonl", "real_test.jsonl") if not (args.splits / f).exists()]
    if missing:
        print(f"error: {args.splits} lacks {', '.join(missing)}; run the pipeline to the merge step first "
              "(content-moderation run --to merge)", file=sys.stderr)
        return 2
    digest = _digest([args.splits / f for f in ("train.jsonl", "val.jsonl", "test.jsonl", "real_test.jsonl")])
    report = json.loads(args.out.read_text()) if args.out.exists() else {}
    if report.get("splits_sha256") != digest:  # other splits: their figures move to "earlier", by digest
        earlier = report.get("earlier", {})
        if report.get("results"):
            earlier[report["splits_sha256"]] = report["results"]
        report = {"splits_sha256": digest, "results": {}, "earlier": earlier}
    report.update({"machine": {"platform": platform.platform(), "python": platform.python_version()},
                   "max_train": args.max_train})
    for name in args.recipes:
        if name in report["results"] and not args.force:
            print(f"{name}: measured already (--force to redo)")
            continue
        result = measure(name, RECIPES[name], args.splits, args.max_train)
        report["results"][name] = result
        write_json(args.out, report)
        print(f"{name}: train {result['train_seconds']} s, generated macro F1 {result['generated_macro_f1']} "
              f"({len(result['generated_below_floor'])} below floor), real ROC-AUC {result['real_macro_roc_auc']}, "
              f"behaviour {result['behaviour_gating_pass_rate']}, tiers "
              + ", ".join(f"{t} {'pass' if v['passed'] else 'FAIL'}" for t, v in result["tiers"].items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
