"""The classifier: a sentence-transformer encoder, mean (or mean and max) pooling, and a multi-label linear head.

One module serves both training modes (``head``: frozen encoder; ``finetune``: everything
trains), the ONNX export, and the PyTorch reference in parity checks, so the pooling that
trains the head is byte-for-byte the pooling that ships.

A checkpoint is a folder: ``encoder/`` (a transformers model and its tokenizer),
``head.pt`` (the linear layer) and ``classifier.json`` (labels, pooling, max length, base model);
the folder format itself lives in :mod:`components.model.folder`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer

from components.core.taxonomy import LABELS
from components.model.folder import CheckpointError, ClassifierConfig
from components.model.scoring import length_sorted_batches, max_over_windows
from components.text.normalize import normalize_text

log = logging.getLogger(__name__)

POOLINGS = ("mean", "mean_max")


def _uses_normalize(encoder_dir: Path) -> bool:
    """sentence-transformers models list their modules; all-MiniLM/mpnet end with Normalize."""
    modules = Path(encoder_dir) / "modules.json"
    if not modules.exists():
        return False
    return any("Normalize" in m.get("type", "") for m in json.loads(modules.read_text()))


def make_head(hidden_size: int, head_hidden: int) -> nn.Module:
    if not head_hidden:
        return nn.Linear(hidden_size, len(LABELS))
    return nn.Sequential(nn.Linear(hidden_size, head_hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(head_hidden, len(LABELS)))


class ModerationClassifier(nn.Module):
    """input_ids, attention_mask -> 18 probabilities (sigmoid of a linear head over the pooled tokens)."""

    def __init__(self, encoder: nn.Module, config: ClassifierConfig):
        super().__init__()
        if config.pooling not in POOLINGS:
            raise CheckpointError(f"pooling {config.pooling!r} is not one of {', '.join(POOLINGS)}")
        self.encoder = encoder
        self.config = config
        self.head = make_head(config.hidden_size * (2 if config.pooling == "mean_max" else 1), config.head_hidden)

    def pool(self, tokens: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Mean over the real tokens ``[batch, tokens, hidden] -> [batch, hidden]`` (``pooling: mean``), or that
        mean and the per-dimension maximum over the real tokens ``-> [batch, 2 * hidden]`` (``mean_max``);
        L2-normalised if configured."""
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.config.pooling == "mean_max":
            # padding can never be the maximum; -1e4 stays finite in the fp16 export
            peak = tokens.masked_fill(mask == 0, -1e4).max(1).values
            pooled = torch.cat([pooled, peak], dim=1)
        if self.config.normalize:
            pooled = nn.functional.normalize(pooled, p=2, dim=1)
        return pooled

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.pool(tokens, attention_mask)

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(input_ids, attention_mask))

    # --- partial fine-tuning: the lower layers run once, the top ones train ------------------------
    # BERT-family encoders only (MiniLM): they expose ``embeddings`` and ``encoder.layer``, and each
    # layer takes the additive attention mask of ``get_extended_attention_mask``.

    def _layers(self) -> nn.ModuleList:
        layers = getattr(getattr(self.encoder, "encoder", None), "layer", None)
        if layers is None or not hasattr(self.encoder, "embeddings"):
            raise CheckpointError(f"{type(self.encoder).__name__}: partial fine-tuning (train_layers) needs a "
                                  "BERT-family encoder (embeddings + encoder.layer); use train_layers: 0")
        return layers

    def lower_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_lower: int) -> torch.Tensor:
        """Token states ``[batch, tokens, hidden]`` after the embeddings and the first ``n_lower`` layers."""
        mask = self.encoder.get_extended_attention_mask(attention_mask, input_ids.shape)
        states = self.encoder.embeddings(input_ids=input_ids)
        for layer in self._layers()[:n_lower]:
            states = layer(states, attention_mask=mask)[0]
        return states

    def logits_from_states(self, states: torch.Tensor, attention_mask: torch.Tensor, n_lower: int) -> torch.Tensor:
        """The rest of the network over :meth:`lower_states`: the top layers, pooling and the head."""
        mask = self.encoder.get_extended_attention_mask(attention_mask, attention_mask.shape)
        for layer in self._layers()[n_lower:]:
            states = layer(states, attention_mask=mask)[0]
        return self.head(self.pool(states, attention_mask))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(input_ids, attention_mask))

    @classmethod
    def from_encoder(cls, encoder_dir: Path, base_model: str, mode: str, max_length: int,
                     head_hidden: int = 0, normalize: bool | None = None,
                     pooling: str = "mean") -> tuple["ModerationClassifier", object]:
        encoder = AutoModel.from_pretrained(str(encoder_dir))
        tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
        cfg = ClassifierConfig(base_model=base_model, mode=mode, max_length=max_length,
                               normalize=_uses_normalize(encoder_dir) if normalize is None else normalize,
                               hidden_size=encoder.config.hidden_size,
                               vocab_size=encoder.config.vocab_size, head_hidden=head_hidden, pooling=pooling)
        return cls(encoder, cfg), tokenizer

    def save(self, folder: Path, tokenizer) -> None:
        """Write the checkpoint folder (encoder + tokenizer, head, config); replaced as a whole."""
        from components.core.contract import atomic_folder

        with atomic_folder(folder) as tmp:
            self.encoder.save_pretrained(tmp / "encoder")
            tokenizer.save_pretrained(tmp / "encoder")
            torch.save(self.head.state_dict(), tmp / "head.pt")
            self.config.save(tmp)

    @classmethod
    def load(cls, folder: Path) -> tuple["ModerationClassifier", object]:
        folder = Path(folder)
        cfg = ClassifierConfig.load(folder)
        for needed in ("encoder/config.json", "head.pt"):
            if not (folder / needed).exists():
                raise CheckpointError(f"{folder}: missing {needed}; the checkpoint is incomplete, re-run the train step")
        model = cls(AutoModel.from_pretrained(str(folder / "encoder")), cfg)
        model.head.load_state_dict(torch.load(folder / "head.pt", map_location="cpu", weights_only=True))
        model.eval()
        return model, AutoTokenizer.from_pretrained(str(folder / "encoder"))


