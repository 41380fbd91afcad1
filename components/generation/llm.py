"""What the LLM backends share: prompts, parsing and validation, the response cache, rate
limits, retries, rounds and cost statistics. Claude (``claude.py``) and OpenAI-compatible
local servers (``local.py``) only say how a request is written, sent and read (a ``Transport``).

How a step runs on an LLM:

1. Each ``Job`` (a category's positives with given co-labels, its hard negatives, innocuous
   text) becomes requests of about ``examples_per_request`` examples. Request ``i`` gets a
   context, a subtype or look-alike to focus on and its index, so no two prompts are alike.
2. A request is keyed by the sha256 of what is sent (model, prompts, parameters) and the seed.
   An answer already in the cache is never asked for again; a new answer is written to the
   cache atomically as it arrives, so a killed run loses at most the requests in flight.
3. Missing answers are fetched concurrently under a requests- and tokens-per-minute limit
   (aiolimiter), retried on 429/5xx/overloaded/timeouts with exponential backoff and full
   jitter, honouring ``retry-after`` (tenacity); or, for Claude, through one Message Batch.
4. Answers are read in request order and every example is validated: refusals, malformed or
   off-category answers, duplicates, empty and overlong texts are rejected with a reason and
   counted. Jobs still short get top-up rounds (new indices) up to ``max_rounds``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import re
import string
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import yaml
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential
from tqdm.auto import tqdm

from components.core.contract import write_json
from components.text.dedup import normalize
from components.generation.base import Draft, Job
from components.generation.specs import load_spec, resource_text
from components.core.params import LLMParams
from components.core.taxonomy import AUDIENCES, LABELS, SURFACES, category as taxonomy_category, split_prefix

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 1500
# Output tokens one example costs, for the tokens-per-minute budget (a short text in JSON).
_TOKENS_PER_EXAMPLE = 80
_MAX_RETRY_AFTER_S = 600.0
_REFUSAL_RE = re.compile(
    r"^\s*(i'?m sorry|i am sorry|sorry,? (but )?i (can|won|am|will)|i can(?:no|')?t (help|assist|create|write|generate|"
    r"provide|produce|comply|fulfil)|i'?m not (able|comfortable)|i am not (able|comfortable)|as an ai\b|i (must|have to) decline)",
    re.IGNORECASE,
)


class GenerationError(ValueError):
    """An LLM generation step that cannot go on; the message says what to do."""


class MissingCredentialsError(GenerationError):
    pass


class BackendUnavailableError(GenerationError):
    """The API or server kept failing after the bounded retries."""


class TooManyLLMRejectsError(GenerationError):
    pass


# ---------------------------------------------------------------------------------------------
# prompts


@cache
def prompt_data() -> dict:
    return yaml.safe_load(resource_text("prompts/generation.yaml"))


@cache
def pricing_table() -> dict:
    return yaml.safe_load(resource_text("prompts/pricing.yaml"))


def tool_schema() -> dict:
    """The answer's JSON schema, with the category names filled in."""
    text = json.dumps(prompt_data()["tool"]["input_schema"]).replace('"CATEGORY_NAMES"', json.dumps(list(LABELS)))
    return json.loads(text)


def tool_name() -> str:
    return prompt_data()["tool"]["name"]


def _fill(template: str, **values: Any) -> str:
    return string.Template(template).substitute({k: str(v) for k, v in values.items()}).strip()


def _bullets(items) -> str:
    return "\n".join(f"- {i}" for i in items) or "- (none)"


@cache
def _general_block() -> str:
    d = prompt_data()
    taxonomy = "\n".join(f"- {c}: {taxonomy_category(c).severity} - {taxonomy_category(c).description}" for c in LABELS)
    return _fill(d["system"], n_categories=len(LABELS), taxonomy=taxonomy, audiences=", ".join(AUDIENCES),
                 surfaces=", ".join(SURFACES), rules=_bullets(d["rules"]), tool_name=tool_name())


