"""The train step: two modes behind one interface, both ending in the same checkpoint folder.

``head``: the encoder stays frozen; its pooled embeddings (cached on disk by text hash, so a
rerun or a head-only change costs seconds) train a multi-label linear head.
``finetune``: the network trains with BCE (per-category positive weights), a linear
warm-up schedule, bucketed dynamic padding and early stopping on validation macro F1; every
layer (``train_layers: 0``), or only the top ``train_layers`` over lower layers whose token
states are computed once (the CPU's way to fine-tune in minutes).

A fine-tuned model reads a text in training as it is scored everywhere else: cut into the
windows of :class:`components.model.windows.TextWindows`, the text's logit per category the
highest over its windows (multiple-instance learning: the label belongs to the text, at least
one window carries it). Before, training read only the first window, so a violation at the end
of a long text was never seen in training, and a long text labelled for one was taught as if its
harmless opening were the violation. ``train_max_windows`` (2 on the CPU: the first and the last
window) bounds what one long text costs in training; evaluation and serving read up to
``max_windows`` (8).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn

from components.core.contract import ContractError, atomic_write, read_records, write_json
from components.core.params import ProfileParams, TrainParams
from components.model.classifier import ModerationClassifier, run_batched, tokenize
from components.model.folder import ClassifierConfig
from components.model.scoring import flags, label_matrix, length_sorted_batches
from components.model.sources import resolve_model
from components.model.windows import TextWindows

log = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def pos_weights(y: np.ndarray, cap: float) -> torch.Tensor:
    """negatives/positives per category, capped: rare categories count more, never absurdly more."""
    pos = y.sum(0)
    neg = len(y) - pos
    return torch.tensor(np.clip(neg / np.maximum(pos, 1), 1.0, cap), dtype=torch.float32)


def macro_f1(y: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> float:
    """Macro F1 over the 18 categories, flagging at one ``threshold`` (0.5 before any tuning).

    ``y``: 0/1 ``[n, 18]``; ``probs``: scores ``[n, 18]``, both in ``LABELS`` order.
    """
    return float(f1_score(y, flags(probs, threshold), average="macro", zero_division=0))


class EmbeddingCache:
    """Pooled embeddings on disk, keyed by a hash of (encoder, max length, text)."""

    def __init__(self, folder: Path, model_key: str):
        self.folder = Path(folder) / hashlib.sha256(model_key.encode()).hexdigest()[:16]
        self.folder.mkdir(parents=True, exist_ok=True)
        self._index_path, self._vectors_path = self.folder / "index.json", self.folder / "vectors.npy"
        self.index: dict[str, int] = json.loads(self._index_path.read_text()) if self._index_path.exists() else {}
        self.vectors = np.load(self._vectors_path) if self._vectors_path.exists() else None
        if self.vectors is not None and len(self.vectors) != len(self.index):
            log.warning("embedding cache %s is inconsistent; starting it again", self.folder)
            self.index, self.vectors = {}, None

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get(self, texts: list[str], compute) -> np.ndarray:
        keys = [self.key(t) for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self.index}.items())
        if missing:
            log.info("embedding %d new texts (%d cached)", len(missing), len(texts) - len(missing))
            new = compute([t for _, t in missing])
            start = len(self.index)
            self.vectors = new if self.vectors is None else np.concatenate([self.vectors, new])
            for i, (k, _) in enumerate(missing):
                self.index[k] = start + i
            # vectors first, then the index that points into them: a crash between leaves extra rows only.
            with atomic_write(self._vectors_path, "wb") as fh:
                np.save(fh, self.vectors)
            write_json(self._index_path, self.index)
        return self.vectors[[self.index[k] for k in keys]]


def window_batches(tokenizer, cfg: ClassifierConfig, texts: list[str], batch_size: int, max_windows: int | None = None
                   ) -> list[tuple[np.ndarray, list[str], torch.Tensor]]:
    """Texts in batches of ``batch_size`` of similar length, each with the windows the model reads of them.

    Returns one ``(text indices [b], window texts [w], owner [w])`` per batch, ``owner`` (int64) the
    row in the batch of each window's text; windows are cut as scoring cuts them (``cfg.max_length``,
    ``cfg.window_stride``), so a text of one window is its normalised self. ``max_windows`` (default
    ``cfg.max_windows``, as scored) bounds the windows of one text: the first ones and the last.
    """
    windows, owners = TextWindows(tokenizer.backend_tokenizer, cfg.max_length, cfg.window_stride,
                                  max_windows or cfg.max_windows).expand(texts)
    bounds = np.searchsorted(owners, np.arange(len(texts) + 1))  # owners ascend: text i is bounds[i]:bounds[i+1]
    size = [sum(len(w) for w in windows[bounds[i]:bounds[i + 1]]) for i in range(len(texts))]
    out = []
    for idx in length_sorted_batches(size, batch_size):
        spans = [range(bounds[i], bounds[i + 1]) for i in idx]
        owner = torch.tensor([row for row, span in enumerate(spans) for _ in span], dtype=torch.int64)
        out.append((idx, [windows[j] for span in spans for j in span], owner))
    return out


def text_logits(window_logits: torch.Tensor, owner: torch.Tensor, n_texts: int) -> torch.Tensor:
    """Each text's logits ``[n_texts, 18]``: per category the highest over its windows' logits ``[w, 18]``
    (the training twin of ``scoring.max_over_windows``; sigmoid is monotone, so the max commutes with it)."""
    index = owner.to(window_logits.device).unsqueeze(1).expand_as(window_logits)
    return window_logits.new_full((n_texts, window_logits.shape[1]), float("-inf")).scatter_reduce(
        0, index, window_logits, "amax", include_self=False)


def _train_head(model: ModerationClassifier, xtr, ytr, xva, yva, p: ProfileParams, history: list) -> None:
    head = model.head
    head.train()
    opt = torch.optim.AdamW(head.parameters(), lr=p.head_learning_rate, weight_decay=p.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weights(ytr, p.pos_weight_cap))
    xtr_t, ytr_t, xva_t = torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xva)
    best, best_state, stale = -1.0, None, 0
    batch = 512
    for epoch in range(1, p.head_epochs + 1):
        perm = torch.randperm(len(xtr_t))
        total = 0.0
        for start in range(0, len(perm), batch):
            idx = perm[start : start + batch]
            opt.zero_grad()
            loss = loss_fn(head(xtr_t[idx]), ytr_t[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if epoch % 5 == 0 or epoch == p.head_epochs:
            head.eval()
            with torch.no_grad():
                f1 = macro_f1(yva, torch.sigmoid(head(xva_t)).numpy())
            head.train()
            history.append({"epoch": epoch, "loss": round(total / len(perm), 5), "val_macro_f1": round(f1, 5)})
            if f1 > best + 1e-4:
                best, best_state, stale = f1, {k: v.clone() for k, v in head.state_dict().items()}, 0
            else:
                stale += 1
                if stale >= p.patience * 4:  # checked every 5 epochs: patience counts in 20-epoch windows
                    break
    head.load_state_dict(best_state)
    head.eval()


def _fit(model: ModerationClassifier, groups: list[dict], batches: list[np.ndarray], logits_of, val_probs, ytr, yva,
         p: ProfileParams, history: list, device: torch.device) -> None:
    """The fine-tuning loop both fine-tune modes share: AdamW over ``groups``, linear warm-up and decay,
    BCE with capped positive weights, gradient clipping, batches in a new random order each epoch,
    early stopping on validation macro F1 (at 0.5) with the best weights restored.

    ``logits_of(idx)``: logits ``[len(idx), 18]`` of the training examples ``idx``; ``val_probs()``:
    validation probabilities ``[n_val, 18]``.
    """
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    opt = torch.optim.AdamW(groups, weight_decay=p.weight_decay)
    steps = len(batches) * p.epochs
    sched = get_linear_schedule_with_warmup(opt, int(steps * p.warmup_ratio), steps)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=pos_weights(ytr, p.pos_weight_cap).to(device))
    trainable = [q for g in groups for q in g["params"]]
    # Mixed precision where a GPU exists (bf16 autocast: no loss scaling needed); fp32 on the CPU.
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device.type == "cuda" else contextlib.nullcontext
    best, best_state, stale = -1.0, None, 0
    for epoch in range(1, p.epochs + 1):
        model.train()
        order = list(range(len(batches)))
        random.shuffle(order)
        total, seen = 0.0, 0
        for b in tqdm(order, desc=f"epoch {epoch}/{p.epochs}", unit="batch"):
            idx = batches[b]
            with autocast():
                logits = logits_of(b)
            loss = loss_fn(logits.float(), torch.from_numpy(ytr[idx]).to(device))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        model.eval()
        f1 = macro_f1(yva, val_probs())
        history.append({"epoch": epoch, "loss": round(total / seen, 5), "val_macro_f1": round(f1, 5)})
        log.info("epoch %d loss %.4f val macro F1 %.4f", epoch, total / seen, f1)
        if f1 > best + 1e-4:
            best, stale = f1, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= p.patience:
                break
    model.load_state_dict(best_state)
    model.to("cpu")


def _train_finetune(model: ModerationClassifier, tokenizer, train_texts, ytr, val_texts, yva, p: ProfileParams,
                    history: list, device: torch.device) -> None:
    """Every layer trains (``train_layers: 0``), each batch tokenised as it comes."""
    model.to(device)
    groups = [{"params": list(model.encoder.parameters()), "lr": p.learning_rate},
              {"params": list(model.head.parameters()), "lr": p.head_learning_rate}]
    # Buckets of similar length, shuffled as batches: dynamic padding without a length-ordered curriculum.
    train_batches = window_batches(tokenizer, model.config, train_texts, p.batch_size, p.train_max_windows)
    batches = [idx for idx, _, _ in train_batches]

    def logits_of(b: int) -> torch.Tensor:
        idx, windows, owner = train_batches[b]
        enc = tokenize(tokenizer, windows, p.max_length)
        return text_logits(model.logits(enc["input_ids"].to(device), enc["attention_mask"].to(device)), owner, len(idx))

    _fit(model, groups, batches, logits_of, lambda: run_batched(model, tokenizer, val_texts, p.batch_size * 2),
         ytr, yva, p, history, device)


@torch.no_grad()
def _lower_states(model: ModerationClassifier, tokenizer, batches: list[list[str]], max_length: int, n_lower: int,
                  device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(fp16 token states after the frozen layers, attention mask) per batch of window texts: computed once,
    on ``device``."""
    from tqdm.auto import tqdm

    model.eval()
    out = []
    for windows in tqdm(batches, desc=f"frozen layers 1-{n_lower}", unit="batch"):
        enc = tokenize(tokenizer, windows, max_length)
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        out.append((model.lower_states(ids, mask, n_lower).half(), mask))
    return out


