"""The model commands (evaluate, predict, showcase) on a tiny model trained and exported with the real MiniLM."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from components.core.contract import read_records
from components.evaluate import evaluate
from components.export import export
from components.generate_negatives import generate_negatives
from components.generate_positives import generate_positives
from components.merge import Source, jsonl_files, merge
from components.model.onnx_runtime import OnnxClassifier
from components.serving.moderate import moderate
from components.core.params import EvaluateParams, ExportParams, GenerateParams, MergeParams, ProfileParams, TrainParams
from components.core.taxonomy import AUDIENCES, LABELS, SURFACES, category, split_prefix
from components.train import train
from flows.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


def build_tiny_model(root: Path) -> dict[str, Path]:
    """Splits, a head-trained checkpoint, its ONNX folder and an evaluated release folder under ``root``."""
    g = GenerateParams(positives_per_category=14, hard_negatives_default=4, hard_negatives={}, innocuous=40)
    generate_positives(g, root / "pos")
    generate_negatives(g, root / "neg", root / "inn.jsonl")
    sources = [Source("p", jsonl_files(root / "pos"), 2), Source("n", jsonl_files(root / "neg"), 2),
               Source("i", jsonl_files(root / "inn.jsonl"), 2)]
    splits = root / "splits"
    merge(sources, MergeParams(val_fraction=0.2, test_fraction=0.2), splits, splits / "rejects.jsonl")
    profile = ProfileParams(mode="head", head_epochs=60, epochs=1, batch_size=16, max_length=64)
    train(TrainParams(profile="tiny", profiles={"tiny": profile}), splits / "train.jsonl", splits / "val.jsonl",
          root / "checkpoint", root / "cache")
    export(root / "checkpoint", root / "onnx", splits / "val.jsonl", ExportParams())
    evaluate(root / "onnx", splits / "val.jsonl", splits / "test.jsonl",
             EvaluateParams(f1_floor=0.0, variant_tolerance=1.0, parity_tolerance=1.0), root / "release", root / "plots")
    return {"splits": splits, "onnx": root / "onnx", "release": root / "release"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def _flagged_and_clean(release: Path, splits: Path):
    """A (raw text, context) the model flags, with its flags, and one it flags nothing on (or None).

    Each candidate is scored alone through ``moderate`` as ``predict`` scores it: an INT8 model's
    scores move with the batch a text is scored in (activations are quantized per batch)."""
    model = OnnxClassifier(release)
    records = read_records(splits / "train.jsonl").records + read_records(splits / "test.jsonl").records
    batch_flags = model.flags(model.predict_proba([r.text for r in records]))
    flagged = clean = None
    for r, f in zip(records, batch_flags):
        prefix, raw = split_prefix(r.text)
        if raw.strip() != raw or "\n" in raw or (flagged is not None and clean is not None):
            continue
        if (flagged is None and f) or (clean is None and not f):
            alone = moderate(model, [raw], prefix)[0].flags
            item = (raw, f"{prefix.audience}/{prefix.surface}", alone)
            if alone and flagged is None:
                flagged = item
            if not alone and clean is None:
                clean = item
    return flagged, clean


def test_predict_prints_flags_with_severity_most_severe_first(tiny):
    flagged, clean = _flagged_and_clean(tiny["release"], tiny["splits"])
    assert flagged is not None, "the tiny model flags nothing at all"
    text, context, flags = flagged
    result = runner.invoke(app, ["predict", text, "--context", context, "--model", str(tiny["release"])])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if "≥ threshold" in line]
    assert [line.split()[0] for line in lines] == [f.category for f in flags]
    assert all(f"severity {category(f.category).severity}" in line for f, line in zip(flags, lines))
    ranks = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    assert [ranks[f.severity] for f in flags] == sorted(ranks[f.severity] for f in flags)
    if clean is not None:
        result = runner.invoke(app, ["predict", clean[0], "--context", clean[1], "--model", str(tiny["release"])])
        assert result.exit_code == 0 and "no flags" in result.stdout and "top scores:" in result.stdout


def test_predict_json_has_all_scores(tiny):
    result = runner.invoke(app, ["predict", "i will find you", "see you at the park", "--json",
                                 "--context", "ADULT/MESSAGE", "--model", str(tiny["release"])])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tuned_thresholds"] is True and len(data["results"]) == 2
    for r in data["results"]:
        assert list(r["scores"]) == list(LABELS) and len(r["scores"]) == 18
        assert r["input"].startswith("[ADULT][MESSAGE] ")
        assert all(0 <= s <= 1 for s in r["scores"].values())
        assert all(f["score"] >= f["threshold"] for f in r["flags"])


def test_predict_marks_a_text_in_another_language_and_does_not_judge_it(tiny):
    texts = ["今天天气很好，我们去公园散步吧。", "Ich weiß, wo du wohnst, und morgen komme ich vorbei.",
             "I know where you live and I am coming for you tomorrow."]
    result = runner.invoke(app, ["predict", *texts, "--json", "--model", str(tiny["release"])])
    assert result.exit_code == 0, result.output
    langs = [(r["language"]["code"], r["language"]["judged"]) for r in json.loads(result.stdout)["results"]]
    assert langs[:2] == [("zh", False), ("de", False)] and langs[2][1] is True
    assert all(r["flags"] == [] for r in json.loads(result.stdout)["results"][:2])
    shown = runner.invoke(app, ["predict", texts[0], "--model", str(tiny["release"])])
    assert shown.exit_code == 0 and "not judged" in shown.stdout and "'zh'" in shown.stdout


def test_predict_bad_context_names_the_valid_values(tiny):
    result = runner.invoke(app, ["predict", "hello", "--context", "CHILD/MESSAGE", "--model", str(tiny["release"])])
    assert result.exit_code == 1
    assert all(v in result.output for v in (*AUDIENCES, *SURFACES)) and "CHILD" in result.output
    result = runner.invoke(app, ["predict", "hello", "--context", "message", "--model", str(tiny["release"])])
    assert result.exit_code == 1 and "AUDIENCE/SURFACE" in result.output


def test_predict_missing_model_folder_says_to_run_the_pipeline(tmp_path):
    result = runner.invoke(app, ["predict", "hello", "--model", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "no such model folder" in result.output and "content-moderation run" in result.output


def test_evaluate_writes_the_report_and_prints_macro_f1(tiny, tmp_path):
    out = tmp_path / "eval" / "evaluate.json"
    result = runner.invoke(app, ["evaluate", "--model", str(tiny["onnx"]), "--test", str(tiny["splits"] / "test.jsonl"),
                                 "--val", str(tiny["splits"] / "val.jsonl"), "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["variants"]) == {"fp32", "fp16", "int8"} and set(report["thresholds"]) == set(LABELS)
    assert f"macro F1 {report['test']['macro_f1']:.4f}" in result.stdout
    assert "gate:" in result.stdout and (tmp_path / "eval" / "evaluate_plots" / "per_category_f1.json").exists()
    # one variant alone, given as a file: scored under its own name, the same numbers as within the folder
    out1 = tmp_path / "int8.json"
    result = runner.invoke(app, ["evaluate", "--model", str(tiny["onnx"] / "model.int8.onnx"), "--output", str(out1),
                                 "--test", str(tiny["splits"] / "test.jsonl"), "--val", str(tiny["splits"] / "val.jsonl")])
    assert result.exit_code == 0, result.output
    alone = json.loads(out1.read_text())
    assert alone["served_variant"] == "int8" and list(alone["variants"]) == ["int8"]
    assert alone["variants"]["int8"]["macro_f1"] == pytest.approx(report["variants"]["int8"]["macro_f1"])


def test_evaluate_mismatched_tokenizer_fails_clearly(tiny, tmp_path):
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    tok = json.loads((tiny["onnx"] / "tokenizer.json").read_text())
    tok["model"]["vocab"] = dict(list(tok["model"]["vocab"].items())[:1000])
    (tok_dir / "tokenizer.json").write_text(json.dumps(tok))
    result = runner.invoke(app, ["evaluate", "--model", str(tiny["onnx"]), "--tokenizer", str(tok_dir),
                                 "--test", str(tiny["splits"] / "test.jsonl"), "--val", str(tiny["splits"] / "val.jsonl"),
                                 "--output", str(tmp_path / "e.json")])
    assert result.exit_code == 1
    assert "does not match the model" in result.output and str(tok_dir / "tokenizer.json") in result.output
    assert not (tmp_path / "e.json").exists()


def test_evaluate_errors_are_one_clear_line(tiny, tmp_path):
    splits = tiny["splits"]
    test, val = str(splits / "test.jsonl"), str(splits / "val.jsonl")
    bad = tmp_path / "test.jsonl"
    rows = [json.loads(line) for line in (splits / "test.jsonl").read_text().splitlines()]
    rows[0]["labels"]["violence"] = 1
    bad.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cases = [
        (["--model", str(tiny["onnx"]), "--test", str(tmp_path / "missing.jsonl"), "--val", val], "missing.jsonl: no such file"),
        (["--model", str(tiny["onnx"]), "--test", str(bad), "--val", val], "unknown label(s) ['violence']"),
        (["--model", str(tiny["onnx"]), "--test", test, "--val", str(empty)], "validation split is empty"),
        (["--model", str(tmp_path / "nowhere"), "--test", test, "--val", val], "no such model folder"),
        (["--model", str(tiny["onnx"]), "--variant", "int4", "--test", test, "--val", val], "valid: fp32, fp16, int8, all"),
        (["--model", str(tiny["release"]), "--variant", "fp16", "--test", test, "--val", val], "variants present: int8"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["evaluate", *args, "--output", str(tmp_path / "e.json")])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "e.json").exists()


def test_showcase_writes_a_section_for_every_category(tiny, tmp_path):
    out = tmp_path / "showcase.md"
    result = runner.invoke(app, ["showcase", "--model", str(tiny["release"]), "--test",
                                 str(tiny["splits"] / "test.jsonl"), "--output", str(out), "--per-category", "2"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    headings = [line[3:] for line in page.splitlines() if line.startswith("## ")]
    assert headings == list(LABELS)
    assert page.count("### True positives") == len(LABELS) and page.count("### False negatives") == len(LABELS)
    assert "| score | threshold | context | text |" in page
    assert not list(tmp_path.glob(".showcase.md.*"))  # atomic: no temp file left behind


def test_showcase_missing_model_says_to_run_the_pipeline(tmp_path):
    result = runner.invoke(app, ["showcase", "--model", str(tmp_path / "nowhere"), "--output", str(tmp_path / "s.md")])
    assert result.exit_code == 1 and "content-moderation run" in result.output
    assert not (tmp_path / "s.md").exists()


def test_showcase_selection_is_most_confident_first(record_factory):
    import numpy as np

    from components.quality.showcase import md_cell, render_markdown, select_examples

    records = [record_factory(f"r{i}", f"[ADULT][BIO] text {i}", ["threats"] if i < 4 else []) for i in range(8)]
    probs = np.zeros((8, len(LABELS)))
    probs[:, 0] = [0.9, 0.6, 0.3, 0.1, 0.95, 0.7, 0.2, 0.55]  # threats: r0-r3 positive, threshold 0.5
    thresholds = {name: 0.5 for name in LABELS}
    sel = select_examples(records, probs, thresholds, per_category=2)["threats"]
    assert [e.id for e in sel["true_positives"]] == ["r0", "r1"]
    assert [e.id for e in sel["false_positives"]] == ["r4", "r5"]  # highest-scoring clean texts
    assert [e.id for e in sel["false_negatives"]] == ["r3", "r2"]  # the surest misses first
    e = sel["true_positives"][0]
    assert (e.context, e.text, e.score, e.threshold, e.labels) == ("ADULT/BIO", "text 0", 0.9, 0.5, ("threats",))
    assert md_cell("a|b\nc") == "a\\|b<br>c"
    page = render_markdown(select_examples(records, probs, thresholds, 1), {"per_category": {}})
    assert [line[3:] for line in page.splitlines() if line.startswith("## ")] == list(LABELS)
    with pytest.raises(ValueError, match="shape"):
        select_examples(records, probs[:3], thresholds)


@pytest.mark.parametrize("command, options", [("evaluate", ["--model", "--tokenizer", "--variant", "--output"]),
                                              ("predict", ["--context", "--model", "--json"]),
                                              ("showcase", ["--output", "--model", "--test", "--per-category"])])
def test_help_lists_the_options(command, options):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output
    assert all(o in result.output for o in options)


def test_commands_leave_the_model_folders_as_built(tiny):
    # run last in this module: the commands only read model folders, nothing was written into them
    manifest = json.loads((tiny["release"] / "manifest.json").read_text())
    assert sorted(p.name for p in tiny["release"].iterdir()) == sorted([*manifest["files"], "manifest.json"])
    assert OnnxClassifier(tiny["release"], verify=True).tuned


def test_verdict_shows_the_no_regression_check_against_the_champion(tmp_path, capsys):
    import shutil

    from components.core.contract import write_json
    from components.core.params import load_params
    from flows.cli.pipeline import _print_verdict
    from tests.components.tracking.support import make_report
    from tests.conftest import ROOT

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    params = load_params(tmp_path / "params.yaml")
    write_json(tmp_path / "reports/metrics.json", make_report(macro_f1=0.93, champion={"version": "3", "macro_f1": 0.91}))
    _print_verdict(tmp_path, params)
    out = capsys.readouterr().out
    assert "quality gate PASSED" in out
    assert "no_regression: macro f1 0.9300 >= champion version 3 0.9100 - 0.0100" in out
    write_json(tmp_path / "reports/metrics.json", make_report(macro_f1=0.80, champion={"version": "3", "macro_f1": 0.91}))
    _print_verdict(tmp_path, params)
    out = capsys.readouterr().out
    assert "quality gate FAILED" in out and "failing no_regression: macro f1 0.8000 < champion version 3" in out
    assert "stays a candidate" in out
