"""`predict` and `showcase`: score texts and split examples with an exported model folder."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.cli.app import app, console, err, fail, project_params, setup

_PRINTED_ANYWAY = ("quality gate failed", "no exported variant passed the gate")


def _gate_filter(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_PRINTED_ANYWAY)


@contextlib.contextmanager
def quiet_components(verbose: bool = False) -> Iterator[None]:
    """Keep the components' INFO lines (tuned thresholds, ...) and the gate warnings, which the
    command prints itself, out of interactive output; other warnings still show. Restored after."""
    if verbose:
        yield
        return
    components_log, metrics_log = logging.getLogger("components"), logging.getLogger("components.quality.gate")
    level = components_log.level
    components_log.setLevel(logging.WARNING)
    metrics_log.addFilter(_gate_filter)
    try:
        yield
    finally:
        components_log.setLevel(level)
        metrics_log.removeFilter(_gate_filter)


def _release_folder(root: Path, model: Optional[Path]) -> Path:
    return model if model is not None else root / project_params(root).paths.model / "release"


def load_model(folder: Path):
    from components.model.folder import CheckpointError
    from components.model.onnx_runtime import OnnxClassifier

    try:
        return OnnxClassifier(folder)
    except CheckpointError as exc:  # ModelFolderError included: its message says what to run
        raise fail(str(exc)) from None


def _parse_context(spec: Optional[str]):
    from components.core.taxonomy import AUDIENCES, SURFACES, ContextPrefix

    if spec is None:
        return None
    try:
        return ContextPrefix.parse(spec)
    except ValueError as exc:
        problem = str(exc).split(";")[0]  # the valid values are listed below, both kinds
        raise fail(f"--context {spec!r}: {problem}; valid audiences: {', '.join(AUDIENCES)}; "
                    f"valid surfaces: {', '.join(SURFACES)} (e.g. ADULT/MESSAGE)") from None


@app.command()
def predict(
    texts: Annotated[list[str], typer.Argument(help="One or more texts to score (quote each one).")],
    context: Annotated[Optional[str], typer.Option(
        "--context", "-c", help="Where the texts were posted, AUDIENCE/SURFACE (e.g. ADULT/MESSAGE); "
        "default: a text's own [AUDIENCE][SURFACE] prefix, else GENERAL/GENERAL.")] = None,
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="A model folder (default: models/moderation/release, what serving loads).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON (all 18 scores per text).")] = False,
) -> None:
    """Score texts with an exported model: flagged categories, most severe first, with scores and thresholds."""
    from components.core.taxonomy import LABELS, place
    from components.core.validity import is_visible
    from components.serving.moderate import moderate
    from flows.cli.app import argument_problem, shown

    root = setup()
    ctx = _parse_context(context)
    for i, text in enumerate(texts, start=1):
        if problem := argument_problem(text):  # argv is checked too; this guards a direct call
            raise fail(f"text {i} {shown(text)} {problem}")
        if not any(is_visible(c) for c in text):
            raise fail(f"text {i} {shown(text)} is empty: it has no visible character (only spaces, zero-width "
                       "or format characters); pass the text to score")
        try:
            place(text, ctx)
        except ValueError as exc:
            raise fail(f"text {i}: {exc}") from None
    clf = load_model(_release_folder(root, model))
    results = []
    for r in moderate(clf, texts, ctx):
        top = sorted(LABELS, key=lambda name: -r.scores[name])[:3]
        results.append({"input": r.input, **r.to_dict(),
                        "top": [{"category": name, "score": round(r.scores[name], 6),
                                 "threshold": round(float(clf.thresholds[LABELS.index(name)]), 6)} for name in top]})
    if json_out:
        console.print_json(json.dumps({"model": str(clf.folder), "variant": clf.variant, "tuned_thresholds": clf.tuned,
                                       "results": results}))
        return
    from rich.markup import escape

    from components.text.language import NO_CONTENT

    if not clf.tuned:
        err.print(f"note: {clf.folder} has no thresholds.json; flagging at 0.5 (run the evaluate step to tune)",
                  style="yellow", highlight=False)
    for i, r in enumerate(results, start=1):
        console.print(f"[bold]{i}.[/] {escape(r['input'])}  [dim]→[/] [bold]{r['action']}[/]", highlight=False)
        for f in r["flags"]:
            console.print(f"   [red]{f['category']}[/]  score {f['score']:.3f} ≥ threshold {f['threshold']:.2f}"
                          f"  severity {f['severity']}", highlight=False)
        lang = r["language"]
        if lang["code"] == NO_CONTENT:
            console.print("   [green]not judged[/]: no words to judge (emoji, punctuation or format characters only)",
                          highlight=False)
        elif not lang["judged"]:
            console.print(f"   [yellow]not judged[/]: the text reads as language {lang['code']!r} (confidence "
                          f"{lang['confidence']:.2f}); the model is trained on {', '.join(clf.config.languages)} only",
                          highlight=False)
        elif not r["flags"]:
            top = ", ".join(f"{t['category']} {t['score']:.3f} (threshold {t['threshold']:.2f})" for t in r["top"])
            console.print(f"   [green]no flags[/]  top scores: {top}", highlight=False)


@app.command()
def showcase(
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Where to write the markdown page (default: reports/showcase.md).")] = None,
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="A model folder with tuned thresholds (default: models/moderation/release).")] = None,
    test: Annotated[Optional[Path], typer.Option(
        "--test", help="The split to draw examples from (default: data/splits/test.jsonl).")] = None,
    per_category: Annotated[int, typer.Option(
        "--per-category", "-n", min=0, help="Examples of each kind (TP, FP, FN) per category.")] = 3,
) -> None:
    """Write a markdown page: per category its test F1 and its most confident hits and misses."""
    from components.core.contract import ContractError, atomic_write, read_records
    from components.quality.metrics import category_metrics
    from components.quality.showcase import render_markdown, select_examples
    from components.serving.moderate import moderate, score_matrix
    from components.core.taxonomy import LABELS
    from components.model.scoring import label_matrix

    root = setup()
    params = project_params(root)
    paths = params.paths
    output = output if output is not None else root / paths.reports / "showcase.md"
    test = test if test is not None else root / paths.splits / "test.jsonl"
    clf = load_model(_release_folder(root, model))
    try:
        records = read_records(test).records
    except ContractError as exc:
        raise fail(str(exc)) from None
    if not records:
        raise fail(f"{test}: the split is empty; run the merge step (content-moderation run --to merge)")
    if not clf.tuned:
        err.print(f"note: {clf.folder} has no thresholds.json; using 0.5 for every category", style="yellow",
                  highlight=False)
    console.print(f"scoring {len(records):,} examples from {test} with {clf.folder} ({clf.variant})", style="dim",
                  highlight=False)
    # evaluate's batch size: dynamic INT8 quantizes activations per batch, so batching moves scores slightly
    probs = score_matrix(moderate(clf, [r.text for r in records], batch_size=params.evaluate.batch_size))
    thresholds = {name: float(clf.thresholds[j]) for j, name in enumerate(LABELS)}
    with quiet_components():
        metrics = category_metrics(label_matrix(records), probs, thresholds)
        selection = select_examples(records, probs, thresholds, per_category)
    about = {"model": f"{clf.folder} ({clf.variant}{'' if clf.tuned else ', untuned thresholds 0.5'})",
             "examples from": str(test)}
    with atomic_write(output) as fh:
        fh.write(render_markdown(selection, metrics, about=about))
    console.print(f"wrote {output}: {len(LABELS)} categories, macro F1 {metrics['macro_f1']:.4f}", highlight=False)
