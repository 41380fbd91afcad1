"""Cleaning scraped social text (tweets, SMS, posts) the same way across the public sets."""

from __future__ import annotations

import html
import re

import ftfy

# "RT @name:" / "RT @name" anywhere (the retweeted author, not someone addressed).
_RT_MENTION_RE = re.compile(r"(?<!\w)RT\s*@\w+:?")
# A leading bare "RT" / "RT:" marker.
_RT_LEADING_RE = re.compile(r"^\s*RT(?::|\s+|$)")
# @mentions (also ".@name"); the look-behind keeps e-mail addresses (name@host) intact.
_MENTION_RE = re.compile(r"(?<![\w@])@\w+")
# Markdown links [text](url): keep the text.
_MD_LINK_RE = re.compile(r"\[([^\]\n]*)\]\(\s*(?:https?://|www\.)[^)\s]*\s*\)", re.IGNORECASE)
_URL_RE = re.compile(r"(?:\bhttps?://|\bwww\.)\S*", re.IGNORECASE)
# Private-use code points (old carrier emoji such as Davidson's &#57361;) render as nothing.
_PRIVATE_USE_RE = re.compile("[\ue000-\uf8ff]")
_WS_RE = re.compile(r"\s+")


def _normalise_once(text: str, strip_urls: bool) -> str:
    text = ftfy.fix_text(text)
    for _ in range(3):  # "&amp;amp;" is common in scraped tweets; unescape to a fixed point
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = _PRIVATE_USE_RE.sub("", text)
    text = _RT_MENTION_RE.sub(" ", text)
    text = _RT_LEADING_RE.sub(" ", text)
    text = _MENTION_RE.sub("@user", text)
    if strip_urls:
        text = _MD_LINK_RE.sub(r"\1", text)
        text = _URL_RE.sub(" ", text)
    return _WS_RE.sub(" ", text).strip()


def normalize_social_text(text: str, *, strip_urls: bool) -> str:
    """Clean scraped social text consistently across sources; idempotent.

    Fixes mojibake (ftfy), unescapes HTML entities, drops retweet markers ("RT @name:" and a
    leading "RT"), replaces every @mention with "@user", strips URLs when asked (tweets: t.co
    links are truncation artefacts; never for SMS, where links are real contact details),
    collapses whitespace. Applied to a fixed point, so normalising twice changes nothing.
    """
    for _ in range(5):
        cleaned = _normalise_once(text, strip_urls)
        if cleaned == text:
            break
        text = cleaned
    return text
