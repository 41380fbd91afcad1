"""The offline generator: compositional templates over slot lexicons, deterministic for a seed.

No network, no model: the embedded default backend and what tests and CI use. Templates and
slots live in ``resources/offline/*.yaml`` (format in that folder's README). Variety comes
from three layers: nested slots, inline alternatives, and a register/length layer (casing,
text-speak, punctuation, a neutral lead-in or tail sentence, emoji) applied afterwards.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import cache

import yaml

from components.text.dedup import normalize
from components.generation.base import Draft
from components.generation.specs import load_spec, resource_text
from components.core.params import StyleParams
from components.core.taxonomy import AUDIENCES, SURFACES

_SLOT_RE = re.compile(r"\{([^{}]*)\}")
_MAX_DEPTH = 6
_ATTEMPTS = 25


class LexiconError(ValueError):
    pass


@dataclass(frozen=True)
class Template:
    text: str
    audience: str | None = None
    surface: str | None = None


@dataclass(frozen=True)
class Bank:
    templates: tuple[Template, ...]
    slots: dict


@dataclass(frozen=True)
class Lexicon:
    name: str
    positives: Bank
    negatives: Bank
    context_flip: dict | None


def _templates(raw: list, where: str) -> tuple[Template, ...]:
    out = []
    for t in raw or []:
        if isinstance(t, str):
            out.append(Template(t))
        elif isinstance(t, dict) and "text" in t:
            a, s = t.get("audience"), t.get("surface")
            if (a and a not in AUDIENCES) or (s and s not in SURFACES):
                raise LexiconError(f"{where}: template {t['text']!r} pins an unknown audience/surface")
            out.append(Template(t["text"], a, s))
        else:
            raise LexiconError(f"{where}: a template must be a string or {{text: ..., audience: ..., surface: ...}}")
    return tuple(out)


def _bank(raw: dict | None, where: str) -> Bank:
    raw = raw or {}
    return Bank(_templates(raw.get("templates"), where), dict(raw.get("slots") or {}))


@cache
def load_lexicon(name: str) -> Lexicon:
    where = f"components/resources/offline/{name}.yaml"
    try:
        raw = yaml.safe_load(resource_text(f"offline/{name}.yaml"))
    except FileNotFoundError:
        raise LexiconError(f"{where}: missing; the offline backend needs templates for every category") from None
    if name == "_innocuous":
        return Lexicon(name, _bank(raw, where), Bank((), {}), None)
    pos, neg = _bank(raw.get("positives"), where), _bank(raw.get("negatives"), where)
    if not pos.templates:
        raise LexiconError(f"{where}: no positive templates")
    return Lexicon(name, pos, neg, (raw.get("negatives") or {}).get("context_flip"))


@cache
def common_slots() -> dict:
    return dict(yaml.safe_load(resource_text("offline/_common.yaml")).get("slots") or {})


# Built-in slots: generated values (numbers, contact details, names) that lists would repeat.
_FIRST = "Alex Jordan Sam Taylor Chris Morgan Jamie Casey Riley Drew Maya Lena Omar Priya Diego Hana Tom Zoe Ivan Nora Leo Ada Ben Mia Raj Eli Kate Luis Ana Marco".split()
_LAST = "Parker Reyes Nguyen Kowalski Okafor Lindqvist Moreau Tanaka Brennan Haddad Costa Fischer Patel Murphy Novak Silva Jensen Walsh Romero Becker".split()
_CITIES = "Leeds Austin Denver Lyon Porto Dublin Tampa Oakland Bristol Calgary Phoenix Hamburg Raleigh Perth Boise Valencia Cork Memphis Tucson Graz".split()
_STREETS = "Elm Maple Oak Cedar Birch Willow Lake Hill Mill Park Church Station Market Chestnut River".split()
_STREET_KINDS = ["St", "Street", "Ave", "Avenue", "Road", "Lane", "Drive", "Court", "Way"]
_COMPANY_A = "Northwind Bluepeak Harbor Summit Greenline Ironwood Brightside Redfern Silverlake Oakridge".split()
_COMPANY_B = ["Logistics", "Dental", "Labs", "Realty", "Auto Body", "Insurance", "Bakery", "Fitness", "Consulting", "Pharmacy"]
_DOMAINS = ["gmail.com", "yahoo.com", "outlook.com", "proton.me", "icloud.com", "hotmail.com", "mail.com"]
_TLDS = ["com", "net", "io", "xyz", "co", "info", "site", "online"]
_URL_WORDS = "quick secure cash deal verify promo best easy fast win my free pay hot live club".split()
_AREA = ["212", "415", "312", "646", "718", "305", "702", "213", "617", "503", "206", "404", "512"]
_EMOJI = ["😊", "😂", "👍", "🙏", "✨", "🔥", "😅", "🙂", "💯", "👀", "🎉", "😉", "🤷", "❤️", "😎"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

_TEXTSPEAK = {
    "you": "u", "your": "ur", "you're": "ur", "are": "r", "please": "pls", "because": "cuz",
    "tonight": "tonite", "thanks": "thx", "though": "tho", "really": "rly", "people": "ppl",
    "before": "b4", "for": "4", "to": "2", "okay": "ok", "message": "msg", "about": "abt",
    "probably": "prob", "tomorrow": "tmrw", "with": "w/", "what": "wat", "know": "kno",
}


def _phone(rng: random.Random) -> str:
    area, mid, end = rng.choice(_AREA), rng.randint(201, 989), rng.randint(1000, 9999)
    return rng.choice([
        f"{area}-{mid}-{end}", f"({area}) {mid}-{end}", f"+1 {area} {mid} {end}", f"{area}{mid}{end}",
        f"{area}.{mid}.{end}", f"+44 7{rng.randint(100, 999)} {rng.randint(100000, 999999)}",
    ])


def _builtin(name: str, rng: random.Random) -> str | None:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    match name:
        case "phone":
            return _phone(rng)
        case "email":
            user = rng.choice([f"{first}.{last}", f"{first}{rng.randint(1, 99)}", f"{first[0]}{last}", f"{last}.{first}{rng.randint(70, 99)}"])
            return f"{user.lower()}@{rng.choice(_DOMAINS)}"
        case "handle":
            return "@" + rng.choice([f"{first}_{last}", f"{first}{rng.randint(1, 999)}", f"the.{first}", f"{first}{last[:3]}x", f"real{first}{rng.randint(10, 99)}"]).lower()
        case "url":
            word = rng.choice(_URL_WORDS) + rng.choice(_URL_WORDS)
            return rng.choice([
                f"https://{word}.{rng.choice(_TLDS)}/{rng.choice(['login', 'claim', 'verify', 'offer', 'join', 'pay'])}",
                f"www.{word}{rng.randint(1, 99)}.{rng.choice(_TLDS)}",
                f"bit.ly/{rng.choice(_URL_WORDS)}{rng.randint(100, 9999)}",
                f"http://{word}-{rng.choice(_URL_WORDS)}.{rng.choice(_TLDS)}",
            ])
        case "price":
            n = rng.choice([40, 60, 80, 100, 120, 150, 200, 250, 300, 400, 500])
            # A plain price: rates ("/hr", "roses") belong to the templates that mean them.
            return rng.choice([f"${n}", f"£{n}", f"{n} usd", f"${n * 10:,}", f"€{n}", f"{n} dollars"])
        case "amount":
            return rng.choice([f"${rng.randint(2, 90) * 50:,}", f"{rng.randint(1, 40) * 100} USD", f"£{rng.randint(3, 60) * 25}",
                               f"0.0{rng.randint(1, 9)} BTC", f"${rng.randint(1, 9)},{rng.randint(100, 999)}"])
        case "number":
            return str(rng.randint(2, 999))
        case "street_address":
            return f"{rng.randint(12, 4890)} {rng.choice(_STREETS)} {rng.choice(_STREET_KINDS)}"
        case "first_name":
            return first
        case "last_name":
            return last
        case "city":
            return rng.choice(_CITIES)
        case "company":
            return f"{rng.choice(_COMPANY_A)} {rng.choice(_COMPANY_B)}"
        case "age_minor":
            return str(rng.randint(12, 15))
        case "age_adult":
            return str(rng.randint(19, 45))
        case "day":
            return rng.choice(_DAYS)
        case "time":
            return rng.choice([f"{rng.randint(1, 11)}pm", f"{rng.randint(6, 11)}am", f"{rng.randint(1, 11)}:{rng.choice(['00', '15', '30', '45'])}", "noon", "midnight"])
        case "emoji":
            return rng.choice(_EMOJI)
    return None


class Renderer:
    """Expands ``{slot}``, ``{a|b}`` and built-ins with one seeded random stream."""

    def __init__(self, rng: random.Random, *slot_tables: dict, where: str = ""):
        self.rng = rng
        self.tables = slot_tables + (common_slots(),)
        self.where = where

    def _value(self, name: str, depth: int) -> str:
        if "|" in name:
            return self.rng.choice(name.split("|"))
        for table in self.tables:
            if name in table:
                values = table[name]
                if not values:
                    raise LexiconError(f"{self.where}: slot {name!r} has no values")
                return self.expand(str(self.rng.choice(values)), depth + 1)
        value = _builtin(name, self.rng)
        if value is None:
            raise LexiconError(f"{self.where}: unknown slot {{{name}}}; define it under slots or in _common.yaml")
        return value

    def expand(self, text: str, depth: int = 0) -> str:
        if depth > _MAX_DEPTH:
            raise LexiconError(f"{self.where}: slots nest deeper than {_MAX_DEPTH} levels (a slot refers to itself?)")
        return _SLOT_RE.sub(lambda m: self._value(m.group(1), depth), text)


# Harmless sentences before a long lead-in text: 8-18 of about 8 words (~100-200 tokens), so most such texts
# run past one 128-token window and the window that holds the text's own words is mostly harmless, as in a
# long real post that ends in a threat (5-9 sentences fitted in one window: the model never met that case).
LONG_LEAD_IN_SENTENCES = (8, 18)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([,.!?;:])", r"\1", text)
    text = re.sub(r"([,.!?])\1+(?=\s|$)", r"\1", text) if "..." not in text else text
    return text[:1].upper() + text[1:] if text else text


def _textspeak(text: str, rng: random.Random) -> str:
    def sub(m: re.Match) -> str:
        word = m.group(0)
        short = _TEXTSPEAK.get(word.lower())
        return short if short and rng.random() < 0.7 else word

    return re.sub(r"[A-Za-z']+", sub, text)


def stylize(text: str, rng: random.Random, style: StyleParams, neutral: Renderer) -> str:
    """Register and length variation, applied after rendering, label-neutral by construction."""
    text = _tidy(text)
    if rng.random() < style.lead_in:
        text = f"{_tidy(neutral.expand('{neutral_sentence}'))} {text}"
    if rng.random() < style.long_lead_in:
        n = rng.randint(*LONG_LEAD_IN_SENTENCES)
        text = " ".join([_tidy(neutral.expand("{neutral_sentence}")) for _ in range(n)] + [text])
    if rng.random() < style.tail:
        text = f"{text} {_tidy(neutral.expand('{neutral_sentence}'))}"
    if rng.random() < style.textspeak:
        text = _textspeak(text, rng)
    if rng.random() < style.lowercase:
        text = text.lower()
    elif rng.random() < style.shout:
        text = text.upper()
    if rng.random() < style.drop_final_punct:
        text = text.rstrip(".!")
    if rng.random() < style.emoji:
        text = f"{text} {rng.choice(_EMOJI)}"
    return text.strip()


class OfflineBackend:
    """Deterministic template generator: same seed and params, same bytes."""

    name = "offline"

    def __init__(self, seed: int, style: StyleParams):
        self.seed = seed
        self.style = style

    def _rng(self, *key: object) -> random.Random:
        return random.Random(":".join(map(str, (self.seed, *key))))

    def _context(self, rng: random.Random, category: str | None, template: Template) -> tuple[str, str]:
        if category is None:
            audience = rng.choice(AUDIENCES) if rng.random() < 0.3 else "GENERAL"
            surface = rng.choice(SURFACES)
        else:
            ctx = rng.choices(load_spec(category).contexts, weights=[c.weight for c in load_spec(category).contexts])[0]
            audience, surface = ctx.audience, ctx.surface
        return template.audience or audience, template.surface or surface

    def _draw(self, rng: random.Random, lexicon: Lexicon, bank: Bank, seen: set[str], render) -> tuple[str, Template]:
        """Render until a text not seen before comes out (bounded; a repeat is kept if none does)."""
        for _ in range(_ATTEMPTS):
            template = rng.choice(bank.templates)
            text = render(template)
            if normalize(text) not in seen:
                break
        seen.add(normalize(text))
        return text, template

    def _renderer(self, rng: random.Random, lexicon: Lexicon, bank: Bank) -> Renderer:
        return Renderer(rng, bank.slots, where=f"components/resources/offline/{lexicon.name}.yaml")

    def positives(self, category: str, count: int, co_labels: tuple[str, ...] = ()) -> list[Draft]:
        rng = self._rng("positives", category, *co_labels)
        lex = load_lexicon(category)
        main = self._renderer(rng, lex, lex.positives)
        partners = [(c, self._renderer(rng, load_lexicon(c), load_lexicon(c).positives)) for c in co_labels]
        neutral = Renderer(rng, where="components/resources/offline/_common.yaml")
        seen: set[str] = set()
        drafts = []

        def render(template: Template) -> str:
            parts = [main.expand(template.text)]
            for partner, r in partners:
                parts.append(r.expand(rng.choice(load_lexicon(partner).positives.templates).text))
            rng.shuffle(parts)
            joiner = rng.choice([" ", ". ", " — ", "\n", " and "])
            return stylize(joiner.join(_tidy(p).rstrip(".") if i < len(parts) - 1 else _tidy(p) for i, p in enumerate(parts)),
                           rng, self.style, neutral)

        for _ in range(count):
            text, template = self._draw(rng, lex, lex.positives, seen, render)
            audience, surface = self._context(rng, category, template)
            drafts.append(Draft(text, audience, surface, labels=(category, *co_labels), kind="positive",
                                template=lex.positives.templates.index(template)))
        return drafts

    def negatives(self, category: str, count: int) -> list[Draft]:
        rng = self._rng("negatives", category)
        lex = load_lexicon(category)
        if not lex.negatives.templates:
            raise LexiconError(f"components/resources/offline/{category}.yaml: no negative templates")
        neutral = Renderer(rng, where="components/resources/offline/_common.yaml")
        flip = lex.context_flip or {}
        n_flip = round(count * float(flip.get("fraction", 0)))
        seen: set[str] = set()
        drafts = []
        for i in range(count):
            flipped = i < n_flip
            bank = lex.positives if flipped else lex.negatives
            r = self._renderer(rng, lex, bank)
            text, template = self._draw(rng, lex, bank, seen, lambda t: stylize(r.expand(t.text), rng, self.style, neutral))
            audience, surface = self._context(rng, category, template)
            if flipped:
                # The same words, in the audience where they are allowed: a label-0 example.
                audience = flip["audience"]
            drafts.append(Draft(text, audience, surface, labels=(), kind="context_flip" if flipped else "hard_negative",
                                template=bank.templates.index(template)))
        return drafts

    def innocuous(self, count: int) -> list[Draft]:
        rng = self._rng("innocuous")
        lex = load_lexicon("_innocuous")
        r = self._renderer(rng, lex, lex.positives)
        neutral = Renderer(rng, where="components/resources/offline/_common.yaml")
        seen: set[str] = set()
        drafts = []
        for _ in range(count):
            text, template = self._draw(rng, lex, lex.positives, seen, lambda t: stylize(r.expand(t.text), rng, self.style, neutral))
            audience, surface = self._context(rng, None, template)
            drafts.append(Draft(text, audience, surface, labels=(), kind="innocuous",
                                template=lex.positives.templates.index(template)))
        return drafts
