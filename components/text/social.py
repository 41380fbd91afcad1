"""Cleaning scraped social text (tweets, SMS, posts, e-mail) the same way across the public sets."""

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

# HTML in e-mail bodies. Only real element names count as tags, so "<name@host.com>" and
# "<https://...>" (addresses and links in angle brackets, common in forwarded mail) are kept.
_HTML_DROP_RE = re.compile(r"<!--.*?(?:-->|$)|<(script|style|head)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_INLINE_TAGS = ("a|abbr|b|bdi|bdo|big|cite|code|del|dfn|em|font|i|ins|kbd|mark|o:p|q|s|samp|small|span|strike|"
                "strong|sub|sup|tt|u|var|wbr")
_BLOCK_TAGS = ("address|area|article|aside|base|blockquote|body|br|button|caption|center|col|colgroup|dd|div|dl|"
               "dt|fieldset|figcaption|figure|footer|form|frame|frameset|h[1-6]|head|header|hr|html|iframe|img|"
               "input|label|legend|li|link|main|map|meta|nav|noscript|ol|option|p|picture|pre|section|select|"
               "source|svg|table|tbody|td|textarea|tfoot|th|thead|title|tr|ul|xml|[ovw]:\\w+")
_INLINE_TAG_RE = re.compile(rf"</?(?:{_INLINE_TAGS})(?=[\s/>])[^<>]*>", re.IGNORECASE)
_BLOCK_TAG_RE = re.compile(rf"</?(?:{_BLOCK_TAGS})(?=[\s/>])[^<>]*>|<!DOCTYPE[^<>]*>", re.IGNORECASE)


def strip_html(text: str) -> str:
    """Remove HTML markup, keep its text: comments, <script>/<style>/<head> blocks go whole; a block
    tag (p, br, div, li, td...) becomes a space, an inline one (b, span, a...) nothing. Entities are
    left to the caller (``normalize_social_text`` unescapes them). Only real element names count as
    tags: "<someone@example.com>" and "<https://...>" stay."""
    text = _HTML_DROP_RE.sub(" ", text)
    text = _BLOCK_TAG_RE.sub(" ", text)
    return _INLINE_TAG_RE.sub("", text)


def cap_chars(text: str, limit: int | None) -> str:
    """The head of ``text`` in at most ``limit`` characters, cut at a space when one falls in the last
    fifth (a word is not split); ``text`` itself when it is short enough or ``limit`` is None."""
    if limit is None or len(text) <= limit:
        return text
    head = text[: limit + 1]
    space = head.rfind(" ")
    return (head[:space] if space >= limit * 0.8 else head[:limit]).rstrip()


def _normalise_once(text: str, strip_urls: bool, strip_tags: bool) -> str:
    if strip_tags:
        text = strip_html(text)
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


def normalize_social_text(text: str, *, strip_urls: bool, strip_html: bool = False) -> str:
    """Clean scraped social text consistently across sources; idempotent.

    Fixes mojibake (ftfy), unescapes HTML entities, drops retweet markers ("RT @name:" and a
    leading "RT"), replaces every @mention with "@user", strips URLs when asked (tweets: t.co
    links are truncation artefacts; never for SMS, where links are real contact details),
    collapses whitespace; with ``strip_html`` (e-mail bodies) HTML markup is removed first (see
    the function ``strip_html``). Applied to a fixed point, so normalising twice changes nothing.
    """
    for _ in range(5):
        cleaned = _normalise_once(text, strip_urls, strip_html)
        if cleaned == text:
            break
        text = cleaned
    return text
