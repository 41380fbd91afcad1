import pytest

from components.core.contract import read_records
from components.generate_negatives import generate_negatives
from components.generate_positives import generate_positives
from components.generation import overlap_plan
from components.generation.offline import Renderer, common_slots, load_lexicon
from components.generation.specs import load_spec
from components.core.params import GenerateParams
from components.core.taxonomy import AUDIENCES, LABELS, SURFACES

import random


def small(**over) -> GenerateParams:
    base = dict(positives_per_category=40, hard_negatives_default=12, hard_negatives={"adult_content": 20},
                innocuous=60, overlap={"sextortion": {"threats": 0.25, "ncii": 0.25}, "harassment": {"profanity": 0.3}})
    base.update(over)
    return GenerateParams(**base)


@pytest.mark.parametrize("name", LABELS)
def test_every_category_has_a_spec_and_every_template_renders(name):
    spec = load_spec(name)
    assert spec.definition and spec.subtypes and spec.hard_negative_guidance and spec.contexts
    lex = load_lexicon(name)
    rng = random.Random(0)
    for bank in (lex.positives, lex.negatives):
        assert len(bank.templates) >= 30, f"{name}: too few templates for a varied corpus"
        r = Renderer(rng, bank.slots, where=name)
        for t in bank.templates:
            text = r.expand(t.text)
            assert text.strip() and "{" not in text and "}" not in text


def test_innocuous_templates_render():
    lex = load_lexicon("_innocuous")
    r = Renderer(random.Random(0), lex.positives.slots)
    assert len(lex.positives.templates) >= 100
    assert all("{" not in r.expand(t.text) for t in lex.positives.templates)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    generate_positives(small(), tmp_path / "a", categories=["threats", "sextortion"])
    generate_positives(small(), tmp_path / "b", categories=["threats", "sextortion"])
    generate_positives(small(seed=99), tmp_path / "c", categories=["threats", "sextortion"])
    for name in ("threats.jsonl", "sextortion.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes()


def test_volumes_and_multi_label_overlap_by_construction(tmp_path):
    params = small()
    assert overlap_plan("sextortion", params) == [((), 20), (("ncii",), 10), (("threats",), 10)]
    stats = generate_positives(params, tmp_path, categories=["sextortion", "harassment", "csam"])
    records = {c: read_records(tmp_path / f"{c}.jsonl").records for c in ("sextortion", "harassment", "csam")}
    assert all(len(rs) == 40 for rs in records.values())
    sx = records["sextortion"]
    assert all(r.labels["sextortion"] == 1 for r in sx)
    assert sum(r.labels["threats"] for r in sx) == 10 and sum(r.labels["ncii"] for r in sx) == 10
    assert sum(r.labels["profanity"] for r in records["harassment"]) == 12
    assert all(sum(r.label_vector()) == 1 for r in records["csam"])
    for rs in records.values():
        for r in rs:
            assert r.metadata["audience"] in AUDIENCES and r.metadata["surface"] in SURFACES
            assert not r.text.startswith("[")  # the merge step applies the prefix
    assert stats["diversity"]["count"] == 120
    assert set(stats["diversity"]) >= {"distinct_1", "distinct_2", "distinct_3", "exact_duplicate_rate", "near_duplicate_rate"}


def test_negatives_are_label_free_and_adult_context_flip(tmp_path):
    stats = generate_negatives(small(), tmp_path / "neg", tmp_path / "innocuous.jsonl", categories=["adult_content", "threats"])
    adult = read_records(tmp_path / "neg/adult_content.jsonl").records
    threats = read_records(tmp_path / "neg/threats.jsonl").records
    innocuous = read_records(tmp_path / "innocuous.jsonl").records
    assert (len(adult), len(threats), len(innocuous)) == (20, 12, 60)
    assert all(sum(r.label_vector()) == 0 for r in adult + threats + innocuous)
    flipped = [r for r in adult if r.metadata["kind"] == "context_flip"]
    assert len(flipped) == 6 and all(r.metadata["audience"] == "ADULT" for r in flipped)
    assert stats["innocuous"]["count"] == 60


def test_default_volume_corpus_is_diverse(tmp_path):
    """The default recipe (500 positives a category) must not collapse into repeats."""
    stats = generate_positives(GenerateParams(), tmp_path)
    assert stats["records"] == 500 * len(LABELS)
    for name, d in stats["diversity_per_category"].items():
        assert d["exact_duplicate_rate"] <= 0.02, (name, d)
        assert d["near_duplicate_rate"] <= 0.10, (name, d)
        assert d["distinct_2"] >= 0.20, (name, d)  # bigrams repeat < 5x on average


def test_long_lead_in_puts_the_violation_after_a_long_harmless_passage(tmp_path):
    from components.core.params import StyleParams
    from components.core.taxonomy import split_prefix

    plain = StyleParams(lead_in=0, long_lead_in=0, tail=0, textspeak=0, lowercase=0, drop_final_punct=0, emoji=0, shout=0)
    generate_positives(small(style=plain), tmp_path / "short", categories=["threats"])
    generate_positives(small(style=plain.model_copy(update={"long_lead_in": 1.0})), tmp_path / "long", categories=["threats"])
    short = read_records(tmp_path / "short" / "threats.jsonl").records
    long = read_records(tmp_path / "long" / "threats.jsonl").records
    neutral = common_slots()["neutral_sentence"]
    assert [r.labels for r in long] == [r.labels for r in short]
    assert not any(n in r.text for r in short for n in neutral)
    for r in long:
        text = split_prefix(r.text)[1]
        lead = [n for n in neutral if text.startswith(n)]
        assert lead, f"no harmless passage first: {text[:80]}"
        assert not any(text.endswith(n) for n in neutral)  # the violation closes the text
    # 8 or more harmless sentences: most such texts run past one 128-token window (LONG_LEAD_IN_SENTENCES)
    assert all(sum(r.text.count(n) for n in neutral) >= 8 for r in long)
