"""The disk-full drill, light form: a tmpfs that fills during the export's fp32 graph, then during the copy
of it the INT8 quantizer writes first; then the same export with room (root only: it mounts a tmpfs)."""

import pytest

from tests.drills import disk_full


def test_a_disk_that_fills_during_export_keeps_the_previous_model(tmp_path):
    try:
        result = disk_full.run(tmp_path, light=True)
    except disk_full.CannotMount as exc:
        pytest.skip(f"the drill needs a tmpfs: {exc}")
    points = result["points"]
    assert set(points) == {"fp32 graph", "int8 quantizer's copy of the fp32 graph"}
    for name, p in points.items():
        assert p["error"] == "DiskFullError" and p["errno_enospc"], (name, p["message"])
        assert p["says_disk_full"] and p["names_the_disk_and_folder"], (name, p["message"])
        assert p["previous_identical"], name           # every file of the previous export, byte for byte
        assert p["left_on_disk"] == [] and p["space_used_back"], name
    assert points["fp32 graph"]["failed_in"].startswith("export_fp32")
    assert "quantize_dynamic" in points["int8 quantizer's copy of the fp32 graph"]["failed_in"]
    # the control: with room the same export succeeds, replacing the folder whole
    assert result["control"] == {**result["control"], "replaced": True, "same_files": True, "left_on_disk": []}
    assert result["lost"] == "nothing" and result["passed"] is True
