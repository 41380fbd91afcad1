"""The train step on tiny data with the real MiniLM: both modes end in the same checkpoint folder."""

import pytest

from components.core.contract import ContractError, write_records
from components.core.taxonomy import LABELS
from components.model.classifier import ModerationClassifier, run_batched
from components.model.scoring import label_matrix
from components.train import EmbeddingCache, macro_f1, train
from tests.components.conftest import tiny_train_params

pytestmark = pytest.mark.slow


def test_head_training_writes_a_checkpoint_and_history(tiny_trained):
    out, stats = tiny_trained
    assert stats["mode"] == "head" and stats["train_examples"] > 100
    assert stats["history"] and all({"epoch", "loss", "val_macro_f1"} <= set(h) for h in stats["history"])
    assert stats["best_val_macro_f1_at_0.5"] == max(h["val_macro_f1"] for h in stats["history"])
    model, _ = ModerationClassifier.load(out / "checkpoint")
    assert model.config.labels == list(LABELS) and model.config.normalize
    assert any(out.joinpath("cache").rglob("vectors.npy"))  # embeddings are cached for the next run


def test_embedding_cache_computes_each_text_once(tmp_path):
    import numpy as np

    calls = []

    def compute(texts):
        calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)

    cache = EmbeddingCache(tmp_path, "model|64|True")
    first = cache.get(["a", "bb", "a"], compute)
    assert calls == [["a", "bb"]] or calls == [["bb", "a"]]
    again = EmbeddingCache(tmp_path, "model|64|True").get(["bb", "ccc"], compute)  # reloaded from disk
    assert len(calls) == 2 and calls[1] == ["ccc"]
    assert first[:, 0].tolist() == [1, 2, 1] and again[:, 0].tolist() == [2, 3]


def test_macro_f1_flags_at_the_threshold():
    import numpy as np

    y = np.eye(len(LABELS), dtype=np.float32)
    assert macro_f1(y, y * 0.5) == 1.0  # 0.5 is flagged: score >= threshold
    assert macro_f1(y, y * 0.49) == 0.0


def test_label_matrix_follows_the_taxonomy_order(record_factory):
    rows = label_matrix([record_factory("a", labels=[LABELS[2]]), record_factory("b")])
    assert rows.shape == (2, len(LABELS)) and rows[0, 2] == 1 and rows.sum() == 1
    assert label_matrix([]).shape == (0, len(LABELS))


def test_finetune_mode_runs_and_ends_in_the_same_checkpoint_format(tiny_splits, tmp_path):
    stats = train(tiny_train_params("finetune"), tiny_splits / "train.jsonl", tiny_splits / "val.jsonl",
                  tmp_path / "ck", tmp_path / "c")
    assert stats["mode"] == "finetune" and stats["epochs_run"] == 1
    model, tokenizer = ModerationClassifier.load(tmp_path / "ck")
    probs = run_batched(model, tokenizer, ["hello there"], 8)
    assert probs.shape == (1, len(LABELS))


def test_empty_split_is_refused(tiny_splits, tmp_path):
    empty = tmp_path / "empty.jsonl"
    write_records(empty, [])
    with pytest.raises(ContractError, match="empty split"):
        train(tiny_train_params(), empty, tiny_splits / "val.jsonl", tmp_path / "ck", tmp_path / "c")
    assert not (tmp_path / "ck").exists()