@cache
def _category_block(name: str | None) -> str:
    d = prompt_data()
    if name is None:
        return d["innocuous_block"].strip()
    spec = load_spec(name)
    rules = (d.get("category_rules") or {}).get(name)
    return _fill(
        d["category_block"], name=name, severity=spec.severity, description=spec.description,
        definition=spec.definition,
        subtypes=_bullets(f"{s['name']}: {s.get('description', '')}" for s in spec.subtypes),
        signals=_bullets(spec.signals), hard_negative_guidance=_bullets(spec.hard_negative_guidance),
        co_occurs_with=", ".join(spec.co_occurs_with) or "(none)",
        examples_positive=_bullets(spec.examples.get("positives") or ()),
        examples_negative=_bullets(spec.examples.get("negatives") or ()),
        category_rules=("\n" + rules.strip()) if rules else "",
    )


@dataclass(frozen=True)
class Prompt:
    """One request's words and what its answer must hold."""

    system: tuple[str, ...]  # blocks; the last carries the prompt-cache breakpoint
    user: str
    count: int
    expected: tuple[str, ...]  # the categories every example must carry, exactly
    kind: str  # positive | hard_negative | context_flip | innocuous (Draft.kind)
    audience: str
    surface: str
    focus: str  # the subtype, look-alike or theme asked for

    def estimated_tokens(self) -> int:
        """Input (about 4 characters a token) plus the expected output: for the tokens-per-minute budget."""
        chars = sum(len(s) for s in self.system) + len(self.user) + 1200  # the schema
        return chars // 4 + self.count * _TOKENS_PER_EXAMPLE


def _context_flip(name: str) -> dict | None:
    """Which look-alikes are the category's own words in an allowed context (one table: the offline lexicon)."""
    from components.generation.offline import load_lexicon

    flip = load_lexicon(name).context_flip
    return flip if flip and float(flip.get("fraction", 0)) > 0 else None


def _is_flip(index: int, fraction: float) -> bool:
    """Spread a fraction of request indices evenly (index 0 is never one)."""
    return math.floor((index + 1) * fraction) > math.floor(index * fraction)


def build_prompt(job: Job, index: int, count: int, seed: int) -> Prompt:
    """The request ``index`` of ``job``: deterministic for (job, index, seed)."""
    d = prompt_data()
    rng = random.Random(f"{seed}|{job.kind}|{job.category}|{','.join(job.co_labels)}|{index}")
    common = dict(count=count, index=index + 1, tool_name=tool_name())
    if job.kind == "innocuous":
        audience = rng.choice(AUDIENCES) if rng.random() < 0.3 else "GENERAL"
        surface = rng.choice(SURFACES)
        theme = d["innocuous_themes"][index % len(d["innocuous_themes"])]
        user = _fill(d["tasks"]["innocuous"], audience=audience, surface=surface,
                     surface_hint=d["surface_hints"][surface], theme=theme, **common)
        return Prompt((_general_block(), _category_block(None)), user, count, (), "innocuous", audience, surface, theme)

    name = job.category
    spec = load_spec(name)
    ctx = rng.choices(spec.contexts, weights=[c.weight for c in spec.contexts])[0]
    audience, surface = ctx.audience, ctx.surface
    system = (_general_block(), _category_block(name))
    values = dict(name=name, surface_hint=d["surface_hints"][surface], **common)
    if job.kind == "positives":
        subtype = spec.subtypes[index % len(spec.subtypes)] if spec.subtypes else {"name": name, "description": spec.description}
        expected = tuple(sorted({name, *job.co_labels}, key=LABELS.index))
        values.update(subtype=subtype["name"], subtype_description=subtype.get("description", ""),
                      expected=json.dumps(list(expected)))
        if job.co_labels:
            co_defs = "\n".join(f"{c}: {load_spec(c).description}. {load_spec(c).definition}" for c in job.co_labels)
            user = _fill(d["tasks"]["positive_multi"], audience=audience, surface=surface,
                         co_names=" and ".join(job.co_labels), co_definitions=co_defs, **values)
        else:
            user = _fill(d["tasks"]["positive"], audience=audience, surface=surface, **values)
        return Prompt(system, user, count, expected, "positive", audience, surface, subtype["name"])

    if job.kind != "negatives":
        raise ValueError(f"unknown job kind {job.kind!r}")
    flip = _context_flip(name)
    if flip and _is_flip(index, float(flip["fraction"])):
        audience = flip["audience"]
        subtype = spec.subtypes[index % len(spec.subtypes)]
        user = _fill(d["tasks"]["context_flip"], audience=audience, surface=surface, subtype=subtype["name"],
                     subtype_description=subtype.get("description", ""), **values)
        return Prompt(system, user, count, (), "context_flip", audience, surface, subtype["name"])
    guidance = spec.hard_negative_guidance[index % len(spec.hard_negative_guidance)]
    user = _fill(d["tasks"]["negative"], audience=audience, surface=surface, guidance=guidance, **values)
    return Prompt(system, user, count, (), "hard_negative", audience, surface, guidance)


