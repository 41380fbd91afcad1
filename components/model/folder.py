"""The model folder format, in one place: file names, ``classifier.json``, checksums, the release folder.

A checkpoint folder (the train step) holds ``encoder/``, ``head.pt`` and :data:`CONFIG_NAME`; an
exported folder (the export step) holds the ONNX variants (:data:`VARIANT_FILES`), the tokenizer
(:data:`TOKENIZER_FILES`), :data:`CONFIG_NAME` and the PyTorch reference probabilities
(:data:`TORCH_VAL_PROBS`); a release folder (the evaluate step, :func:`write_release`) holds one
ONNX file, the tokenizer, :data:`CONFIG_NAME`, :data:`THRESHOLDS_NAME` and :data:`MANIFEST_NAME`.
This module imports no torch and no onnxruntime, so anything that only reads or writes a folder
(serving, the CLI) stays light.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from components.core.contract import atomic_folder, write_json
from components.core.taxonomy import AUDIENCES, LABELS, SURFACES
from components.text.normalize import NORMALIZATION

CONFIG_NAME = "classifier.json"
VARIANT_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
THRESHOLDS_NAME = "thresholds.json"
MANIFEST_NAME = "manifest.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
TORCH_VAL_PROBS = "torch_val_probs.npy"  # float32 [n_val, 18]: the PyTorch model on the validation split


class CheckpointError(RuntimeError):
    """A checkpoint or model folder that cannot be used; the message says which step to re-run."""


class ModelFolderError(CheckpointError):
    """An exported or release folder that cannot be served (missing or corrupt file, wrong variant)."""


@dataclass
class ClassifierConfig:
    """Everything needed to rebuild the classifier's input and output: labels, pooling, lengths, prefixes."""

    labels: list[str] = field(default_factory=lambda: list(LABELS))
    base_model: str = ""
    mode: str = "head"
    max_length: int = 128
    normalize: bool = True  # L2-normalise the pooled embedding (sentence-transformers' Normalize module)
    # "mean": the mean of the real tokens' states ([hidden]); "mean_max": that mean and the per-dimension
    # maximum over the real tokens, side by side ([2 * hidden]): a few tokens that matter (a threat after a
    # long harmless text) still reach the head when the mean is dominated by everything else.
    pooling: str = "mean"
    hidden_size: int = 384
    head_hidden: int = 0  # 0: a linear head; N: one hidden layer of N units (GELU, dropout)
    vocab_size: int = 0
    text_normalization: str = NORMALIZATION  # the rule every text goes through first (components.text.normalize)
    window_stride: int = 32  # tokens shared by consecutive windows of a long text (components.model.windows)
    max_windows: int = 8     # most windows scored per text: the first 7 and the last one past that
    languages: list[str] = field(default_factory=lambda: ["en"])  # ISO 639-1 codes it was trained on (components.text.language)
    prefix_scheme: str = "[AUDIENCE][SURFACE] text"
    audiences: list[str] = field(default_factory=lambda: list(AUDIENCES))
    surfaces: list[str] = field(default_factory=lambda: list(SURFACES))

    def save(self, folder: Path) -> None:
        """Write ``<folder>/classifier.json`` (atomically)."""
        write_json(Path(folder) / CONFIG_NAME, asdict(self))

    @classmethod
    def load(cls, folder: Path) -> "ClassifierConfig":
        """Read ``<folder>/classifier.json``.

        Raises CheckpointError when it is missing, unreadable, has unknown fields, or names
        labels other than this project's taxonomy (in its order).
        """
        path = Path(folder) / CONFIG_NAME
        if not path.exists():
            raise CheckpointError(f"{folder}: no {CONFIG_NAME}; this is not a classifier folder (run the train step)")
        try:
            cfg = cls(**json.loads(path.read_text("utf-8")))
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path}: unreadable ({exc}); re-run the step that wrote it") from None
        if cfg.text_normalization != NORMALIZATION:
            raise CheckpointError(
                f"{path}: the model was trained on text normalised by {cfg.text_normalization!r}, this version "
                f"normalises by {NORMALIZATION!r}; retrain it with this version"
            )
        if cfg.labels != list(LABELS):
            raise CheckpointError(
                f"{path}: the model's labels differ from this project's taxonomy "
                f"({len(cfg.labels)} vs {len(LABELS)} categories); retrain it with this version"
            )
        return cfg


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, hex; read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_release(onnx_dir: Path, release_dir: Path, variant: str, thresholds: Mapping[str, float],
                  report: Mapping[str, Any]) -> None:
    """The self-contained serving folder: one ONNX file, tokenizer, config, thresholds, manifest.

    ``onnx_dir`` is an exported folder; ``variant`` one of :data:`VARIANT_FILES`; ``thresholds``
    one per category (``LABELS``); ``report`` the evaluate report (its ``gate`` and ``test``
    macro/micro F1 go into the manifest, with the SHA-256 of every file). ``release_dir`` is
    replaced as a whole. Raises KeyError for an unknown variant.
    """
    onnx_dir = Path(onnx_dir)
    with atomic_folder(release_dir) as tmp:
        for name in (VARIANT_FILES[variant], CONFIG_NAME, *TOKENIZER_FILES):
            if (onnx_dir / name).exists():
                shutil.copy2(onnx_dir / name, tmp / name)
        write_json(tmp / THRESHOLDS_NAME, dict(thresholds))
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir())}
        write_json(tmp / MANIFEST_NAME, {
            "served_variant": variant,
            "labels": list(LABELS),
            "files": files,
            "gate": report["gate"],
            "test_macro_f1": report["test"]["macro_f1"],
            "test_micro_f1": report["test"]["micro_f1"],
        })
