"""Inference on an exported model folder with onnxruntime: what evaluation and serving both call.

A model folder is self-contained (Hugging Face ``from_pretrained`` style): ONNX file(s),
``tokenizer.json``, ``classifier.json`` (labels, max length, prefix scheme) and, once
evaluated, ``thresholds.json`` and ``manifest.json`` (served variant, checksums). Nothing else
is needed to load it: no PyTorch, no training code, no params file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from components.core.taxonomy import LABELS, ContextPrefix, category, place
from components.model.folder import (
    MANIFEST_NAME,
    THRESHOLDS_NAME,
    VARIANT_FILES,
    ClassifierConfig,
    ModelFolderError,
    sha256_file,
)
from components.model.scoring import flags as flag_matrix, length_sorted_batches, max_over_windows
from components.model.windows import TextWindows
from components.text.language import LanguageVerdict, identify



@dataclass
class Flag:
    category: str
    score: float
    threshold: float
    severity: str


class OnnxClassifier:
    """Load a model folder and score texts: ``predict_proba`` (batched, length-sorted) and ``flags``."""

    def __init__(self, folder: str | os.PathLike, variant: str | None = None, threads: int | None = None,
                 verify: bool = False):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ModelFolderError(f"{self.folder}: no such model folder; run the pipeline (content-moderation run) "
                                   "or pass --model pointing at an exported folder")
        self.config = ClassifierConfig.load(self.folder)
        self.manifest = self._read_json(MANIFEST_NAME) if (self.folder / MANIFEST_NAME).exists() else None
        if verify and self.manifest:
            self.verify()
        self.variant = variant or (self.manifest or {}).get("served_variant") or self._first_variant()
        if self.variant not in VARIANT_FILES:
            raise ModelFolderError(f"unknown variant {self.variant!r}; variants: {', '.join(VARIANT_FILES)}")
        model_path = self.folder / VARIANT_FILES[self.variant]
        if not model_path.exists():
            present = [v for v, f in VARIANT_FILES.items() if (self.folder / f).exists()]
            raise ModelFolderError(f"{self.folder}: no {VARIANT_FILES[self.variant]} (variant {self.variant}); "
                                   f"variants present: {', '.join(present) or 'none'}")
        self.tokenizer = self._load_tokenizer()
        self.windows = TextWindows(self.tokenizer, self.config.max_length, self.config.window_stride,
                                   self.config.max_windows)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelFolderError(f"{model_path}: not a loadable ONNX model ({exc}); re-run the export step") from None
        thresholds = self._read_json(THRESHOLDS_NAME) if (self.folder / THRESHOLDS_NAME).exists() else None
        self.thresholds = np.array([(thresholds or {}).get(name, 0.5) for name in LABELS], dtype=np.float32)
        self.tuned = thresholds is not None

    def _read_json(self, name: str) -> dict:
        try:
            return json.loads((self.folder / name).read_text("utf-8"))
        except json.JSONDecodeError as exc:
            raise ModelFolderError(f"{self.folder / name}: corrupt JSON ({exc}); re-run the step that wrote it") from None

    def _first_variant(self) -> str:
        for v, f in VARIANT_FILES.items():
            if (self.folder / f).exists():
                return v
        raise ModelFolderError(f"{self.folder}: no ONNX model file (model.onnx, model.fp16.onnx or model.int8.onnx)")

    def _load_tokenizer(self) -> Tokenizer:
        path = self.folder / "tokenizer.json"
        if not path.exists():
            raise ModelFolderError(f"{self.folder}: no tokenizer.json; re-run the export step")
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise ModelFolderError(f"{path}: unreadable tokenizer ({exc})") from None
        if self.config.vocab_size and tok.get_vocab_size() != self.config.vocab_size:
            raise ModelFolderError(
                f"{path}: tokenizer vocabulary ({tok.get_vocab_size()}) does not match the model's "
                f"({self.config.vocab_size}); copy the tokenizer that was exported with this model"
            )
        tok.enable_truncation(self.config.max_length)
        pad_id = tok.token_to_id("[PAD]") if tok.token_to_id("[PAD]") is not None else tok.token_to_id("<pad>") or 0
        tok.enable_padding(pad_id=pad_id, pad_token=tok.id_to_token(pad_id))
        return tok

    def verify(self) -> None:
        """Check every file the manifest lists against its SHA-256."""
        for name, expected in (self.manifest or {}).get("files", {}).items():
            path = self.folder / name
            if not path.exists():
                raise ModelFolderError(f"{self.folder}: {name} is listed in the manifest but missing")
            if sha256_file(path) != expected:
                raise ModelFolderError(f"{path}: checksum differs from the manifest; the folder is corrupt or was edited")

    def predict_proba(self, texts: Sequence[str], batch_size: int = 32, normalize: bool = True) -> np.ndarray:
        """Scores ``[len(texts), 18]`` (float32, ``LABELS`` order): each text normalised, cut into the
        model's windows (:class:`components.model.windows.TextWindows`), a category's score the
        highest over its windows. ``normalize=False``: the texts are normalised already
        (``components.text.normalize.normalize_text``, idempotent), or the normalisation is being measured."""
        windows, owners = self.windows.expand(texts, normalize)
        out = np.zeros((len(windows), len(LABELS)), dtype=np.float32)
        for idx in length_sorted_batches([len(t) for t in windows], batch_size):
            enc = self.tokenizer.encode_batch([windows[i] for i in idx])
            feeds = {
                "input_ids": np.array([e.ids for e in enc], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in enc], dtype=np.int64),
            }
            out[idx] = self.session.run(["probabilities"], feeds)[0]
        return max_over_windows(out, owners, len(texts))

    @staticmethod
    def with_context(text: str, context: ContextPrefix | None = None) -> str:
        """A text as the model saw it in training: with a context prefix (:func:`components.core.taxonomy.place`)."""
        return place(text, context)[0]

    def languages(self, texts: Sequence[str], normalized: bool = False) -> list[LanguageVerdict]:
        """Each text's language verdict (:func:`components.text.language.identify`) against the
        languages this model was trained on (``classifier.json`` ``languages``); ``normalized``: the
        texts are normalised already."""
        return identify(texts, supported=self.config.languages, normalized=normalized)

    def flags(self, probs: np.ndarray, verdicts: Sequence[LanguageVerdict] | None = None) -> list[list[Flag]]:
        """The categories over their tuned threshold, most severe first, for each row of probabilities.

        With ``verdicts`` (:meth:`languages`, one per row), a text the model does not judge (another
        language, or no linguistic content) gets no flags: its scores say nothing about what it says."""
        result = []
        for r, (row, flagged) in enumerate(zip(probs, flag_matrix(probs, self.thresholds))):
            if verdicts is not None and not verdicts[r].judged:
                result.append([])
                continue
            hits = [Flag(name, float(row[i]), float(self.thresholds[i]), category(name).severity)
                    for i, name in enumerate(LABELS) if flagged[i]]
            result.append(sorted(hits, key=lambda f: (_SEVERITY_RANK[f.severity], -f.score)))
        return result


_SEVERITY_RANK = {"critical": 0, "high": 1, "medium": 2, "low": 3}