# ---------------------------------------------------------------------------------------------
# answers, validation


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0
    cache_read_tokens: int = 0

    def add(self, other: Usage) -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))


@dataclass
class Answer:
    """What a transport reads from one raw response."""

    examples: list | None
    usage: Usage
    refusal: str | None = None
    malformed: str | None = None


@dataclass(frozen=True)
class Rejected:
    reason: str  # refusal | malformed | errored | off_category | duplicate | empty | too_long
    detail: str
    raw: Any = None
    examples_lost: int = 1


def looks_like_refusal(text: str) -> bool:
    return bool(_REFUSAL_RE.match(text or ""))


def _clean_text(text: str) -> str:
    text = text.strip()
    try:
        _, text = split_prefix(text)  # a model that wrote the prefix anyway
    except ValueError:
        pass
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    return text


def validate_answer(answer: Answer, prompt: Prompt, seen: set[str]) -> tuple[list[tuple[str, str]], list[Rejected]]:
    """Accepted ``(text, subtype)`` pairs and rejects of one answer; ``seen`` holds normalised texts so far."""
    if answer.refusal is not None:
        return [], [Rejected("refusal", answer.refusal[:300], None, prompt.count)]
    if answer.malformed is not None or not isinstance(answer.examples, list):
        why = answer.malformed or f"examples is {type(answer.examples).__name__}, not a list"
        return [], [Rejected("malformed", why, None, prompt.count)]
    accepted: list[tuple[str, str]] = []
    rejects: list[Rejected] = []
    expected = set(prompt.expected)
    for ex in answer.examples:
        if not isinstance(ex, dict) or not isinstance(ex.get("text"), str):
            rejects.append(Rejected("malformed", "an example without a text string", ex))
            continue
        text = _clean_text(ex["text"])
        cats = ex.get("categories", [])
        if not text:
            rejects.append(Rejected("empty", "empty text", ex))
        elif len(text) > MAX_TEXT_CHARS:
            rejects.append(Rejected("too_long", f"{len(text)} characters > {MAX_TEXT_CHARS}", ex))
        elif looks_like_refusal(text):
            rejects.append(Rejected("refusal", "the example is a refusal", ex))
        elif not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
            rejects.append(Rejected("malformed", "categories is not a list of names", ex))
        elif unknown := sorted(set(cats) - set(LABELS)):
            rejects.append(Rejected("off_category", f"unknown categories {unknown}", ex))
        elif set(cats) != expected:
            missing, extra = sorted(expected - set(cats)), sorted(set(cats) - expected)
            why = "; ".join(filter(None, [missing and f"not {', '.join(missing)}", extra and f"also {', '.join(extra)}"]))
            rejects.append(Rejected("off_category", why, ex))
        elif (norm := normalize(text)) in seen or not norm:
            rejects.append(Rejected("duplicate", "repeats an earlier example", ex))
        else:
            seen.add(norm)
            accepted.append((text, str(ex.get("subtype") or prompt.focus)))
    return accepted, rejects


# ---------------------------------------------------------------------------------------------
# cache


