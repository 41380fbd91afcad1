"""The export step: the checkpoint as ONNX (fp32, fp16 with fp32 I/O, dynamic INT8 per channel).

The graph is the whole classifier (encoder, mean pooling, head, sigmoid), so serving runs one
session and needs no PyTorch. It is exported with ``torch.onnx.export`` rather than optimum:
optimum exports the stock transformers architectures, and this model's pooling and head are
our own module. fp16 goes through onnxruntime's converter (I/O kept fp32), INT8 through
``quantize_dynamic``. Each variant's parity with PyTorch is measured on the validation split.
The output folder holds everything serving needs: ONNX files, tokenizer, classifier.json.
It is built beside the previous one and replaces it only when complete; a disk that fills up on the
way is a ``DiskFullError`` saying where, and the previous folder stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import torch

from components.core.contract import atomic_folder, read_records, write_json
from components.core.params import ExportParams
from components.model.classifier import ModerationClassifier, run_batched
from components.model.folder import CONFIG_NAME, TOKENIZER_FILES, TORCH_VAL_PROBS, VARIANT_FILES
from components.model.onnx_runtime import OnnxClassifier
from components.quality.parity import parity

log = logging.getLogger(__name__)

_FULL = {errno.ENOSPC, errno.EDQUOT}
_NO_ROOM = 1 << 20  # bytes: a write that failed with less than this left on its disk ran out of room


class DiskFullError(OSError):
    """The disk filled up while the ONNX folder was written (errno ENOSPC); the previous folder is untouched."""


def _mount_point(path: Path) -> Path:
    path = Path(path).resolve()
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


@contextlib.contextmanager
def _full_disk_as_enospc(folder: Path) -> Iterator[None]:
    """Raise OSError(ENOSPC) for a failure on a full disk, whatever the writer raised.

    Not every writer says so: onnx's C++ writer (the shape-inferred copy quantize_dynamic writes first)
    cuts its file short without a word and the read after it fails ("Wire format was corrupt"),
    tokenizers raises a bare Exception, numpy a short write with no errno. What they share is no room
    left on the disk when they fail; judged here, before the partial folder is removed.
    """
    try:
        yield
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise
        if shutil.disk_usage(folder).free < _NO_ROOM:
            raise OSError(errno.ENOSPC, f"No space left on device ({type(exc).__name__}: {str(exc)[:200]})") from exc
        raise


def _disk_full(out_dir: Path, exc: OSError) -> DiskFullError:
    """The error to raise once the partial folder is gone: the disk is full, which one, and what is kept."""
    out_dir = Path(out_dir)
    mount = _mount_point(out_dir)
    usage = shutil.disk_usage(mount)
    previous = sum(p.stat().st_size for p in out_dir.iterdir() if p.is_file()) if out_dir.is_dir() else 0
    kept = (f"the previous export there ({previous / 1e6:.1f} MB) is untouched" if previous
            else "nothing was left there")
    return DiskFullError(exc.errno, (
        f"export: the disk is full: no space left on the file system at {mount} while writing {out_dir} "
        f"({usage.free / 1e6:.1f} MB free of {usage.total / 1e6:.1f} MB once the partial export was removed); {kept}. "
        "The new folder is built beside the previous one, so the disk needs room for both: free space there "
        f"or point paths.model at a larger disk. The write that failed: {exc.strerror or exc}"))


def export_fp32(model: ModerationClassifier, tokenizer, path: Path, opset: int) -> None:
    sample = tokenizer(["[GENERAL][MESSAGE] a sample text to trace"], return_tensors="pt")
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (sample["input_ids"], sample["attention_mask"]), str(path),
            input_names=["input_ids", "attention_mask"], output_names=["probabilities"],
            dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                          "probabilities": {0: "batch"}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    onnx.checker.check_model(str(path))


def export_fp16(src: Path, dst: Path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))


def export_int8(src: Path, dst: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)


def export(checkpoint: Path, out_dir: Path, val_path: Path, params: ExportParams) -> dict:
    """Write the ONNX folder (all variants, tokenizer, config, parity report); return the report."""
    model, tokenizer = ModerationClassifier.load(checkpoint)
    try:
        return _export(model, tokenizer, out_dir, val_path, params, Path(checkpoint))
    except OSError as exc:
        if exc.errno in _FULL:
            raise _disk_full(out_dir, exc) from exc
        raise


def _export(model: ModerationClassifier, tokenizer, out_dir: Path, val_path: Path, params: ExportParams,
            checkpoint: Path) -> dict:
    with atomic_folder(out_dir) as tmp, _full_disk_as_enospc(tmp):
        export_fp32(model, tokenizer, tmp / VARIANT_FILES["fp32"], params.opset)
        if "fp16" in params.variants:
            export_fp16(tmp / VARIANT_FILES["fp32"], tmp / VARIANT_FILES["fp16"])
        if "int8" in params.variants:
            export_int8(tmp / VARIANT_FILES["fp32"], tmp / VARIANT_FILES["int8"])
        tokenizer.save_pretrained(tmp / "tokenizer")
        for name in TOKENIZER_FILES:
            if (tmp / "tokenizer" / name).exists():
                shutil.move(str(tmp / "tokenizer" / name), tmp / name)
        shutil.rmtree(tmp / "tokenizer")
        shutil.copy2(Path(checkpoint) / CONFIG_NAME, tmp / CONFIG_NAME)

        texts = [r.text for r in read_records(val_path).records]
        reference = run_batched(model, tokenizer, texts, params.parity_batch_size, progress=True)
        np.save(tmp / TORCH_VAL_PROBS, reference)
        report = {"variants": {}}
        for variant in params.variants:
            onnx_model = OnnxClassifier(tmp, variant)
            probs = onnx_model.predict_proba(texts, batch_size=params.parity_batch_size)
            report["variants"][variant] = {
                "file": VARIANT_FILES[variant],
                "size_bytes": (tmp / VARIANT_FILES[variant]).stat().st_size,
                **parity(reference, probs),
            }
            log.info("%s: %.1f MB, max |diff| %.2e, decisions differing %.4f", variant,
                     report["variants"][variant]["size_bytes"] / 1e6, report["variants"][variant]["max_abs_diff"],
                     report["variants"][variant]["decision_diff_rate"])
        write_json(tmp / "parity.json", report)
    return report
