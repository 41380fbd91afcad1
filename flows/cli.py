"""`content-moderation`: the command line of the pipeline. `--help` on every command documents it."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from flows.settings import apply_defaults, find_root

app = typer.Typer(
    name="content-moderation",
    help="Train, judge, promote and serve the 18-category content-moderation classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

REVIEW_KINDS = ("positives", "negatives", "perturbations")


def _setup(verbose: bool = False) -> Path:
    root = find_root()
    apply_defaults(root)
    # Our own loggers at INFO; libraries (onnxruntime's quantiser logs every tensor) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("components", "flows"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    return root


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


def _params(root: Path):
    from components.params import ParamsError, load_params

    try:
        return load_params(root / "params.yaml")
    except ParamsError as exc:
        raise _fail(str(exc)) from None


@app.command()
def stage(
    name: Annotated[str, typer.Argument(help="The DAG step to run, e.g. generate-positives or merge.")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run one DAG step on params.yaml (what each dvc.yaml stage calls)."""
    from components.contract import ContractError
    from components.tracking import TrackingError
    from flows.stages import STAGES
    from flows.train_flow import PipelineBusyError, pipeline_lock

    root = _setup(verbose)
    if name not in STAGES:
        raise _fail(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    params = _params(root)
    try:
        with pipeline_lock(root):
            stats = STAGES[name](root, params)
    except (ContractError, ValueError, FileNotFoundError, TrackingError, PipelineBusyError) as exc:
        raise _fail(f"{name}: {exc}") from None
    console.print(f"[green]{name}[/] done in {stats['seconds']}s", highlight=False)


def _count_records(path: Path) -> int | None:
    """Records in a JSONL output (a folder: all its data files, rejects not counted)."""
    if path.is_dir():
        files = [f for f in sorted(path.glob("*.jsonl")) if "rejects" not in f.name]
    elif "rejects" in path.name:
        files = []
    else:
        files = [path] if path.suffix == ".jsonl" and path.exists() else []
    if not files:
        return None
    return sum(sum(1 for line in open(f, encoding="utf-8") if line.strip()) for f in files)


def pipeline_status(root: Path) -> list[dict]:
    """Each dvc.yaml stage: up to date or stale (and why), and its outputs with record counts."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        stale = repo.status()
        rows = []
        for st in repo.index.stages:
            if not getattr(st, "cmd", None):
                continue
            outs = []
            for out in st.outs:
                p = Path(out.fs_path)
                parts = {f.stem: _count_records(f) for f in sorted(p.glob("*.jsonl"))} if p.is_dir() else {}
                outs.append({"path": str(p.relative_to(root)), "exists": p.exists(), "records": _count_records(p),
                             "files": {k: v for k, v in parts.items() if v is not None and len(parts) <= 4}})
            changes = stale.get(st.addressing, [])
            rows.append({"stage": st.name, "up_to_date": not changes, "changes": changes, "outs": outs})
    return rows


@app.command()
def status(json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False) -> None:
    """Each pipeline step: up to date or stale, with record counts of what it wrote."""
    root = _setup()
    rows = pipeline_status(root)
    if json_out:
        console.print_json(json.dumps(rows))
        return
    table = Table(title="pipeline")
    for col in ("step", "state", "outputs (records)"):
        table.add_column(col)
    for row in rows:
        state = "[green]up to date[/]" if row["up_to_date"] else "[yellow]stale[/]"
        outs = "\n".join(
            f"{o['path']}  [dim]missing[/]" if not o["exists"]
            else f"{o['path']}  {o['records']:,} records"
            + (f" ({', '.join(f'{k} {v:,}' for k, v in o['files'].items())})" if o["files"] else "")
            if o["records"] is not None else o["path"]
            for o in row["outs"] if not o["path"].startswith("reports/")
        )
        table.add_row(row["stage"], state, outs)
    console.print(table)
    _print_registry(root)


def _print_registry(root: Path) -> None:
    """The champion (version, macro F1, when promoted) and the last run's verdict."""
    from components import tracking
    from flows.settings import tracking_uri

    params = _params(root)
    last = root / params.paths.reports / "registry.json"
    if last.exists():
        r = json.loads(last.read_text())
        verdict = "[green]promoted to champion[/]" if r["promoted"] else "[yellow]stayed candidate[/]"
        console.print(f"last run: {r['lineage_version']} → {r['model_name']} version {r['version']}, "
                      f"macro F1 {r['macro_f1']:.4f}, {verdict} ({'; '.join(r['reasons'])})", highlight=False)
    try:
        champ = tracking.champion(tracking_uri(), params.track.model_name,
                                  retry=tracking.RetryPolicy(attempts=1))
    except tracking.TrackingError as exc:
        console.print(f"champion: unknown ({exc})", highlight=False)
        return
    if champ is None:
        console.print(f"champion: none yet ({params.track.model_name} has no version that passed the gate)")
    else:
        f1 = "?" if champ["macro_f1"] is None else f"{champ['macro_f1']:.4f}"
        console.print(f"champion: {params.track.model_name} version {champ['version']}, macro F1 {f1}, "
                      f"promoted {champ['promoted_at'] or '?'}", highlight=False)


@app.command()
def run(
    from_step: Annotated[Optional[str], typer.Option("--from", help="Rerun this step even if current; what it changes reruns after it.")] = None,
    to_step: Annotated[Optional[str], typer.Option("--to", help="Stop after this step (and run only what it needs).")] = None,
    experiment: Annotated[Optional[str], typer.Option("--experiment", help="Reproduce a lineage version (v1..v16): writes its param overrides into params.yaml first.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run train-flow in this process on an ephemeral Prefect: only stale steps run; a second run is all cached."""
    root = _setup(verbose)  # before Prefect is imported: it reads PREFECT_HOME once
    from components.tracking import TrackingError
    from flows.stages import STAGES
    from flows.train_flow import PipelineBusyError, run_in_process

    for step in (from_step, to_step):
        if step and step not in STAGES:
            raise _fail(f"unknown step {step!r}; steps: {', '.join(STAGES)}")
    if experiment:
        _apply_experiment(root, experiment)
    _params(root)  # validate before starting Prefect
    try:
        summary = run_in_process(root, to_step=to_step, force=[from_step] if from_step else None)
    except (PipelineBusyError, TrackingError, ValueError, FileNotFoundError) as exc:
        raise _fail(f"{exc}\nSteps that finished are kept and committed; run again to resume.") from None
    console.print("train-flow:", highlight=False)
    for name, info in summary.items():
        style = "dim" if info["state"] == "Cached" else "green"
        console.print(f"  [{style}]{name}: {info['state']}[/] ({info['seconds']} s)", highlight=False)
    if to_step is None or to_step in ("evaluate", "register"):
        _print_verdict(root)
        _print_registry(root)


def _apply_experiment(root: Path, version: str) -> None:
    """Write a lineage version's overrides (and track.reproduces) into params.yaml, keeping its comments."""
    from components.lineage import LineageError, load_lineage
    from components.params import ParamsError
    from flows.params_file import set_params

    try:
        overrides = load_lineage().overrides_for(version)
    except LineageError as exc:
        raise _fail(str(exc)) from None
    try:
        set_params(root / "params.yaml", {**overrides, "track.reproduces": version})
    except ParamsError as exc:
        raise _fail(f"{version}'s overrides do not give valid params: {exc}") from None
    shown = ", ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items()) or "none (as its parent)"
    console.print(f"params.yaml now reproduces {version}: {shown}. `git checkout params.yaml` returns to the "
                  "defaults.", highlight=False)


def _print_verdict(root: Path) -> None:
    """The gate's verdict on the model the last evaluation judged, in one screen."""
    params = _params(root)
    path = root / params.paths.reports / "metrics.json"
    if not path.exists():
        return
    m = json.loads(path.read_text())
    gate = m["gate"]
    verdict = "[green]PASSED[/]" if gate["passed"] else "[red]FAILED[/]"
    console.print(f"quality gate {verdict}: served variant {m['served_variant']}, test macro F1 "
                  f"{m['test']['macro_f1']:.4f}, micro F1 {m['test']['micro_f1']:.4f}; release folder "
                  f"{params.paths.model}/release")
    failing = [c for c in gate["checks"] if not c["passed"]]
    for check in failing:
        console.print(f"  failing {check['name']}: {check['detail']}", highlight=False)
    if failing:
        console.print("  the model stays a candidate; see reports/metrics.json and `content-moderation showcase`")


@app.command()
def review(
    category: Annotated[str, typer.Argument(help="A category name, e.g. threats.")],
    kind: Annotated[str, typer.Argument(help="positives, negatives or perturbations.")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many examples to show.")] = 10,
) -> None:
    """Print generated examples of one category readably, with their labels and context."""
    from components.contract import read_records
    from components.taxonomy import LABELS

    root = _setup()
    if category not in LABELS:
        raise _fail(f"unknown category {category!r}; valid categories: {', '.join(LABELS)}")
    if kind not in REVIEW_KINDS:
        raise _fail(f"unknown kind {kind!r}; valid kinds: {', '.join(REVIEW_KINDS)}")
    p = _params(root).paths
    path = {
        "positives": root / p.positives / f"{category}.jsonl",
        "negatives": root / p.negatives / f"{category}.jsonl",
        "perturbations": root / p.perturbations,
    }[kind]
    if not path.exists():
        raise _fail(f"{path} does not exist yet; run `content-moderation run --to generate-{kind}` first")
    records = [r for r in read_records(path, max_reject_fraction=1.0).records if r.metadata.get("category") == category]
    table = Table(title=f"{category} · {kind} · {min(limit, len(records))} of {len(records)}", show_lines=True)
    table.add_column("id", style="dim", no_wrap=True)
    table.add_column("context", no_wrap=True)
    table.add_column("text")
    table.add_column("labels")
    for r in records[:limit]:
        ctx = f"{r.metadata.get('audience', '?')}/{r.metadata.get('surface', '?')}"
        extra = f"\n[dim]{r.metadata['perturbation']}[/]" if "perturbation" in r.metadata else ""
        table.add_row(r.id, ctx + extra, r.text, ", ".join(r.positive_labels()) or "-")
    console.print(table)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="A JSONL file to check against the data contract.")],
    show: Annotated[int, typer.Option(help="How many bad lines to list.")] = 20,
) -> None:
    """Check a JSONL file against the data contract; exit 1 if any line breaks it."""
    from components.contract import ContractError, parse_lines

    logging.basicConfig(level=logging.WARNING)
    if not file.exists():
        raise _fail(f"{file}: no such file")
    try:
        result = parse_lines(file)
    except ContractError as exc:
        raise _fail(str(exc)) from None
    console.print(f"{file}: {len(result.records)} valid, {len(result.rejects)} invalid of {result.total} lines", highlight=False)
    for r in result.rejects[:show]:
        console.print(f"  line {r.line}: {r.reason}", highlight=False)
    if len(result.rejects) > show:
        console.print(f"  ... and {len(result.rejects) - show} more", highlight=False)
    if result.rejects:
        raise typer.Exit(1)



# ---------------------------------------------------------------------------------------------
# the model outside the pipeline: evaluate, predict, showcase

EVALUATE_VARIANTS = ("fp32", "fp16", "int8", "all")


_PRINTED_ANYWAY = ("quality gate failed", "no exported variant passed the gate")


def _gate_filter(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_PRINTED_ANYWAY)


@contextlib.contextmanager
def _quiet_components(verbose: bool = False) -> Iterator[None]:
    """Keep the components' INFO lines (tuned thresholds, ...) and the gate warnings, which the
    command prints itself, out of interactive output; other warnings still show. Restored after."""
    if verbose:
        yield
        return
    components_log, metrics_log = logging.getLogger("components"), logging.getLogger("components.metrics")
    level = components_log.level
    components_log.setLevel(logging.WARNING)
    metrics_log.addFilter(_gate_filter)
    try:
        yield
    finally:
        components_log.setLevel(level)
        metrics_log.removeFilter(_gate_filter)


def _release_folder(root: Path, model: Optional[Path]) -> Path:
    return model if model is not None else root / _params(root).paths.model / "release"


def _load_model(folder: Path):
    from components.classifier import CheckpointError
    from components.onnx_model import OnnxClassifier

    try:
        return OnnxClassifier(folder)
    except CheckpointError as exc:  # ModelFolderError included: its message says what to run
        raise _fail(str(exc)) from None


def _parse_context(spec: Optional[str]):
    from components.taxonomy import AUDIENCES, SURFACES, ContextPrefix

    if spec is None:
        return None
    try:
        return ContextPrefix.parse(spec)
    except ValueError as exc:
        problem = str(exc).split(";")[0]  # the valid values are listed below, both kinds
        raise _fail(f"--context {spec!r}: {problem}; valid audiences: {', '.join(AUDIENCES)}; "
                    f"valid surfaces: {', '.join(SURFACES)} (e.g. ADULT/MESSAGE)") from None


def _link(src: Path, dst: Path) -> None:
    try:
        dst.symlink_to(src.resolve())
    except OSError:  # a file system without symlinks
        import shutil

        shutil.copy2(src, dst)


def _stage_model(model: Path, tokenizer: Optional[Path], variant: str, staging: Path) -> tuple[Path, Path, dict, str | None]:
    """A model folder for ``components.evaluate`` built from --model/--tokenizer/--variant.

    Returns (model folder, tokenizer folder, {variant: onnx file}, relabel): ``relabel`` names
    the variant scored under the fp32 name when fp32 itself is not among those evaluated
    (evaluate needs model.onnx as its reference).
    """
    from components.classifier import CONFIG_NAME
    from components.export import TOKENIZER_FILES, TORCH_VAL_PROBS
    from components.onnx_model import VARIANT_FILES

    by_name = {f: v for v, f in VARIANT_FILES.items()}
    if not model.exists():
        raise _fail(f"{model}: no such model folder or file; run the pipeline (content-moderation run) "
                    "or pass --model pointing at an exported folder")
    if model.is_file():
        if model.suffix != ".onnx":
            raise _fail(f"{model}: not an .onnx file; pass a model folder or an .onnx file inside one")
        folder = model.parent
        named = by_name.get(model.name)
        if named and variant not in ("all", named):
            raise _fail(f"{model.name} is the {named} variant but --variant {variant} was asked for")
        files = {named or (variant if variant != "all" else "fp32"): model}
    else:
        folder = model
        present = {v: folder / f for v, f in VARIANT_FILES.items() if (folder / f).exists()}
        if not present:
            raise _fail(f"{folder}: no ONNX model file ({', '.join(VARIANT_FILES.values())}); re-run the export step")
        if variant == "all":
            files = present
        elif variant in present:
            files = {variant: present[variant]}
        else:
            raise _fail(f"{folder}: no {VARIANT_FILES[variant]} (variant {variant}); "
                        f"variants present: {', '.join(present)}")
    if not (folder / CONFIG_NAME).exists():
        raise _fail(f"{folder}: no {CONFIG_NAME}; this is not an exported model folder (run the export step)")
    tok_dir = tokenizer if tokenizer is not None else folder
    if tok_dir.is_file():
        tok_dir = tok_dir.parent
    if not (tok_dir / "tokenizer.json").exists():
        raise _fail(f"{tok_dir}: no tokenizer.json; pass --tokenizer pointing at the folder exported with the model")
    relabel = None
    if "fp32" not in files:
        if len(files) > 1:
            raise _fail(f"{folder}: scoring several variants needs model.onnx (fp32) as the reference; "
                        "pass --variant to evaluate one alone")
        relabel = next(iter(files))
    staging.mkdir(parents=True, exist_ok=True)
    for v, src in files.items():
        _link(src, staging / VARIANT_FILES["fp32" if relabel else v])
    _link(folder / CONFIG_NAME, staging / CONFIG_NAME)
    if (folder / TORCH_VAL_PROBS).exists():
        _link(folder / TORCH_VAL_PROBS, staging / TORCH_VAL_PROBS)
    for name in TOKENIZER_FILES:
        if (tok_dir / name).exists():
            _link(tok_dir / name, staging / name)
    return folder, tok_dir, files, relabel


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option("--model", help="An exported model folder (models/moderation/onnx, a release "
                                        "folder) or an .onnx file inside one.")],
    test: Annotated[Path, typer.Option("--test", help="The test split (JSONL): the metrics and the gate are judged on it.")],
    val: Annotated[Path, typer.Option("--val", help="The validation split (JSONL): thresholds are tuned on it.")],
    tokenizer: Annotated[Optional[Path], typer.Option(
        "--tokenizer", help="A folder with tokenizer.json (default: the model's folder); its vocabulary must match the model's.")] = None,
    variant: Annotated[str, typer.Option("--variant", help="fp32, fp16, int8, or all variants present in the folder.")] = "all",
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Where to write the report JSON (default: reports/evaluate.json); plots go beside it.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Evaluate any exported model folder outside the pipeline: per-category metrics, thresholds, gate."""
    import tempfile

    from components.classifier import CheckpointError
    from components.contract import ContractError, write_json
    from components.evaluate import evaluate as run_evaluate

    root = _setup(verbose)
    if variant not in EVALUATE_VARIANTS:
        raise _fail(f"unknown variant {variant!r}; valid: {', '.join(EVALUATE_VARIANTS)}")
    for name, path in (("--test", test), ("--val", val)):
        if not path.is_file():
            raise _fail(f"{path}: no such file ({name}); the pipeline writes the splits to data/splits/")
    output = output if output is not None else root / _params(root).paths.reports / "evaluate.json"
    params = _params(root).evaluate
    with tempfile.TemporaryDirectory(prefix="cm-evaluate-") as tmp:
        staging = Path(tmp) / "model"
        folder, tok_dir, files, relabel = _stage_model(model, tokenizer, variant, staging)

        def unstage(message: str) -> str:
            # Errors name the files the user passed, not the temporary folder they were linked into.
            message = message.replace(str(staging / "tokenizer.json"), str(tok_dir / "tokenizer.json"))
            return message.replace(str(staging), str(folder))

        console.print(f"evaluating {', '.join(files)} from {folder} on {test} (thresholds tuned on {val})",
                      style="dim", highlight=False)
        try:
            with _quiet_components(verbose):
                report = run_evaluate(staging, val, test, params, Path(tmp) / "release",
                                      output.parent / f"{output.stem}_plots")
        except (ContractError, CheckpointError, ValueError) as exc:
            raise _fail(unstage(str(exc))) from None
    if relabel:
        report["served_variant"] = relabel
        report["variants"] = {relabel: {**report["variants"]["fp32"], "file": files[relabel].name}}
    report = {"model": str(model), "tokenizer": str(tok_dir), "val": str(val), "test": str(test),
              "variants_evaluated": list(files), **report}
    write_json(output, report)
    _print_evaluation(report, params.f1_floor)
    console.print(f"wrote {output}", highlight=False)


def _print_evaluation(report: dict, floor: float) -> None:
    from components.taxonomy import LABELS, category

    m = report["test"]
    gate = report["gate"]
    role = "served" if gate["passed"] else "candidate: no variant passed the gate"
    table = Table(title=f"test metrics · {report['served_variant']} ({role}) · {m['samples']:,} examples",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("category", no_wrap=True)
    table.add_column("severity")
    for col in ("precision", "recall", "F1", "threshold", "support"):
        table.add_column(col, justify="right")
    for name in LABELS:
        c = m["per_category"][name]
        f1 = f"{c['f1']:.3f}" if c["f1"] + 1e-9 >= floor else f"[red]{c['f1']:.3f}[/]"
        table.add_row(name, category(name).severity, f"{c['precision']:.3f}", f"{c['recall']:.3f}", f1,
                      f"{c['threshold']:.2f}", str(c["support"]))
    console.print(table)
    console.print(f"macro F1 {m['macro_f1']:.4f} · micro F1 {m['micro_f1']:.4f}", highlight=False)
    if len(report["variants"]) > 1:
        vt = Table(title="variants")
        for col in ("variant", "size", "macro F1", "micro F1", "gate"):
            vt.add_column(col)
        for v, r in report["variants"].items():
            mark = f" ({role.split(':')[0]})" if v == report["served_variant"] else ""
            vt.add_row(v + mark, f"{r['size_bytes'] / 1e6:.1f} MB", f"{r['macro_f1']:.4f}", f"{r['micro_f1']:.4f}",
                       "[green]pass[/]" if r["gate_passed"] else "[red]fail[/]")
        console.print(vt)
    failing = [c for c in gate["checks"] if not c["passed"]]
    if gate["passed"]:
        console.print(f"gate: [green]PASSED[/] ({len(gate['checks'])} checks)", highlight=False)
    else:
        console.print(f"gate: [red]FAILED[/] ({len(failing)} of {len(gate['checks'])} checks)", highlight=False)
        for c in failing:
            console.print(f"  ✗ {c['name']}: {c['detail']}", highlight=False)


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
    from components.taxonomy import LABELS

    root = _setup()
    ctx = _parse_context(context)
    inputs = []
    for i, text in enumerate(texts, start=1):
        if not text.strip():
            raise _fail(f"text {i} is empty")
        try:
            inputs.append(_with_context(text, ctx))
        except ValueError as exc:
            raise _fail(f"text {i}: {exc}") from None
    clf = _load_model(_release_folder(root, model))
    probs = clf.predict_proba(inputs)
    flags = clf.flags(probs)
    results = []
    for text, inp, row, hits in zip(texts, inputs, probs, flags):
        top = sorted(range(len(LABELS)), key=lambda j: -float(row[j]))[:3]
        results.append({
            "text": text, "input": inp,
            "flags": [{"category": f.category, "score": round(f.score, 6), "threshold": round(f.threshold, 6),
                       "severity": f.severity} for f in hits],
            "top": [{"category": LABELS[j], "score": round(float(row[j]), 6),
                     "threshold": round(float(clf.thresholds[j]), 6)} for j in top],
            "scores": {name: round(float(row[j]), 6) for j, name in enumerate(LABELS)},
        })
    if json_out:
        console.print_json(json.dumps({"model": str(clf.folder), "variant": clf.variant, "tuned_thresholds": clf.tuned,
                                       "results": results}))
        return
    from rich.markup import escape

    if not clf.tuned:
        err.print(f"note: {clf.folder} has no thresholds.json; flagging at 0.5 (run the evaluate step to tune)",
                  style="yellow", highlight=False)
    for i, r in enumerate(results, start=1):
        console.print(f"[bold]{i}.[/] {escape(r['input'])}", highlight=False)
        for f in r["flags"]:
            console.print(f"   [red]{f['category']}[/]  score {f['score']:.3f} ≥ threshold {f['threshold']:.2f}"
                          f"  severity {f['severity']}", highlight=False)
        if not r["flags"]:
            top = ", ".join(f"{t['category']} {t['score']:.3f} (threshold {t['threshold']:.2f})" for t in r["top"])
            console.print(f"   [green]no flags[/]  top scores: {top}", highlight=False)


def _with_context(text: str, ctx) -> str:
    from components.onnx_model import OnnxClassifier

    return OnnxClassifier.with_context(text, ctx)


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
    from components.contract import ContractError, atomic_write, read_records
    from components.metrics import category_metrics
    from components.showcase import render_markdown, select_examples
    from components.taxonomy import LABELS
    from components.train import label_matrix

    root = _setup()
    params = _params(root)
    paths = params.paths
    output = output if output is not None else root / paths.reports / "showcase.md"
    test = test if test is not None else root / paths.splits / "test.jsonl"
    clf = _load_model(_release_folder(root, model))
    try:
        records = read_records(test).records
    except ContractError as exc:
        raise _fail(str(exc)) from None
    if not records:
        raise _fail(f"{test}: the split is empty; run the merge step (content-moderation run --to merge)")
    if not clf.tuned:
        err.print(f"note: {clf.folder} has no thresholds.json; using 0.5 for every category", style="yellow",
                  highlight=False)
    console.print(f"scoring {len(records):,} examples from {test} with {clf.folder} ({clf.variant})", style="dim",
                  highlight=False)
    # evaluate's batch size: dynamic INT8 quantizes activations per batch, so batching moves scores slightly
    probs = clf.predict_proba([r.text for r in records], batch_size=params.evaluate.batch_size)
    thresholds = {name: float(clf.thresholds[j]) for j, name in enumerate(LABELS)}
    with _quiet_components():
        metrics = category_metrics(label_matrix(records), probs, thresholds)
        selection = select_examples(records, probs, thresholds, per_category)
    about = {"model": f"{clf.folder} ({clf.variant}{'' if clf.tuned else ', untuned thresholds 0.5'})",
             "examples from": str(test)}
    with atomic_write(output) as fh:
        fh.write(render_markdown(selection, metrics, about=about))
    console.print(f"wrote {output}: {len(LABELS)} categories, macro F1 {metrics['macro_f1']:.4f}", highlight=False)


if __name__ == "__main__":
    app()


# ---------------------------------------------------------------------------------------------
# orchestration and the registry


def _deployment_spec(root: Path, name: str) -> dict:
    import yaml

    path = root / "prefect.yaml"
    if not path.exists():
        raise _fail(f"{path} not found: the deployments are defined there")
    specs = {d.get("name"): d for d in (yaml.safe_load(path.read_text()) or {}).get("deployments") or []}
    if name not in specs:
        raise _fail(f"prefect.yaml defines no deployment {name!r}; it defines: {', '.join(map(str, specs)) or 'none'}")
    return specs[name]


def _prefect_api_reachable(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url.rstrip("/") + "/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


@app.command()
def deploy(
    name: Annotated[str, typer.Option("--name", help="The deployment in prefect.yaml.")] = "nightly",
    cron: Annotated[Optional[str], typer.Option("--cron", help="Override the schedule, e.g. '30 2 * * *'.")] = None,
    timezone: Annotated[Optional[str], typer.Option("--timezone", help="IANA timezone of the schedule.")] = None,
) -> None:
    """Serve train-flow/<name> (prefect.yaml) against the Prefect server at PREFECT_API_URL until stopped.

    Runs on the schedule and whenever someone runs `prefect deployment run 'train-flow/nightly'`.
    """
    import os

    root = _setup()  # before Prefect is imported: it reads PREFECT_HOME once
    from prefect.schedules import Cron

    from flows.train_flow import train_flow

    spec = _deployment_spec(root, name)
    api = os.environ.get("PREFECT_API_URL")
    if not api:
        raise _fail("PREFECT_API_URL is not set: start a server (`prefect server start --host 127.0.0.1`) and "
                    "`export PREFECT_API_URL=http://127.0.0.1:4200/api`, then deploy again")
    if not _prefect_api_reachable(api):
        raise _fail(f"no Prefect server answers at {api}: start one with `prefect server start --host 127.0.0.1` "
                    "(or point PREFECT_API_URL at yours)")
    schedule = (spec.get("schedules") or [{}])[0]
    cron = cron or schedule.get("cron") or "0 3 * * *"
    timezone = timezone or schedule.get("timezone") or "UTC"
    console.print(f"serving train-flow/{name} on cron {cron!r} ({timezone}) from {root}; Ctrl-C stops it",
                  highlight=False)
    train_flow.serve(
        name=name,
        schedules=[Cron(cron, timezone=timezone)],
        parameters=spec.get("parameters") or {},
        description=spec.get("description"),
        tags=spec.get("tags") or [],
        global_limit=spec.get("concurrency_limit") or 1,
        pause_on_shutdown=False,
    )


def _registry_call(fn, *args, **kwargs):
    from components.tracking import RegistryError, TrackingError

    try:
        return fn(*args, **kwargs)
    except (RegistryError, TrackingError) as exc:
        raise _fail(str(exc)) from None


def _who(who: Optional[str]) -> str:
    import getpass

    return who or getpass.getuser()


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="The registered model version to make champion.")],
    why: Annotated[str, typer.Option("--why", help="Why (recorded as a tag).")],
    who: Annotated[Optional[str], typer.Option("--who", help="Who (recorded as a tag; default: your user name).")] = None,
) -> None:
    """Make a model version champion by hand (who and why are recorded; a gate override is flagged)."""
    from components import tracking
    from flows.settings import tracking_uri

    root = _setup()
    params = _params(root)
    champ = _registry_call(tracking.promote, tracking_uri(), version, _who(who), why, params.track.model_name)
    console.print(f"{params.track.model_name} champion is now version {champ['version']}", highlight=False)


@app.command()
def rollback(
    why: Annotated[str, typer.Option("--why", help="Why (recorded as a tag).")],
    who: Annotated[Optional[str], typer.Option("--who", help="Who (recorded as a tag; default: your user name).")] = None,
) -> None:
    """Move champion back to the version the current champion replaced."""
    from components import tracking
    from flows.settings import tracking_uri

    root = _setup()
    params = _params(root)
    champ = _registry_call(tracking.rollback, tracking_uri(), _who(who), why, params.track.model_name)
    console.print(f"{params.track.model_name} champion rolled back to version {champ['version']}", highlight=False)


from flows.generate_cli import generate  # noqa: E402  (a command of its own module)

app.command()(generate)

from flows.env_cli import env_app  # noqa: E402

app.add_typer(env_app, name="env")

lineage_app = typer.Typer(help="The experiment lineage (v1 … v16 of the design, and every run since).",
                          no_args_is_help=True)
app.add_typer(lineage_app, name="lineage")


@lineage_app.command("import")
def lineage_import() -> None:
    """Record the sixteen historical experiments in MLflow as runs (idempotent)."""
    from components import tracking
    from flows.settings import artifact_location, tracking_uri

    root = _setup()
    params = _params(root)
    uri = tracking_uri()
    ids = _registry_call(tracking.import_lineage, uri, params.track.experiment,
                         artifact_location=artifact_location(root, uri))
    console.print(f"lineage: {len(ids)} historical runs in experiment {params.track.experiment!r} "
                  f"({tracking.redact_uri(uri)})", highlight=False)


@lineage_app.command("show")
def lineage_show() -> None:
    """The lineage table: version, parent, overrides and the figures reported at the time."""
    from components.lineage import load_lineage

    table = Table(title="experiment lineage", box=box.SIMPLE)
    for col in ("version", "parent", "overrides", "reported", "description"):
        table.add_column(col, overflow="fold")
    for exp in load_lineage():
        table.add_row(exp.version, exp.parent or "", json.dumps(exp.overrides), json.dumps(exp.reported),
                      exp.description)
    console.print(table)
