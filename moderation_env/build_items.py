"""Build the environment's item bank (``resources/items.jsonl``) from public text and the
authored items in ``resources/authored.yaml``; deterministic, so the committed file can be
rebuilt byte for byte:

    python -m moderation_env.build_items --datasets ../shared/datasets

Only sets whose licence lets the project commit their text are read here (see
../shared/datasets/README.md): Davidson and HateXplain (MIT) for hate speech and clean posts,
the UCI SMS Spam Collection (CC BY 4.0) for spam and prize scams. The research-only sets (LIAR,
SDCNL, the Kaggle cyberbullying subset) may not be committed: the committed misinformation,
self-harm and harassment items are authored, and ``extended_bank(datasets)`` adds real items from
those sets at run time, read from the configurable datasets folder (``env run --datasets``),
never written into the package. Rows are filtered so that no text touching sexual content and
minors together ever enters either bank.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import re
from importlib import resources
from pathlib import Path

import yaml

from components.text.social import normalize_social_text
from moderation_env.items import ItemBank
from moderation_env.policy import policy_book
from moderation_env.vocab import strongest_action

SEED = 13
MEDIA_HOST = "https://media.example.com/"

# One table: each public set, how many rows of each class, and the gold a class gets.
PUBLIC_SETS = {
    "davidson": {"licence": "MIT", "region": "US", "classes": {
        "hate": {"n": 20, "labels": ["hate_speech"], "rules": ["CS_HATE_001"],
                 "keywords": ["slur", "attack", "protected", "group"]},
        "neither": {"n": 12, "labels": [], "rules": [], "keywords": []}}},
    "hatexplain": {"licence": "MIT", "region": "US", "classes": {
        "hate": {"n": 20, "labels": ["hate_speech"], "rules": ["CS_HATE_001"],
                 "keywords": ["slur", "attack", "protected", "group"]},
        "normal": {"n": 12, "labels": [], "rules": [], "keywords": []}}},
    "sms_spam": {"licence": "CC BY 4.0", "region": "GB", "classes": {
        "prize_scam": {"n": 14, "labels": ["spam", "scam"], "rules": ["CS_SPAM_001", "CS_SCAM_001"],
                       "keywords": ["prize", "claim", "unsolicited", "deception"]},
        "spam": {"n": 14, "labels": ["spam"], "rules": ["CS_SPAM_001"],
                 "keywords": ["unsolicited", "promotion", "bulk"]},
        "ham": {"n": 10, "labels": [], "rules": [], "keywords": []}}},
}
_PRIZE_RE = re.compile(r"\b(won|winner|prize|claim|award(ed)?|selected|guaranteed|cash|£\d+)\b", re.IGNORECASE)
_MINOR_RE = re.compile(r"\b(child(ren)?|kids?|minors?|under\s?age|teens?|teenage\w*|pre-?teens?|loli\w*|"
                       r"school\s?(girl|boy)s?|bab(y|ies)|\d{1,2}\s?(yo|y/o|years?\s?old))\b", re.IGNORECASE)
_SEXUAL_RE = re.compile(r"(sex|nude|naked|porn|rape|molest|pedo|paedo|horny|boob|tits|dick|cock|pussy|suck)",
                        re.IGNORECASE)
_PEDO_RE = re.compile(r"(pedo|paedo|molest|groom)", re.IGNORECASE)


def unsafe(text: str) -> bool:
    """Sexual content and minors together (or any child-abuse term): never in the bank."""
    return bool(_PEDO_RE.search(text) or (_MINOR_RE.search(text) and _SEXUAL_RE.search(text)))


def author_history(item_id: str) -> dict:
    """A plausible author, derived from the id alone (independent of the gold, so no shortcut)."""
    h = int(hashlib.sha256(item_id.encode()).hexdigest(), 16)
    return {"account_age_days": 1 + h % 3650, "prior_violations": (0, 0, 0, 0, 1, 1, 2, 3)[(h >> 16) % 8],
            "followers": int(10 ** (((h >> 24) % 50) / 10)), "verified": (h >> 40) % 25 == 0}


def _gold(labels, rules, keywords, action=None, political=False) -> dict:
    book = policy_book()
    return {"labels": list(labels) or ["clean"],
            "action": action or strongest_action(book[r].action for r in rules),
            "violated_rules": list(rules), "reasoning_keywords": list(keywords),
            "protected_political_speech": bool(political)}


def _row(item_id: str, type_: str, text: str, region: str, language: str, gold: dict, source: str,
         conflict=(), **public) -> dict:
    row = {"id": item_id, "type": type_, "text": text, "author_region": region, "language": language,
           "author_history": author_history(item_id), **public,
           "conflicting_policies": list(conflict), "source": source, "gold": gold}
    return row


# --------------------------------------------------------------------------- public sets


def _davidson(folder: Path) -> dict[str, list[str]]:
    out = {"hate": [], "neither": []}
    with open(folder / "labeled_data.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            count = int(r["count"])
            if int(r["hate_speech"]) == count:      # unanimous annotators only: the set is noisy
                out["hate"].append(r["tweet"])
            elif int(r["neither"]) == count:
                out["neither"].append(r["tweet"])
    return out


def _hatexplain(folder: Path) -> dict[str, list[str]]:
    out = {"hate": [], "normal": []}
    with open(folder / "092-HateXplain.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            cls = {"1": "hate", "0": "normal"}.get(r["category"].strip())
            if cls:
                out[cls].append(r["text"])
    return out


def _sms(folder: Path) -> dict[str, list[str]]:
    out = {"prize_scam": [], "spam": [], "ham": []}
    for line in (folder / "SMSSpamCollection").read_text("utf-8", errors="replace").splitlines():
        tag, _, text = line.partition("\t")
        if tag == "spam":
            out["prize_scam" if _PRIZE_RE.search(text) else "spam"].append(text)
        elif tag == "ham":
            out["ham"].append(text)
    return out


_READERS = {"davidson": (_davidson, "davidson", True), "hatexplain": (_hatexplain, "hatexplain_mbib", True),
            "sms_spam": (_sms, "sms_spam", False)}


def public_items(datasets: Path, seed: int = SEED) -> list[dict]:
    return _sample_sets(datasets, PUBLIC_SETS, _READERS, seed, "tp", 300)


# --------------------------------------------------------------------------- research-only sets

# Read at run time only (their licences allow internal measurement, not redistribution).
RESTRICTED_SETS = {
    "liar": {"licence": "research use only", "region": "US", "classes": {
        "pantsfire": {"n": 14, "labels": ["misinformation"], "rules": ["CS_MISINFO_002"],
                      "keywords": ["false", "claim", "fact", "checked"]},
        "true": {"n": 8, "labels": [], "rules": [], "keywords": []}}},
    "sdcnl": {"licence": "research use", "region": "US", "classes": {
        "suicide": {"n": 12, "labels": ["self_harm"], "rules": ["CS_SELF_002"],
                    "keywords": ["disclosure", "risk", "support", "suicidal"]},
        "depression": {"n": 8, "labels": [], "rules": [], "keywords": []}}},
    "cyberbullying": {"licence": "Kaggle subset, licence unverified", "region": "US", "classes": {
        "personal": {"n": 12, "labels": ["harassment"], "rules": ["CS_HARASS_001"],
                     "keywords": ["targeted", "bullying", "insult"]},
        "identity": {"n": 12, "labels": ["hate_speech", "harassment"], "rules": ["CS_HATE_001", "CS_HARASS_001"],
                     "keywords": ["protected", "attack", "bullying"]},
        "none": {"n": 8, "labels": [], "rules": [], "keywords": []}}},
}


def _liar(folder: Path) -> dict[str, list[str]]:
    out = {"pantsfire": [], "true": []}
    for name in ("train.tsv", "valid.tsv"):
        for line in (folder / name).read_text("utf-8", errors="replace").splitlines():
            cols = line.split("\t")
            cls = {"pants-fire": "pantsfire", "true": "true"}.get(cols[1] if len(cols) > 2 else "")
            if cls:
                out[cls].append(cols[2])
    return out


def _sdcnl(folder: Path) -> dict[str, list[str]]:
    out = {"suicide": [], "depression": []}
    with open(folder / "training-set.noauthor.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            text = f"{r['title'].strip()}. {r['selftext'].strip()}"
            if len(text) > 300:  # a post's opening, cut at a word
                text = text[:300].rsplit(" ", 1)[0] + " …"
            out["suicide" if r["is_suicide"].strip() == "1" else "depression"].append(text)
    return out


def _cyberbullying(folder: Path) -> dict[str, list[str]]:
    kinds = {"age": "personal", "other_cyberbullying": "personal", "ethnicity": "identity", "religion": "identity",
             "gender": "identity", "not_cyberbullying": "none"}
    out = {"personal": [], "identity": [], "none": []}
    with open(folder / "cyberbullying_tweets.csv", newline="", encoding="utf-8", errors="replace") as fh:
        for r in csv.DictReader(fh):
            cls = kinds.get(r["cyberbullying_type"].strip())
            if cls:
                out[cls].append(r["tweet_text"])
    return out


_RESTRICTED_READERS = {"liar": (_liar, "liar", False), "sdcnl": (_sdcnl, "sdcnl_suicide_vs_depression", False),
                       "cyberbullying": (_cyberbullying, "cyberbullying_tweets_subset", True)}


def _sample_sets(datasets: Path, sets: dict, readers: dict, seed: int, prefix: str, max_len: int) -> list[dict]:
    rows = []
    for key, spec in sets.items():
        reader, folder, is_tweet = readers[key]
        if not (datasets / folder).is_dir():
            raise FileNotFoundError(f"{datasets / folder}: public set {key} not found; pass --datasets")
        by_class = reader(datasets / folder)
        for cls, cspec in spec["classes"].items():
            seen, candidates = set(), []
            for raw in by_class[cls]:
                text = normalize_social_text(raw, strip_urls=is_tweet)
                if not 25 <= len(text) <= max_len or unsafe(text) or text.lower() in seen:
                    continue
                seen.add(text.lower())
                candidates.append(text)
            chosen = random.Random(f"{seed}:{key}:{cls}").sample(sorted(candidates), cspec["n"])
            for n, text in enumerate(chosen, start=1):
                rows.append(_row(f"{prefix}-{key.replace('_', '')}-{cls.replace('_', '')}-{n:02d}", "text_post", text,
                                 spec["region"], "en", _gold(cspec["labels"], cspec["rules"], cspec["keywords"]),
                                 f"{key} ({spec['licence']}) class {cls}"))
    return rows


def restricted_items(datasets: Path, seed: int = SEED) -> list[dict]:
    """Items from the research-only sets, for an extended bank built in memory (never committed)."""
    return _sample_sets(datasets, RESTRICTED_SETS, _RESTRICTED_READERS, seed, "tp-r", 320)


def extended_bank(datasets: Path, seed: int = SEED):
    """The committed bank plus the research-only sets' items, read from ``datasets`` now."""
    base = resources.files("moderation_env").joinpath("resources/items.jsonl").read_text("utf-8")
    extra = [json.dumps(r, ensure_ascii=False) for r in restricted_items(datasets, seed)]
    lines = base.splitlines() + extra
    digest = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]
    return ItemBank.from_lines(lines, f"{digest}+research-sets")