def tokenize(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, torch.Tensor]:
    """Model inputs for texts as training reads them: normalised (components.text.normalize), padded to
    the longest, cut at ``max_length`` tokens (the first window: a label belongs to the whole text)."""
    return tokenizer([normalize_text(t) for t in texts], padding=True, truncation=True, max_length=max_length,
                     return_tensors="pt")


@torch.no_grad()
def run_batched(model: ModerationClassifier, tokenizer, texts: Sequence[str], batch_size: int,
                what: str = "probs", progress: bool = False) -> np.ndarray:
    """Probabilities ``[n, 18]`` (or pooled embeddings ``[n, hidden]``) for texts, in the input order.

    Probabilities are scored as served: each text normalised and cut into the model's windows, a
    category's score the highest over them (:class:`components.model.windows.TextWindows`).
    Embeddings (the frozen-encoder features of head training) are of the first window, as trained.
    """
    from tqdm.auto import tqdm

    from components.model.windows import TextWindows

    model.eval()
    device = next(model.parameters()).device
    n_texts, owners = len(texts), None
    if what != "embeddings":
        cfg = model.config
        texts, owners = TextWindows(tokenizer.backend_tokenizer, cfg.max_length, cfg.window_stride,
                                    cfg.max_windows).expand(texts)
    lengths = [len(t) for t in texts]
    out: np.ndarray | None = None
    batches = list(length_sorted_batches(lengths, batch_size))
    for idx in tqdm(batches, desc=f"encoding ({what})", disable=not progress, unit="batch"):
        enc = tokenize(tokenizer, [texts[i] for i in idx], model.config.max_length)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        result = model.embed(ids, mask) if what == "embeddings" else model(ids, mask)
        result = result.float().cpu().numpy()
        if out is None:
            out = np.zeros((len(texts), result.shape[1]), dtype=np.float32)
        out[idx] = result
    if out is None:
        return np.zeros((n_texts, len(LABELS)), dtype=np.float32)
    return max_over_windows(out, owners, n_texts) if owners is not None else out