def _train_top_layers(model: ModerationClassifier, tokenizer, train_texts, ytr, val_texts, yva, p: ProfileParams,
                      history: list, device: torch.device) -> None:
    """Only the top ``p.train_layers`` layers and the head train. The frozen lower layers' token states
    of every training and validation batch are computed once (kept as fp16), so an epoch runs
    ``train_layers`` of the encoder's layers instead of all of them (MiniLM, 2 of 6 layers on 2 CPU cores:
    95 examples/s, against 22 for a full fine-tune; README "Choosing the CPU training recipe")."""
    layers = model._layers()
    if not 0 < p.train_layers < len(layers):
        raise ContractError(f"train_layers {p.train_layers}: the encoder has {len(layers)} layers; use 1..{len(layers) - 1}, "
                            "or 0 to train them all")
    n_lower = len(layers) - p.train_layers
    model.to(device)
    model.encoder.requires_grad_(False)
    top = [q for layer in layers[n_lower:] for q in layer.parameters()]
    for q in top:
        q.requires_grad_(True)
    groups = [{"params": top, "lr": p.learning_rate}, {"params": list(model.head.parameters()), "lr": p.head_learning_rate}]
    train_batches = window_batches(tokenizer, model.config, train_texts, p.batch_size, p.train_max_windows)
    batches = [idx for idx, _, _ in train_batches]
    cached = _lower_states(model, tokenizer, [w for _, w, _ in train_batches], p.max_length, n_lower, device)
    val_batches = window_batches(tokenizer, model.config, val_texts, p.batch_size * 2)
    val_cached = _lower_states(model, tokenizer, [w for _, w, _ in val_batches], p.max_length, n_lower, device)

    def logits_of(b: int) -> torch.Tensor:
        states, mask = cached[b]
        idx, _, owner = train_batches[b]
        return text_logits(model.logits_from_states(states.float(), mask, n_lower), owner, len(idx))

    @torch.no_grad()
    def val_probs() -> np.ndarray:
        out = np.zeros((len(val_texts), yva.shape[1]), dtype=np.float32)
        for (idx, _, owner), (states, mask) in zip(val_batches, val_cached):
            logits = text_logits(model.logits_from_states(states.float(), mask, n_lower), owner, len(idx))
            out[idx] = torch.sigmoid(logits).cpu().numpy()
        return out

    _fit(model, groups, batches, logits_of, val_probs, ytr, yva, p, history, device)
    model.encoder.requires_grad_(True)