# --------------------------------------------------------------------------- authored


def authored_items(authored: dict) -> list[dict]:
    book = policy_book()
    rows = []
    for n, it in enumerate(authored["text_posts"], start=1):
        rows.append(_row(f"tp-authored-{n:02d}", "text_post", it["text"], it.get("region", "US"),
                         it.get("language", "en"),
                         _gold(it["labels"], it["rules"], it.get("keywords", []), it.get("action"), it.get("political")),
                         "authored", it.get("conflict", ())))
    for n, it in enumerate(authored["image_descriptions"], start=1):
        rows.append(_row(f"img-authored-{n:02d}", "image_description", f"[image] {it['text']}",
                         it.get("region", "US"), it.get("language", "en"),
                         _gold(it["labels"], it["rules"], it.get("keywords", []), it.get("action"), it.get("political")),
                         "authored", it.get("conflict", ()), alt_text=it["text"],
                         media_urls=[MEDIA_HOST + u for u in it["urls"]]))
    for n, ad in enumerate(authored["ads"], start=1):
        for v, var in enumerate(ad["variants"], start=1):
            rules = list(dict.fromkeys([*ad["rules"], *var["rules"]]))
            rows.append(_row(f"ad-{n:02d}-{v}", "ad_copy", ad["text"], var["regions"][0], ad.get("language", "en"),
                             _gold(ad["labels"], rules, ad.get("keywords", []), var.get("action")), "authored",
                             ad.get("conflict", ()), advertiser=ad["advertiser"],
                             targeting={"age_min": var["age"][0], "age_max": var["age"][1], "regions": var["regions"]}))
    for th in authored["threads"]:
        so_far: list[str] = []
        msgs = th["messages"]
        for i, m in enumerate(msgs):
            so_far += [book[r].action for r in m.get("rules", [])]
            action = m.get("action") or strongest_action(so_far)
            rows.append(_row(f"wa-{th['id']}-{i}", "whatsapp_message", m["text"], th.get("region", "US"),
                             th.get("language", "en"),
                             _gold(m["labels"], m.get("rules", []), m.get("keywords", []), action, m.get("political")),
                             "authored", m.get("conflict", ()), thread_id=th["id"], message_index=i,
                             thread_length=len(msgs), sender=m["sender"]))
    return rows


def build(datasets: Path, out: Path, seed: int = SEED) -> dict:
    authored = yaml.safe_load(resources.files("moderation_env").joinpath("resources/authored.yaml")
                              .read_text("utf-8"))
    rows = public_items(datasets, seed) + authored_items(authored)
    lines = [json.dumps(r, ensure_ascii=False, sort_keys=False) for r in rows]
    bank = ItemBank.from_lines(lines, "check")          # validate before writing anything
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts: dict[str, int] = {}
    for item in bank.items.values():
        counts[item.public.type] = counts.get(item.public.type, 0) + 1
    return {"items": len(rows), "by_type": counts, "threads": len(bank.threads), "path": str(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--out", type=Path,
                        default=Path(str(resources.files("moderation_env").joinpath("resources/items.jsonl"))))
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    print(json.dumps(build(args.datasets, args.out, args.seed), indent=2))


if __name__ == "__main__":
    main()
