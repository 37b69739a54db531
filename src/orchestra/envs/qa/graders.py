"""Answer graders for question answering: normalized exact match, numeric, multiple choice, lists, containment.

Every grader here is a pure function of (predicted, gold) text; `grade_answer` picks one per answer type and, when
given an LLM judge (`orchestra.envs.qa.judge`), defers to it where the benchmark does.

Choice of grader (`grade_answer`)
- HLE `multipleChoice`: the choice letter extracted from the prediction equals the gold letter (never the judge: a
  letter needs no judgement).
- HLE `exactMatch`: the judge when given (as HLE itself grades); else exact, numeric, then list match.
- FRAMES (`freeform`): the judge when given (the paper's setting); else exact, numeric, list, then containment of
  the gold answer's normalized tokens, in order, in the prediction. Without a judge FRAMES grading is roughly a lower
  bound: paraphrases ("Two million." vs "2,000,000", "This was Mesut Ozil." vs "Mesut Özil") are missed. It is not a
  strict one: containment accepts a hedged answer that names the gold among other candidates.

Invariants
- Normalization never merges answers that differ in meaning the way naive SQuAD normalization does: signs, fraction
  slashes, decimal points and commas between digits survive, so "-5" != "5", "1/2" != "12", "1,2" != "12".
- Integers written as integers compare exactly ("1329" != "1330" whatever the tolerance); any other pair of numbers
  compares with `math.isclose(rel_tol, abs_tol)`.
- A prediction that is missing (no final answer) is wrong, never an error.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Literal

from orchestra.answers import clean_unicode, extract_choice, last_group, strip_latex
from orchestra.errors import ConfigError
from orchestra.toolcalls import strip_think

if TYPE_CHECKING:
    from orchestra.envs.qa.judge import LLMJudge

AnswerType = Literal["exactMatch", "multipleChoice", "freeform"]
ANSWER_TYPES: tuple[str, ...] = ("exactMatch", "multipleChoice", "freeform")
DEFAULT_REL_TOL = 1e-3
DEFAULT_ABS_TOL = 1e-9


@dataclass(frozen=True, slots=True)
class Grade:
    """The verdict on one answer: `method` names the grader that decided; `cost_usd` is what grading cost."""

    correct: bool
    method: str
    details: str = ""
    cost_usd: float = 0.0
    extracted: str | None = None
    confidence: int | None = None


async def grade_answer(
    predicted: str | None,
    gold: str,
    answer_type: str,
    judge: LLMJudge | None = None,
    *,
    question: str = "",
    rel_tol: float = DEFAULT_REL_TOL,
    abs_tol: float = DEFAULT_ABS_TOL,
    percent: bool = False,
) -> Grade:
    """Grade `predicted` against `gold` with the grader `answer_type` calls for (see the module docstring).

    `question` is shown to the judge. `percent` lets "37%" equal "0.37". Judge infrastructure failures
    (`BackendError`) propagate: an unreachable judge is not evidence that the answer was wrong.
    """
    if answer_type not in ANSWER_TYPES:
        raise ConfigError(f"answer_type {answer_type!r} is not one of {', '.join(ANSWER_TYPES)}")
    if predicted is None or not predicted.strip():
        return Grade(False, "no_answer", "no final answer")
    if answer_type == "multipleChoice":
        return grade_choice(predicted, gold)
    if judge is not None:
        verdict = await judge.judge(question, predicted, gold)
        return Grade(verdict.correct, "judge", verdict.summary(), verdict.cost_usd,
                     verdict.extracted_final_answer, verdict.confidence)
    return grade_offline(predicted, gold, answer_type, rel_tol=rel_tol, abs_tol=abs_tol, percent=percent)


def grade_offline(
    predicted: str,
    gold: str,
    answer_type: str,
    *,
    rel_tol: float = DEFAULT_REL_TOL,
    abs_tol: float = DEFAULT_ABS_TOL,
    percent: bool = False,
) -> Grade:
    """The judge-free graders in order: exact, numeric, list, and (freeform only) containment."""
    if answer_type == "multipleChoice":
        return grade_choice(predicted, gold)
    answer = extract_final_answer(predicted)
    if exact_match(answer, gold):
        return Grade(True, "exact", extracted=answer)
    p, g = parse_number(answer), parse_number(gold)
    if p is not None and g is not None:
        ok = numbers_match(p, g, rel_tol=rel_tol, abs_tol=abs_tol, percent=percent)
        return Grade(ok, "numeric", f"{p.text} vs {g.text}", extracted=answer)
    if split_list(gold) is not None:
        return Grade(list_match(answer, gold), "list", extracted=answer)
    if answer_type == "freeform" and contains_match(predicted, gold):
        return Grade(True, "contains", "gold tokens found in the prediction (no judge)", extracted=answer)
    return Grade(False, "exact", extracted=answer)


# --- normalization -------------------------------------------------------------------------------------------------

_REMOVE = re.compile(r"[!\"#&'`?@;~|]")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_ARTICLES = re.compile(r"\b(?:a|an|the) (?=[a-z]{2})")
_ANSWER_LINE = re.compile(
    r"^[\s*#>-]*(?:the\s+)?(?:(?:final|exact|correct)\s+)?answer\s*(?:\*\*)?\s*(?:is\s*:?|:|=)\s*(?:\*\*)?\s*(.+)$",
    re.IGNORECASE,
)


def normalize_answer(text: str) -> str:
    """The comparison form of an answer: case, whitespace, punctuation, articles, unicode and LaTeX folded away.

    Kept: characters that carry meaning in short answers (- + / ^ * = < > % : brackets), and "." or "," between
    digits (thousands separators are dropped: "1,000" -> "1000").
    """
    text = " ".join(strip_latex(clean_unicode(text)).lower().split())
    # articles go before punctuation becomes space, so "a, b" keeps its "a"
    text = _ARTICLES.sub("", text) if _ARTICLES.sub("", text).strip() else text
    text = _THOUSANDS.sub("", text)
    text = re.sub(r",|\.(?!\d)", " ", text)
    text = re.sub(r"(?<=[a-z])-(?=[a-z])", " ", text)
    return " ".join(_REMOVE.sub("", text).split())


def exact_match(predicted: str, gold: str) -> bool:
    """Equal after `normalize_answer` (and not both empty)."""
    p, g = normalize_answer(predicted), normalize_answer(gold)
    return bool(g) and p == g


def extract_final_answer(text: str) -> str:
    """The answer part of a response: the last \\boxed{...}, else the last "Answer: ..." line, else the text."""
    text = strip_think(text)
    boxed = last_group(text, "\\boxed")
    if boxed is not None:
        return boxed.strip()
    found = None
    for line in text.splitlines():
        match = _ANSWER_LINE.match(line.strip())
        if match and match.group(1).strip(" *"):
            found = match.group(1).strip(" *")
    if found is None:
        match = re.search(r"\bthe\s+(?:final\s+|correct\s+)?answer\s+is\s*:?\s*(.+)$", text, re.IGNORECASE | re.DOTALL)
        found = match.group(1) if match and len(match.group(1)) < 200 else None
    answer = (found or text).strip()
    return answer.rstrip(". ").strip() or answer


# --- numbers --------------------------------------------------------------------------------------------------------

_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:e[-+]?\d+)?|[-+]?\.\d+(?:e[-+]?\d+)?"
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9, "trillion": 10**12}
_UNIT = re.compile(r"^[a-z°µμ][a-z0-9°µμ/^.\-\s]*$")
_UNIT_DIGIT = re.compile(r"(?<![a-z^\-+])\d")
_NOT_UNIT_WORDS = frozenset({"or", "and", "to", "plus", "minus", "times", "of", "is"})
_ORDINAL = re.compile(r"^(?:st|nd|rd|th)$")


@dataclass(frozen=True, slots=True)
class Number:
    """A number read from an answer. `integer` is set when it was written as a whole number (compared exactly)."""

    value: float
    text: str
    integer: int | None = None
    unit: str = ""
    percent: bool = False


def parse_number(text: str) -> Number | None:
    """A number with an optional sign, thousands separators, scale word ("2 million"), unit ("5 km"), percent,
    ordinal suffix ("37th"), scientific notation ("1.5e3", "1.5 \\times 10^{3}"), or a simple fraction ("1/2",
    "\\frac{1}{2}"). None when the text is not just one number (e.g. "12 or 13", "x = 5")."""
    s = strip_latex(clean_unicode(text)).strip().lower()
    s = s[:-1].strip() if s.endswith(".") else s
    s = re.sub(r"\s+", " ", s)
    currency = ""
    if s and s[0] in "$€£¥":
        currency, s = s[0], s[1:].strip()
    frac = re.fullmatch(rf"([-+]?)\\frac\{{({_NUM})\}}\{{({_NUM})\}}", s) or re.fullmatch(
        rf"([-+]?)\(?({_NUM})\)?\s*/\s*\(?({_NUM})\)?", s)
    if frac:
        return _fraction(frac.group(1), frac.group(2), frac.group(3), text, currency)
    sci = re.fullmatch(rf"({_NUM})\s*(?:\\times|×|x|\*|\\cdot|·)\s*10\s*\^\s*\{{?([-+]?\d+)\}}?(.*)", s)
    if sci:
        value = float(sci.group(1).replace(",", "")) * 10.0 ** int(sci.group(2))
        return _with_suffix(value, None, sci.group(3), text, currency)
    power = re.fullmatch(r"([-+]?)10\s*\^\s*\{?([-+]?\d+)\}?(.*)", s)
    if power:
        exponent = int(power.group(2))
        sign = -1 if power.group(1) == "-" else 1
        integer = sign * 10**exponent if 0 <= exponent <= 400 else None
        return _with_suffix(sign * 10.0 ** min(exponent, 308), integer, power.group(3), text, currency)
    plain = re.fullmatch(rf"({_NUM})(.*)", s)
    if not plain:
        return None
    literal = plain.group(1).replace(",", "")
    integer = int(literal) if re.fullmatch(r"[-+]?\d+", literal) else None
    return _with_suffix(float(literal), integer, plain.group(2), text, currency)


def numbers_match(
    p: Number, g: Number, *, rel_tol: float = DEFAULT_REL_TOL, abs_tol: float = DEFAULT_ABS_TOL, percent: bool = False
) -> bool:
    """Same number, and same unit when both name one. With `percent`, "37%" also equals 0.37."""
    if p.unit and g.unit and _unit_key(p.unit) != _unit_key(g.unit):
        return False
    if p.integer is not None and g.integer is not None and p.percent == g.percent:
        return p.integer == g.integer
    pairs = [(p.value, g.value)]
    if percent and p.percent != g.percent:
        pairs.append((p.value / 100, g.value) if p.percent else (p.value, g.value / 100))
    return any(math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol) for a, b in pairs)


def numeric_match(predicted: str, gold: str, **tolerance: float | bool) -> bool:
    """Both parse as numbers (`parse_number`) and match (`numbers_match`)."""
    p, g = parse_number(predicted), parse_number(gold)
    return p is not None and g is not None and numbers_match(p, g, **tolerance)  # type: ignore[arg-type]


def _fraction(sign: str, num: str, den: str, text: str, currency: str) -> Number | None:
    try:
        value = Fraction(num.replace(",", "")) / Fraction(den.replace(",", ""))
    except ZeroDivisionError:
        return None
    value = -value if sign == "-" else value
    integer = int(value) if value.denominator == 1 else None
    return Number(float(value), text, integer, currency)


def _with_suffix(value: float, integer: int | None, suffix: str, text: str, currency: str) -> Number | None:
    suffix = suffix.strip()
    scale = re.match(r"^(thousand|million|billion|trillion)\b\s*", suffix)
    if scale:
        factor = _SCALES[scale.group(1)]
        value *= factor
        if integer is not None:
            integer *= factor
        elif value.is_integer() and abs(value) < 1e15:
            integer = int(value)
        suffix = suffix[scale.end():]
    if suffix in ("%", "percent"):
        return Number(value, text, integer, currency, percent=True)
    if not suffix or _ORDINAL.match(suffix):
        return Number(value, text, integer, currency)
    words = suffix.split()
    if len(suffix) > 24 or len(words) > 3 or not _UNIT.match(suffix) or _UNIT_DIGIT.search(suffix):
        return None
    if _NOT_UNIT_WORDS.intersection(words):
        return None
    return Number(value, text, integer, currency or suffix)


def _unit_key(unit: str) -> str:
    unit = unit.strip().rstrip(".")
    return unit[:-1] if len(unit) > 3 and unit.endswith("s") else unit


def grade_choice(predicted: str, gold: str) -> Grade:
    """Correct iff the extracted letter equals the gold letter."""
    letter = extract_choice(predicted)
    gold_letter = extract_choice(gold) or gold.strip().upper()
    if letter is None:
        return Grade(False, "choice", "no choice letter found in the answer")
    return Grade(letter == gold_letter, "choice", f"{letter} vs {gold_letter}", extracted=letter)


# --- lists and containment ------------------------------------------------------------------------------------------

_OPEN, _CLOSE = "([{", ")]}"


def split_list(text: str) -> list[str] | None:
    """The items of a list answer ("a, b and c", "x; y"), or None when the text is one item.

    Splits at top level only (never inside brackets), on ";" if present, else ",", else " and "/" & ". A whole
    answer in () or [] is an ordered tuple and is not split; a number with thousands separators is one item.
    """
    s = strip_latex(clean_unicode(text)).strip()
    s = s[:-1].strip() if s.endswith(".") else s
    if not s or parse_number(s) is not None or _wrapped(s, "(", ")") or _wrapped(s, "[", "]"):
        return None
    s = s.replace("\\{", "{").replace("\\}", "}")
    if _wrapped(s, "{", "}"):
        s = s[1:-1]
    for separator in (";", ","):
        parts = _split_top(s, separator)
        if len(parts) > 1:
            items = [p.strip() for p in parts if p.strip()]
            if separator == "," and not re.match(r"(?:and|&)\s", items[-1], re.IGNORECASE):
                # "a, b and c": the last comma item holds two items
                items[-1:] = [p for p in re.split(r"\s+(?:and|&)\s+", items[-1], flags=re.IGNORECASE) if p]
            items = [re.sub(r"^(?:and|&)\s+", "", i, flags=re.IGNORECASE) for i in items]
            return items if len(items) > 1 else None
    parts = [p.strip() for p in re.split(r"\s+(?:and|&)\s+", s, flags=re.IGNORECASE) if p.strip()]
    if len(parts) > 1 and _depth_zero(s):
        return parts
    return None


def list_match(predicted: str, gold: str, *, _depth: int = 0) -> bool:
    """Order-insensitive: every gold item matches a distinct predicted item (exact, numeric or as a sub-list)."""
    gold_items = split_list(gold)
    if gold_items is None:
        return False
    pred_items = split_list(predicted) or [predicted]
    if len(pred_items) != len(gold_items):
        return False
    remaining = list(pred_items)
    for g in gold_items:
        hit = next((p for p in remaining if _item_match(p, g, _depth)), None)
        if hit is None:
            return False
        remaining.remove(hit)
    return True


def contains_match(predicted: str, gold: str) -> bool:
    """The gold answer's normalized tokens appear, contiguous and in order, among the prediction's tokens."""
    g = normalize_answer(extract_final_answer(gold)).split()
    p = normalize_answer(predicted).split()
    if not g or len(g) > len(p):
        return False
    return any(p[i:i + len(g)] == g for i in range(len(p) - len(g) + 1))


def _item_match(predicted: str, gold: str, depth: int) -> bool:
    if exact_match(predicted, gold) or numeric_match(predicted, gold):
        return True
    return depth < 1 and list_match(predicted, gold, _depth=depth + 1)


def _split_top(text: str, separator: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        if c in _OPEN:
            depth += 1
        elif c in _CLOSE:
            depth = max(0, depth - 1)
        elif c == separator and depth == 0:
            if separator == "," and re.match(r"\d,\d{3}(?!\d)", text[max(0, i - 1):i + 5]):
                continue
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _wrapped(text: str, left: str, right: str) -> bool:
    """True when `left` at the start is closed by `right` at the very end (not earlier)."""
    if not (text.startswith(left) and text.endswith(right)):
        return False
    depth = 0
    for i, c in enumerate(text):
        depth += c in _OPEN
        depth -= c in _CLOSE
        if depth == 0 and i < len(text) - 1:
            return False
    return True


def _depth_zero(text: str) -> bool:
    return not any(c in _OPEN for c in text)
