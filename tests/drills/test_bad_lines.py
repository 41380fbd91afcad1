"""The bad-lines drill, light form: 120 bad lines of 20 kinds in 3 reviewed files, through the real merge."""

import json
from collections import Counter
from pathlib import Path

from components.core.contract import read_records
from tests.drills import bad_lines


def test_every_bad_line_is_a_reject_with_its_reason_and_every_good_line_is_merged(tmp_path):
    result = bad_lines.run(tmp_path, light=True)
    assert result["lost"] == "nothing"
    assert result["bad_lines"] == 120 and result["good_lines"] == 150
    for kind, figures in result["per_kind"].items():  # exact, per kind
        assert figures == {"injected": 6, "rejected": 6, "reason_named": 6, "raw_kept": 6}, kind
    assert len(result["per_kind"]) == 20
    assert result["rejects_written"] == 120 and result["rejects_not_injected"] == 0
    assert not result["good_lines_missing"] and not result["good_lines_altered"] and not result["bad_ids_in_splits"]
    assert result["ids_more_than_once"] == 0 and result["inputs_untouched"]
    assert {f: v["records"] for f, v in result["per_file"].items()} == {f"reviewed-0{i}.jsonl": 50 for i in (1, 2, 3)}
    assert sum(v["rejects"] for v in result["per_file"].values()) == 120
    # the project's allowance refuses the step, yet every bad line is listed
    assert "120 of 730 input lines break the data contract" in result["refused_at_project_fraction"]
    assert result["rejects_listed_when_refused"] == 120
    assert result["passed"] is True

    # read the outputs again here, not through the drill's own figures
    project = tmp_path / "project"
    rejects = [json.loads(line) for line in (project / "data/splits/rejects.jsonl").read_text("utf-8").splitlines()]
    assert Counter(Path(r["file"]).name for r in rejects) == {f: v["rejects"] for f, v in result["per_file"].items()}
    reasons = " | ".join(r["reason"] for r in rejects)
    for named in ("malformed JSON: NUL byte", "Unexpected UTF-8 BOM", "line is not UTF-8", "lone surrogate",
                  "duplicate key", "nested too deeply", "unknown label(s) ['violence']", "must be 0 or 1",
                  "metadata.audience", "bad context prefix", "text is empty", "reviewed-01.jsonl line"):
        assert named in reasons, named
    merged = Counter(r.id for s in ("train", "val", "test", "real_test")
                     for r in read_records(project / f"data/splits/{s}.jsonl").records)
    reviewed = {i for i in merged if i.startswith("review-")}
    assert len(reviewed) == 150 and max(merged.values()) == 1 and not any(i.startswith("bad-") for i in merged)