def request_key(backend: str, body: dict, seed: int) -> str:
    """sha256 of what is sent (model, prompts, parameters) and the seed: the answer's address."""
    material = json.dumps({"backend": backend, "body": body, "seed": seed}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


class ResponseCache:
    """One JSON file per answer, ``<root>/<key[:2]>/<key>.json``, written atomically."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        p = self.path(key)
        try:
            return json.loads(p.read_text("utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            log.warning("unreadable cache entry %s: asking again", p)
            return None

    def has(self, key: str) -> bool:
        return self.get(key) is not None

    def put(self, key: str, entry: dict) -> None:
        write_json(self.path(key), {"key": key, **entry})

    # Pending Message Batches: what a killed run needs to collect a batch it paid for.
    def batch_states(self) -> list[dict]:
        folder = self.root / "batches"
        states = []
        for p in sorted(folder.glob("*.json")) if folder.exists() else ():
            try:
                states.append(json.loads(p.read_text("utf-8")))
            except (json.JSONDecodeError, UnicodeDecodeError):
                log.warning("unreadable batch state %s: ignored", p)
        return states

    def save_batch(self, state: dict) -> None:
        write_json(self.root / "batches" / f"{state['batch_id']}.json", state)

    def drop_batch(self, batch_id: str) -> None:
        (self.root / "batches" / f"{batch_id}.json").unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# cost


@dataclass(frozen=True)
class Price:
    input: float
    output: float
    cache_write: float
    cache_read: float
    batch: float

    def cost(self, usage: Usage, batch: bool = False) -> float:
        usd = (usage.input_tokens * self.input + usage.output_tokens * self.output
               + usage.cache_write_tokens * self.cache_write + usage.cache_read_tokens * self.cache_read) / 1e6
        return usd * (self.batch if batch else 1.0)


def price_for(model: str, override: dict[str, float] | None = None, table: dict | None = None) -> Price | None:
    """USD per million tokens: ``override`` (params) first, else the longest matching prefix of the table."""
    table = table or pricing_table()
    m = table.get("multipliers", {})
    row = dict(override) if override else None
    if row is None:
        rows = [r for r in table.get("models", []) if model.startswith(r["prefix"])]
        if not rows:
            return None
        row = max(rows, key=lambda r: len(r["prefix"]))
    inp = float(row.get("input", 0.0))
    return Price(inp, float(row.get("output", 0.0)), float(row.get("cache_write", inp * m.get("cache_write", 1.25))),
                 float(row.get("cache_read", inp * m.get("cache_read", 0.1))), float(m.get("batch", 0.5)))


# ---------------------------------------------------------------------------------------------
# statistics


@dataclass
class Tally:
    """Counters of one job (summed per category and in total for the step's statistics)."""

    requests: int = 0  # answers fetched by this run
    cached: int = 0  # answers the cache served
    retries: int = 0
    asked: int = 0  # examples requested in the answers read
    returned: int = 0  # examples the model wrote
    accepted: int = 0
    kept: int = 0  # accepted and used (the rest are surplus)
    rejected: Counter = field(default_factory=Counter)
    examples_rejected: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0  # spent by this run
    cost_usd_with_cache: float = 0.0  # what the answers used cost when they were bought
    shortfall: int = 0

    def add(self, o: Tally) -> None:
        for k in ("requests", "cached", "retries", "asked", "returned", "accepted", "kept", "examples_rejected",
                  "cost_usd", "cost_usd_with_cache", "shortfall"):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.rejected.update(o.rejected)
        self.usage.add(o.usage)

    @property
    def reject_fraction(self) -> float:
        total = self.accepted + self.examples_rejected
        return self.examples_rejected / total if total else 0.0

    def to_dict(self) -> dict:
        return {
            "requests": self.requests, "cached": self.cached, "retries": self.retries,
            "examples_asked": self.asked, "examples_returned": self.returned, "accepted": self.accepted,
            "kept": self.kept, "shortfall": self.shortfall, "rejected": sum(self.rejected.values()),
            "rejected_by_reason": dict(sorted(self.rejected.items())),
            "reject_fraction": round(self.reject_fraction, 4),
            "input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens,
            "cache_write_tokens": self.usage.cache_write_tokens, "cache_read_tokens": self.usage.cache_read_tokens,
            "cost_usd": round(self.cost_usd, 6), "cost_usd_with_cache": round(self.cost_usd_with_cache, 6),
        }


# ---------------------------------------------------------------------------------------------
# the transport: what differs between Claude and a local server


class Transport(Protocol):
    name: str  # the records' metadata.source
    model: str
    endpoint: str  # for messages
    supports_batches: bool

    def request_body(self, prompt: Prompt, params: LLMParams) -> dict: ...

    def client(self) -> Any:
        """An async context manager yielding the client ``send`` uses (opened inside the event loop)."""

    async def send(self, client: Any, body: dict) -> dict:
        """The raw answer as JSON; raises on HTTP and network errors."""

    def parse(self, raw: dict) -> Answer: ...

    def is_transient(self, exc: BaseException) -> bool: ...

    def retry_after(self, exc: BaseException) -> float | None: ...

    def unavailable(self, exc: BaseException, attempts: int) -> GenerationError: ...

    def fatal(self, exc: BaseException) -> GenerationError | None:
        """A clear error for a non-transient failure (None: raise it as it is)."""


class _WaitRetryAfter:
    """tenacity wait: the server's ``retry-after`` when it sent one, else exponential backoff with full jitter."""

    def __init__(self, read, fallback):
        self.read, self.fallback = read, fallback

    def __call__(self, retry_state) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        after = self.read(exc) if exc is not None else None
        if after is not None:
            return min(max(after, 0.0), _MAX_RETRY_AFTER_S)
        return self.fallback(retry_state)


def parse_retry_after(headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None


def run_coroutine(coro):
    """asyncio.run, also from a thread whose event loop is already running (a Prefect task)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target, name="llm-generate")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _first_error(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


# ---------------------------------------------------------------------------------------------
# the backend


@dataclass(frozen=True)
class _Planned:
    job: Job
    index: int
    prompt: Prompt
    body: dict
    key: str


@dataclass
class _JobState:
    job: Job
    next_index: int = 0
    drafts: list = field(default_factory=list)
    tally: Tally = field(default_factory=Tally)
    rejects: list = field(default_factory=list)


class LLMBackend:
    """A generation backend over any ``Transport``; one copy of the logic for every LLM."""

    def __init__(self, transport: Transport, params: LLMParams, seed: int, cache_dir: str | Path,
                 progress: bool | None = None):
        self.transport = transport
        self.params = params
        self.seed = seed
        self.cache = ResponseCache(cache_dir)
        self.name = transport.name
        self.progress = progress
        self.price = price_for(transport.model, params.pricing or None)
        self._states: dict[Job, _JobState] = {}
        self._fresh: set[str] = set()  # keys this run fetched
        self._retries: Counter = Counter()  # per job

    # -- the GenerationBackend protocol

    def positives(self, category: str, count: int, co_labels: tuple[str, ...] = ()) -> list[Draft]:
        return self._drafts(Job("positives", category, count, tuple(co_labels)))

    def negatives(self, category: str, count: int) -> list[Draft]:
        return self._drafts(Job("negatives", category, count))

    def innocuous(self, count: int) -> list[Draft]:
        return self._drafts(Job("innocuous", None, count))

    def prefetch(self, jobs: list[Job]) -> None:
        """Fetch every job of a step together (one batch, or one pool of concurrent requests)."""
        self._run([j for j in jobs if j.count > 0 and j not in self._states])

    def report(self, jobs: list[Job]) -> dict:
        """The step's statistics and rejects, for the jobs it ran."""
        per_category: dict[str, Tally] = {}
        total = Tally()
        rejects = []
        for job in jobs:
            st = self._states.get(job)
            if st is None:
                continue
            per_category.setdefault(job.category or "innocuous", Tally()).add(st.tally)
            total.add(st.tally)
            rejects.extend(st.rejects)
        stats = {
            "backend": self.name, "model": self.transport.model, "cache_dir": str(self.cache.root),
            "priced": self.price is not None, **total.to_dict(),
            "per_category": {c: t.to_dict() for c, t in per_category.items()},
        }
        return {"stats": stats, "rejects": rejects}

    # -- rounds

    def _drafts(self, job: Job) -> list[Draft]:
        if job.count <= 0:
            return []
        if job not in self._states:
            self._run([job])
        return list(self._states[job].drafts)

    def _plan(self, st: _JobState, need: int, first: bool) -> list[_Planned]:
        per = self.params.examples_per_request
        ask = math.ceil(need * (1 + self.params.overshoot)) if first else max(need, 1)
        planned = []
        while ask > 0:
            n = min(per, ask)
            prompt = build_prompt(st.job, st.next_index, n, self.seed)
            body = self.transport.request_body(prompt, self.params)
            planned.append(_Planned(st.job, st.next_index, prompt, body, request_key(self.name, body, self.seed)))
            st.next_index += 1
            ask -= n
        return planned

    def _run(self, jobs: list[Job]) -> None:
        states = [self._states.setdefault(j, _JobState(j)) for j in jobs]
        accepted: dict[Job, list] = {st.job: [] for st in states}
        seen: dict[tuple, set[str]] = {}
        for rnd in range(self.params.max_rounds):
            planned = []
            for st in states:
                need = st.job.count - len(accepted[st.job])
                if need > 0:
                    planned.extend(self._plan(st, need, first=rnd == 0))
            if not planned:
                break
            if rnd:
                log.info("%s: top-up round %d, %d requests", self.name, rnd + 1, len(planned))
            answers = self._fetch(planned)
            for item in planned:
                st = self._states[item.job]
                self._read(st, item, answers.get(item.key), accepted[item.job],
                           seen.setdefault((item.job.kind, item.job.category), set()))
        for st in states:
            st.tally.retries += self._retries.pop(st.job, 0)
            got = accepted[st.job]
            st.drafts = got[: st.job.count]
            st.tally.kept = len(st.drafts)
            st.tally.shortfall = max(0, st.job.count - len(st.drafts))
        self._check(states)

    def _read(self, st: _JobState, item: _Planned, entry: dict | None, accepted: list, seen: set[str]) -> None:
        t = st.tally
        if entry is None:  # a batch request that failed for good
            self._reject(st, item, Rejected("errored", "no answer (the request failed)", None, item.prompt.count))
            return
        if "error" in entry:
            t.requests += item.key in self._fresh
            self._reject(st, item, Rejected("errored", json.dumps(entry["error"])[:300], None, item.prompt.count))
            return
        answer = self.transport.parse(entry["response"])
        fresh = item.key in self._fresh
        t.requests += fresh
        t.cached += not fresh
        t.asked += item.prompt.count
        t.returned += len(answer.examples) if isinstance(answer.examples, list) else 0
        t.usage.add(answer.usage)
        if self.price is not None:
            usd = self.price.cost(answer.usage, batch=bool(entry.get("batch")))
            t.cost_usd_with_cache += usd
            t.cost_usd += usd if fresh else 0.0
        good, bad = validate_answer(answer, item.prompt, seen)
        t.accepted += len(good)
        for r in bad:
            self._reject(st, item, r)
        for text, subtype in good:
            accepted.append(Draft(
                text, item.prompt.audience, item.prompt.surface, labels=item.prompt.expected, kind=item.prompt.kind,
                extra={"subtype": subtype, "model": self.transport.model, "request": item.key[:16]},
            ))

    def _reject(self, st: _JobState, item: _Planned, r: Rejected) -> None:
        st.tally.rejected[r.reason] += 1
        st.tally.examples_rejected += r.examples_lost
        st.rejects.append({
            "category": item.job.category, "kind": item.prompt.kind, "co_labels": list(item.job.co_labels),
            "request": item.key[:16], "index": item.index, "reason": r.reason, "detail": r.detail, "raw": r.raw,
        })

    def _check(self, states: list[_JobState]) -> None:
        p = self.params
        for st in states:
            t, job = st.tally, st.job
            what = f"{job.kind} of {job.category or 'innocuous'}" + (f" with {'+'.join(job.co_labels)}" if job.co_labels else "")
            if t.reject_fraction > p.max_reject_fraction:
                top = ", ".join(f"{k} {v}" for k, v in t.rejected.most_common(3))
                raise TooManyLLMRejectsError(
                    f"{what}: {t.reject_fraction:.0%} of the examples were rejected ({top}) > allowed "
                    f"{p.max_reject_fraction:.0%} (generate.{self._section}.max_reject_fraction); the reasons are in "
                    "the step's _rejects.jsonl. Fix the prompt data (components/resources/prompts) or the model; "
                    "the answers stay cached."
                )
            if t.shortfall > job.count * p.max_shortfall:
                raise TooManyLLMRejectsError(
                    f"{what}: only {t.kept} of {job.count} examples after {p.max_rounds} rounds (rejects: "
                    f"{dict(t.rejected)}); raise generate.{self._section}.max_rounds or .overshoot and rerun "
                    "(answers so far are cached)."
                )
            if t.shortfall:
                log.warning("%s: %d of %d examples (short by %d)", what, t.kept, job.count, t.shortfall)

    @property
    def _section(self) -> str:
        return "claude" if self.name == "claude" else "local"

    # -- fetching

    def _fetch(self, planned: list[_Planned]) -> dict[str, dict]:
        """Every planned request's cache entry: from the cache, else fetched (and cached as it arrives)."""
        entries: dict[str, dict] = {}
        missing: dict[str, _Planned] = {}
        for item in planned:
            entry = self.cache.get(item.key)
            if entry is not None:
                entries[item.key] = entry
            else:
                missing.setdefault(item.key, item)
        if missing:
            log.info("%s %s: %d requests (%d answers from the cache)", self.name, self.transport.model,
                     len(missing), len(entries))
            if getattr(self.params, "use_batches", False) and self.transport.supports_batches:
                run_coroutine(self._fetch_batches(missing))
            else:
                run_coroutine(self._fetch_concurrently(list(missing.values())))
            for key in missing:
                entry = self.cache.get(key)
                if entry is not None:
                    entries[key] = entry
        return entries

    def _retrying(self, job: Job | None) -> AsyncRetrying:
        p = self.params

        def count_retry(state) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info("%s: retry %d after %s", self.name, state.attempt_number, type(exc).__name__ if exc else "?")
            if job is not None:
                self._retries[job] += 1

        return AsyncRetrying(
            retry=retry_if_exception(self.transport.is_transient),
            stop=stop_after_attempt(p.retries + 1),
            wait=_WaitRetryAfter(self.transport.retry_after,
                                 wait_random_exponential(multiplier=p.backoff_base_s, max=p.backoff_max_s)),
            before_sleep=count_retry,
            reraise=True,
        )

    async def _call(self, fn, job: Job | None = None):
        """``await fn()`` with the retries; a failure becomes a GenerationError that says what to do."""
        async def attempt():
            return await fn()

        try:
            return await self._retrying(job)(attempt)
        except GenerationError:
            raise
        except Exception as exc:
            if self.transport.is_transient(exc):
                raise self.transport.unavailable(exc, self.params.retries + 1) from exc
            clear = self.transport.fatal(exc)
            if clear is not None:
                raise clear from exc
            raise

    def _bar(self, total: int, desc: str):
        return tqdm(total=total, desc=desc, unit="req", disable=None if self.progress is None else not self.progress,
                    dynamic_ncols=True, leave=True)

    async def _fetch_concurrently(self, items: list[_Planned]) -> None:
        p = self.params
        rpm = AsyncLimiter(p.requests_per_minute, 60) if p.requests_per_minute else None
        tpm = AsyncLimiter(p.tokens_per_minute, 60) if p.tokens_per_minute else None
        sem = asyncio.Semaphore(p.concurrency)
        shown = {"examples": 0, "rejects": 0, "usd": 0.0, "seen": {}}
        bar = self._bar(len(items), f"{self.name} {self.transport.model}")

        async with self.transport.client() as client:
            async def attempt(item: _Planned) -> dict:
                if rpm:
                    await rpm.acquire()
                if tpm:
                    await tpm.acquire(min(item.prompt.estimated_tokens(), tpm.max_rate))
                return await self.transport.send(client, item.body)

            async def one(item: _Planned) -> None:
                async with sem:
                    raw = await self._call(lambda: attempt(item), item.job)
                self.cache.put(item.key, {"backend": self.name, "model": self.transport.model,
                                          "request": item.body, "response": raw})
                self._fresh.add(item.key)
                self._show(bar, item, raw, shown)

            try:
                async with asyncio.TaskGroup() as tg:
                    for item in items:
                        tg.create_task(one(item))
            except BaseExceptionGroup as eg:
                raise _first_error(eg) from None
            finally:
                bar.close()

    def _show(self, bar, item: _Planned, raw: dict, shown: dict) -> None:
        """Progress: requests, examples and rejects so far (validated in arrival order), spend."""
        answer = self.transport.parse(raw)
        seen = shown["seen"].setdefault((item.job.kind, item.job.category), set())
        good, bad = validate_answer(answer, item.prompt, seen)
        shown["examples"] += len(good)
        shown["rejects"] += len(bad)
        if self.price is not None:
            shown["usd"] += self.price.cost(answer.usage)
        bar.set_postfix(examples=shown["examples"], rejects=shown["rejects"], usd=f"{shown['usd']:.4f}", refresh=False)
        bar.update(1)

    # -- Message Batches (Claude)

    async def _fetch_batches(self, missing: dict[str, _Planned]) -> None:
        """Collect pending batches a killed run left, then submit what is still missing as one batch."""
        p = self.params
        async with self.transport.client() as client:
            for state in self.cache.batch_states():
                if set(state["keys"]) & set(missing):
                    log.info("resuming Message Batch %s (%d requests)", state["batch_id"], len(state["keys"]))
                    await self._collect(client, state, missing)
            for attempt in range(p.retries + 1):
                todo = {k: it for k, it in missing.items() if not self.cache.has(k)}
                if not todo:
                    return
                if attempt:
                    log.info("resubmitting %d requests whose batch results errored or expired", len(todo))
                batch_id = await self._call(lambda: self.transport.submit_batch(client, [(k, it.body) for k, it in todo.items()]))
                state = {"batch_id": batch_id, "keys": list(todo), "model": self.transport.model,
                         "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                self.cache.save_batch(state)
                log.info("submitted Message Batch %s (%d requests); a killed run resumes it from %s",
                         batch_id, len(todo), self.cache.root / "batches")
                await self._collect(client, state, missing)
            still = [k for k in missing if not self.cache.has(k)]
            if still:
                raise BackendUnavailableError(
                    f"{len(still)} batch requests kept failing after {p.retries + 1} batches; rerun later "
                    "(everything answered is cached) or set generate.claude.use_batches: false"
                )

    async def _collect(self, client, state: dict, missing: dict[str, _Planned]) -> None:
        p = self.params
        batch_id = state["batch_id"]
        bar = self._bar(len(state["keys"]), f"batch {batch_id}")
        started = time.monotonic()
        try:
            while True:
                status = await self._call(lambda: self.transport.batch_status(client, batch_id))
                done = sum(v for k, v in status["counts"].items() if k != "processing")
                bar.n = min(done, bar.total)
                bar.set_postfix(status=status["status"], **{k: v for k, v in status["counts"].items() if v}, refresh=True)
                if status["status"] == "ended":
                    break
                if time.monotonic() - started > p.batch_max_wait_s:
                    raise BackendUnavailableError(
                        f"Message Batch {batch_id} still {status['status']} after {p.batch_max_wait_s:.0f}s; rerun the "
                        f"step to keep waiting (the id is kept in {self.cache.root / 'batches'})"
                    )
                await asyncio.sleep(p.batch_poll_interval_s)
            results = await self._call(lambda: self.transport.batch_results(client, batch_id))
        finally:
            bar.close()
        known = set(state["keys"])
        for custom_id, kind, payload in results:
            if custom_id not in known:
                continue
            item = missing.get(custom_id)
            request = item.body if item else None
            if kind == "succeeded":
                self.cache.put(custom_id, {"backend": self.name, "model": self.transport.model, "batch": batch_id,
                                           "request": request, "response": payload})
                self._fresh.add(custom_id)
            elif kind == "errored" and not self.transport.is_transient_batch_error(payload):
                # Deterministic (invalid request): remember it, so it is not resubmitted forever.
                self.cache.put(custom_id, {"backend": self.name, "model": self.transport.model, "batch": batch_id,
                                           "request": request, "error": payload})
                self._fresh.add(custom_id)
            else:
                log.info("batch %s: request %s %s; it will be resubmitted", batch_id, custom_id[:12], kind)
        self.cache.drop_batch(batch_id)