def train(params: TrainParams, train_path: Path, val_path: Path, out_dir: Path, cache_dir: Path) -> dict:
    """Train the active profile on the train split; write the checkpoint folder; return statistics."""
    p = params.active
    if params.threads:
        torch.set_num_threads(params.threads)
    set_seed(params.seed)
    train_records = read_records(train_path).records
    val_records = read_records(val_path).records
    if not train_records or not val_records:
        raise ContractError(f"empty split ({train_path}: {len(train_records)}, {val_path}: {len(val_records)}); run merge first")
    ytr, yva = label_matrix(train_records), label_matrix(val_records)
    train_texts, val_texts = [r.text for r in train_records], [r.text for r in val_records]
    source = resolve_model(p.model)
    normalize = p.normalize if p.normalize is not None else (None if p.mode == "head" else False)
    if p.mode == "head" and p.pooling != "mean":
        raise ContractError(f"pooling {p.pooling!r} needs mode finetune: head mode trains on the encoder's cached mean "
                            "embeddings; set pooling: mean, or mode: finetune")
    model, tokenizer = ModerationClassifier.from_encoder(source, p.model, p.mode, p.max_length, p.head_hidden, normalize,
                                                         p.pooling)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    history: list[dict] = []
    started = time.perf_counter()
    if p.mode == "head":
        model.encoder.requires_grad_(False)
        cfg = model.config
        cache = EmbeddingCache(cache_dir, f"{p.model}|{p.max_length}|{cfg.normalize}|{cfg.text_normalization}")
        embed = lambda texts: run_batched(model, tokenizer, texts, 64, what="embeddings", progress=True)  # noqa: E731
        t0 = time.perf_counter()
        xtr, xva = cache.get(train_texts, embed), cache.get(val_texts, embed)
        encode_seconds = time.perf_counter() - t0
        _train_head(model, xtr, ytr, xva, yva, p, history)
        examples = len(train_texts)
    else:
        encode_seconds = 0.0
        fit = _train_top_layers if p.train_layers else _train_finetune
        fit(model, tokenizer, train_texts, ytr, val_texts, yva, p, history, device)
        examples = len(train_texts) * len(history)
    seconds = time.perf_counter() - started
    model.save(out_dir, tokenizer)
    best = max(history, key=lambda h: h["val_macro_f1"])
    return {
        "profile": params.profile, "model": p.model, "mode": p.mode, "train_layers": p.train_layers, "pooling": p.pooling,
        "device": str(device), "mixed_precision": "bf16" if device.type == "cuda" and p.mode == "finetune" else None,
        "train_examples": len(train_texts), "val_examples": len(val_texts),
        "seconds": round(seconds, 1), "encode_seconds": round(encode_seconds, 1),
        "examples_per_second": round(examples / max(seconds, 1e-9), 1),
        "best_epoch": best["epoch"], "best_val_macro_f1_at_0.5": best["val_macro_f1"], "epochs_run": history[-1]["epoch"],
        "history": history,
    }
