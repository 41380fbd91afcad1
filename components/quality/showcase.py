"""The showcase: per category, the test examples a reviewer should look at first.

For every category (canonical order) the most confident examples of each kind: true
positives and false positives with the highest scores, false negatives with the lowest.
Pure functions over records, a probability matrix ``[n, 18]`` (``LABELS`` order) and the
thresholds; nothing here loads a model or writes a file, so the selection is checkable on
hand-built arrays. The CLI's ``showcase`` command scores the test split and writes the page.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from components.core.contract import Record
from components.core.taxonomy import LABELS, category, split_prefix
from components.model.scoring import flags

KINDS = ("true_positives", "false_positives", "false_negatives")
KIND_TITLES = {
    "true_positives": "True positives (highest scores)",
    "false_positives": "False positives (highest scores)",
    "false_negatives": "False negatives (lowest scores)",
}
_NEWLINES = re.compile(r"\r\n|\r|\n")
_MD_SPECIAL = re.compile(r"[\\|*_`~\[\]]")


@dataclass(frozen=True)
class Example:
    id: str
    text: str  # without the context prefix
    context: str  # AUDIENCE/SURFACE
    score: float
    threshold: float
    labels: tuple[str, ...]  # the record's true labels


def _context_and_text(record: Record) -> tuple[str, str]:
    try:
        prefix, raw = split_prefix(record.text)
    except ValueError:
        prefix, raw = None, record.text
    audience = record.metadata.get("audience") or (prefix.audience if prefix else None)
    surface = record.metadata.get("surface") or (prefix.surface if prefix else None)
    context = f"{audience}/{surface}" if audience and surface else "-"
    return context, raw


def select_examples(
    records: Sequence[Record],
    probs: Any,
    thresholds: Mapping[str, float],
    per_category: int = 3,
) -> dict[str, dict[str, list[Example]]]:
    """Up to ``per_category`` examples of each kind for every category, most confident first.

    A record counts as flagged for a category when its score is at or above the category's
    threshold (the serving rule). True and false positives are ordered by descending score,
    false negatives by ascending score (the misses the model was surest about); ties go by id
    so the selection is deterministic.
    """
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2 or p.shape != (len(records), len(LABELS)):
        raise ValueError(f"probs must have shape [{len(records)}, {len(LABELS)}] (one row per record, "
                         f"LABELS order), got {p.shape}")
    missing = [c for c in LABELS if c not in thresholds]
    if missing:
        raise ValueError(f"thresholds missing for {missing}")
    if per_category < 0:
        raise ValueError(f"per_category must be >= 0, got {per_category}")
    y = np.array([r.label_vector() for r in records], dtype=int).reshape(len(records), len(LABELS))
    ids = [r.id for r in records]
    shown: dict[int, tuple[str, str]] = {}

    def example(i: int, j: int, threshold: float) -> Example:
        if i not in shown:
            shown[i] = _context_and_text(records[i])
        context, text = shown[i]
        return Example(ids[i], text, context, float(p[i, j]), threshold, tuple(records[i].positive_labels()))

    out: dict[str, dict[str, list[Example]]] = {}
    flagged_all = flags(p, thresholds)
    for j, name in enumerate(LABELS):
        t = float(thresholds[name])
        flagged = flagged_all[:, j]
        positive = y[:, j] == 1
        rows = {
            "true_positives": np.flatnonzero(flagged & positive),
            "false_positives": np.flatnonzero(flagged & ~positive),
            "false_negatives": np.flatnonzero(~flagged & positive),
        }
        out[name] = {}
        for kind, idx in rows.items():
            sign = 1.0 if kind == "false_negatives" else -1.0
            ordered = sorted(idx.tolist(), key=lambda i: (sign * p[i, j], ids[i]))
            out[name][kind] = [example(i, j, t) for i in ordered[:per_category]]
    return out


def md_cell(text: str, max_chars: int | None = 300) -> str:
    """Text made safe for one markdown table cell and shown as written.

    Pipes and markdown emphasis/link characters are backslash-escaped (``R_a_n_d_o_m`` stays
    literal), ``&``, ``<`` and ``>`` become entities (no stray HTML), newlines become ``<br>``; long
    texts are cut at ``max_chars``.
    """
    text = str(text)
    if max_chars is not None and len(text) > max_chars:
        text = text[: max_chars - 1].rstrip() + "…"
    text = _MD_SPECIAL.sub(r"\\\g<0>", text.replace("&", "&amp;")).replace("<", "&lt;").replace(">", "&gt;")
    return _NEWLINES.sub("<br>", text).strip() or " "


def _fmt(x: Any, digits: int = 3) -> str:
    return "-" if x is None else f"{float(x):.{digits}f}"


def render_markdown(
    selection: Mapping[str, Mapping[str, Sequence[Example]]],
    metrics: Mapping[str, Any],
    title: str = "Moderation classifier showcase",
    about: Mapping[str, Any] | None = None,
) -> str:
    """The showcase page: a header, then one section per category in canonical order.

    ``metrics`` is ``components.quality.metrics.category_metrics`` on the same split and thresholds;
    ``about`` is a small table of where the numbers come from (model, split, ...).
    """
    per = metrics.get("per_category", {})
    lines = [f"# {title}", ""]
    for key, value in (about or {}).items():
        lines.append(f"- **{key}**: {md_cell(value, None)}")
    if metrics.get("macro_f1") is not None:
        lines.append(f"- **macro F1**: {_fmt(metrics['macro_f1'])} · **micro F1**: {_fmt(metrics.get('micro_f1'))}"
                     + (f" · **examples**: {metrics['samples']}" if "samples" in metrics else ""))
    lines += ["", "A flag is a score at or above the category's threshold. Scores are the model's probabilities.", ""]
    for name in LABELS:
        m = per.get(name, {})
        lines += [f"## {name}", ""]
        lines.append(
            f"Severity **{category(name).severity}** · test F1 **{_fmt(m.get('f1'))}** · precision {_fmt(m.get('precision'))}"
            f" · recall {_fmt(m.get('recall'))} at threshold {_fmt(m.get('threshold'), 2)}"
            + (f" · {m['support']} positives, {m.get('predicted', '-')} flagged" if "support" in m else "")
        )
        lines.append("")
        kinds = selection.get(name, {})
        for kind in KINDS:
            examples = kinds.get(kind, [])
            lines += [f"### {KIND_TITLES[kind]}", ""]
            if not examples:
                lines += ["_none_", ""]
                continue
            lines.append("| score | threshold | context | text | true labels | id |")
            lines.append("|---:|---:|---|---|---|---|")
            for e in examples:
                lines.append(
                    f"| {e.score:.3f} | {e.threshold:.2f} | {md_cell(e.context)} | {md_cell(e.text)} | "
                    f"{md_cell(', '.join(e.labels) or 'none')} | {md_cell(e.id)} |"
                )
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
