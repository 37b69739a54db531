"""Reading answers out of model text: the one choice-letter parser, and the normalization it needs.

`extract_choice` is used wherever a multiple-choice answer is read: by the QA graders (HLE multiple choice) and by
the RouterBench replay (the letter each recorded answer gives, shown to the orchestrator and compared between
models). It sits at the bottom of the package so that no environment imports another for it.
"""

from __future__ import annotations

import re
import unicodedata

from orchestra.toolcalls import strip_think

_DASHES = dict.fromkeys(map(ord, "\u2212\u2010\u2011\u2012\u2013\u2014\u2015\ufe63\uff0d"), "-")
_QUOTES = {ord("\u2018"): "'", ord("\u2019"): "'", ord("\u201c"): '"', ord("\u201d"): '"', ord("\u00b4"): "'"}
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_UNWRAP = re.compile(r"\\(?:boxed|fbox|text|textbf|textit|textrm|mathrm|mathbf|mathit|operatorname|mbox)\s*\{")
_SPACING = re.compile(r"\\(?:,|;|:|!|\s|quad\b|qquad\b|left\b|right\b|displaystyle\b)")
_SIMPLE_GROUP = re.compile(r"([\^_])\{([-+]?[\w.]+)\}")


_LONE_LETTER = re.compile(r"^[\W_]*([a-z])[\W_]*$", re.IGNORECASE)
_CUE = re.compile(
    r"\b(?:answer|option|choice)(?:\s+(?:is|would\s+be|should\s+be))?\s*[:=\-]?\s*(?:\*\*)?"
    r"(?:\(([a-z])\)|(?-i:([A-Z]))(?![A-Za-z])|([a-z])(?=\s*[.):]?\s*(?:\*\*)?\s*(?:$|\n)))",
    re.IGNORECASE,
)
_LEADING = re.compile(r"^\s*(?:\*\*)?\(?([A-Z])(?:\)|\.|:|\s*-)(?:\s|$)")


def extract_choice(text: str) -> str | None:
    """The choice letter a response gives, upper-cased, or None when it names none unambiguously.

    Reads "B", "(b)", "**B**", "\\boxed{B}", "Answer: B", "The answer is b.", "option (C)", "B) foo", "B. foo".
    A lowercase letter counts only when it is clearly the answer (parenthesized or ending the line), so
    "The answer is a bird" gives None.
    """
    text = strip_think(clean_unicode(text))
    boxed = last_group(text, "\\boxed")
    if boxed is not None:
        text = boxed
    candidate = strip_latex(text)
    lone = _LONE_LETTER.match(candidate)
    if lone:
        return lone.group(1).upper()
    cues = list(_CUE.finditer(text))
    if cues:
        match = cues[-1]
        return next(g for g in match.groups() if g).upper()
    leading = _LEADING.match(text)
    return leading.group(1) if leading else None


def clean_unicode(text: str) -> str:
    """NFKC, accents dropped, unicode minus/dashes to "-", curly quotes to straight ones."""
    text = unicodedata.normalize("NFKC", text).translate(_DASHES).translate(_QUOTES)
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def strip_latex(text: str) -> str:
    """Remove math delimiters around the whole text; unwrap \\boxed/\\text-like groups; drop spacing macros."""
    text = text.strip().rstrip(".").strip()
    changed = True
    while changed:
        changed = False
        for left, right in _WRAPPERS:
            if len(text) > len(left) + len(right) - 1 and text.startswith(left) and text.endswith(right):
                text, changed = text[len(left):len(text) - len(right)].strip(), True
                break
    text = _unwrap_groups(text)
    text = _SPACING.sub(" ", text).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\%", "%")
    return _SIMPLE_GROUP.sub(r"\1\2", text).strip()


def last_group(text: str, command: str) -> str | None:
    """The brace-balanced argument of the last `command{...}` in `text`."""
    start = text.rfind(command + "{")
    if start < 0:
        return None
    i, depth, begin = start + len(command), 0, start + len(command) + 1
    for j in range(i, len(text)):
        depth += text[j] == "{"
        depth -= text[j] == "}"
        if depth == 0:
            return text[begin:j]
    return None


def _unwrap_groups(text: str) -> str:
    """`\\text{abc}` -> `abc` for every unwrap command, keeping the braces' content balanced."""
    while True:
        match = _UNWRAP.search(text)
        if not match:
            return text
        depth, end = 0, None
        for j in range(match.end() - 1, len(text)):
            depth += text[j] == "{"
            depth -= text[j] == "}"
            if depth == 0:
                end = j
                break
        if end is None:
            return text
        text = text[:match.start()] + text[match.end():end] + text[end + 1:]
