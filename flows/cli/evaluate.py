"""`evaluate`: judge any exported model folder outside the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

from rich import box
from rich.table import Table
import typer

from flows.cli.app import app, console, fail, project_params, setup
from flows.cli.scoring import quiet_components

EVALUATE_VARIANTS = ("fp32", "fp16", "int8", "all")

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
    from components.model.folder import CONFIG_NAME, TOKENIZER_FILES, TORCH_VAL_PROBS, VARIANT_FILES

    by_name = {f: v for v, f in VARIANT_FILES.items()}
    if not model.exists():
        raise fail(f"{model}: no such model folder or file; run the pipeline (content-moderation run) "
                    "or pass --model pointing at an exported folder")
    if model.is_file():
        if model.suffix != ".onnx":
            raise fail(f"{model}: not an .onnx file; pass a model folder or an .onnx file inside one")
        folder = model.parent
        named = by_name.get(model.name)
        if named and variant not in ("all", named):
            raise fail(f"{model.name} is the {named} variant but --variant {variant} was asked for")
        files = {named or (variant if variant != "all" else "fp32"): model}
    else:
        folder = model
        present = {v: folder / f for v, f in VARIANT_FILES.items() if (folder / f).exists()}
        if not present:
            raise fail(f"{folder}: no ONNX model file ({', '.join(VARIANT_FILES.values())}); re-run the export step")
        if variant == "all":
            files = present
        elif variant in present:
            files = {variant: present[variant]}
        else:
            raise fail(f"{folder}: no {VARIANT_FILES[variant]} (variant {variant}); "
                        f"variants present: {', '.join(present)}")
    if not (folder / CONFIG_NAME).exists():
        raise fail(f"{folder}: no {CONFIG_NAME}; this is not an exported model folder (run the export step)")
    tok_dir = tokenizer if tokenizer is not None else folder
    if tok_dir.is_file():
        tok_dir = tok_dir.parent
    if not (tok_dir / "tokenizer.json").exists():
        raise fail(f"{tok_dir}: no tokenizer.json; pass --tokenizer pointing at the folder exported with the model")
    relabel = None
    if "fp32" not in files:
        if len(files) > 1:
            raise fail(f"{folder}: scoring several variants needs model.onnx (fp32) as the reference; "
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
    real_test: Annotated[Optional[Path], typer.Option(
        "--real-test", help="Held-out real text (JSONL) for the gate's real-text tier (default: "
        "real_test.jsonl beside --test, when there is one).")] = None,
    tokenizer: Annotated[Optional[Path], typer.Option(
        "--tokenizer", help="A folder with tokenizer.json (default: the model's folder); its vocabulary must match the model's.")] = None,
    variant: Annotated[str, typer.Option("--variant", help="fp32, fp16, int8, or all variants present in the folder.")] = "all",
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Where to write the report JSON (default: reports/evaluate.json); plots go beside it.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Evaluate any exported model folder outside the pipeline: per-category metrics, thresholds, gate."""
    import tempfile

    from components.model.folder import CheckpointError
    from components.core.contract import ContractError, write_json
    from components.evaluate import evaluate as run_evaluate

    root = setup(verbose)
    if variant not in EVALUATE_VARIANTS:
        raise fail(f"unknown variant {variant!r}; valid: {', '.join(EVALUATE_VARIANTS)}")
    if real_test is None and (test.parent / "real_test.jsonl").is_file():
        real_test = test.parent / "real_test.jsonl"
    for name, path in (("--test", test), ("--val", val), ("--real-test", real_test or test)):
        if not path.is_file():
            raise fail(f"{path}: no such file ({name}); the pipeline writes the splits to data/splits/")
    output = output if output is not None else root / project_params(root).paths.reports / "evaluate.json"
    params = project_params(root).evaluate
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
            with quiet_components(verbose):
                report = run_evaluate(staging, val, test, params, Path(tmp) / "release",
                                      output.parent / f"{output.stem}_plots", real_test_path=real_test)
        except (ContractError, CheckpointError, ValueError) as exc:
            raise fail(unstage(str(exc))) from None
    if relabel:
        report["served_variant"] = relabel
        report["variants"] = {relabel: {**report["variants"]["fp32"], "file": files[relabel].name}}
    report = {"model": str(model), "tokenizer": str(tok_dir), "val": str(val), "test": str(test),
              "variants_evaluated": list(files), **report}
    write_json(output, report)
    _print_evaluation(report, params.f1_floor)
    console.print(f"wrote {output}", highlight=False)


def _print_evaluation(report: dict, floor: float) -> None:
    from components.core.taxonomy import LABELS, category

    m = report["test"]
    gate = report["gate"]
    role = "served" if gate["passed"] else "candidate: the gate failed"
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
    tiers = gate.get("tiers") or {}
    if tiers:
        console.print("tiers: " + " · ".join(
            f"{name} {'[green]pass[/]' if t['passed'] else '[red]fail[/]'} ({t['checks'] - t['failing']}/{t['checks']})"
            for name, t in tiers.items()), highlight=False)
    if gate["passed"]:
        console.print(f"gate: [green]PASSED[/] ({len(gate['checks'])} checks)", highlight=False)
    else:
        console.print(f"gate: [red]FAILED[/] ({len(failing)} of {len(gate['checks'])} checks)", highlight=False)
        for c in failing:
            console.print(f"  ✗ {c['name']}: {c['detail']}", highlight=False)
