"""Graders: table-driven cases for exact, numeric, choice and list matching, and the LLM judge's verdict parsing."""

from __future__ import annotations

import pytest

from orchestra.backends.pricing import ModelPrice
from orchestra.backends.scripted import ScriptedBackend
from orchestra.envs.qa.graders import (
    contains_match,
    exact_match,
    extract_choice,
    extract_final_answer,
    grade_answer,
    list_match,
    normalize_answer,
    numeric_match,
    parse_number,
    split_list,
)
from orchestra.envs.qa.judge import LLMJudge, parse_verdict
from orchestra.errors import BackendError, ConfigError
from orchestra.types import Completion

# --- normalized exact match ---------------------------------------------------------------------------------------

EXACT = [
    ("Jane Ballou", "Jane Ballou", True),
    ("  jane   BALLOU ", "Jane Ballou", True),  # case, whitespace
    ("Jane Ballou.", "Jane Ballou", True),  # trailing period
    ("The Battle of Hastings", "Battle of Hastings.", True),  # articles
    ("Mesut Özil", "Mesut Ozil", True),  # accents
    ("Jane\u00a0Ballou", "Jane Ballou", True),  # unicode space
    ("Reve d’Or", "Reve d'Or", True),  # curly quote
    ("$5$", "5", True),  # LaTeX math delimiters
    ("\\boxed{42}", "42", True),
    ("\\text{No}", "No", True),
    ("$\\text{Yes}$", "yes", True),
    ("10^{20}", "10^20", True),
    ("$n \\in\\{2,3,4,6\\}$.", "$n \\in\\{2,3,4,6\\}$.", True),
    ("4(10^{20} - 0.5)/(10^{40} + 1)", "4(10^{20} - 0.5)/(10^{40} + 1)", True),
    ("\\dfrac{1}{2}", "\\frac{1}{2}", True),
    ("−5", "-5", True),  # unicode minus
    ("Jean-Paul", "Jean Paul", True),
    # wrong answers that naive normalization would accept
    ("12", "123", False),
    ("-5", "5", False),  # the sign survives
    ("1/2", "12", False),  # the slash survives
    ("1.5", "15", False),  # the decimal point survives
    (".5", "5", False),
    ("A, B", "B", False),  # a letter is not an article
    ("No", "Yes", False),
    ("", "", False),  # an empty gold matches nothing
]


@pytest.mark.parametrize(("predicted", "gold", "expected"), EXACT)
def test_exact_match(predicted: str, gold: str, expected: bool) -> None:
    assert exact_match(predicted, gold) is expected


def test_normalize_answer_forms() -> None:
    assert normalize_answer("The Battle of Hastings.") == "battle of hastings"
    assert normalize_answer("1,000 people") == "1000 people"
    assert normalize_answer("a") == "a"  # a lone article-like word is kept


# --- numbers -------------------------------------------------------------------------------------------------------

NUMERIC = [
    ("1,000", "1000", {}, True),
    ("1,000,000", "1e6", {}, True),
    ("0.5", "1/2", {}, True),
    ("0.5", "\\frac{1}{2}", {}, True),
    ("-\\frac{1}{2}", "-0.5", {}, True),
    ("-0.5", "0.5", {}, False),
    ("-3", "-3", {}, True),
    ("5 km", "5", {}, True),  # a unit on one side only
    ("5km", "5 km", {}, True),
    ("5 km", "5 m", {}, False),  # different units
    ("87 years", "87", {}, True),
    ("10 years", "12 years.", {}, False),
    ("37th", "37", {}, True),  # ordinal suffix
    ("37%", "37", {}, True),
    ("37%", "0.37", {}, False),  # percent vs fraction only when told
    ("37%", "0.37", {"percent": True}, True),
    ("0.37", "37 percent", {"percent": True}, True),
    ("1.5e3", "1500", {}, True),
    ("1.5 \\times 10^{3}", "1500", {}, True),
    ("1.5 × 10^3", "1.5e3", {}, True),
    ("10^{20}", "1e20", {}, True),
    ("2 million", "2,000,000", {}, True),
    ("$5", "5", {}, True),
    ("0.3333", "1/3", {}, True),  # within the default relative tolerance
    ("0.33", "1/3", {}, False),
    ("0.33", "1/3", {"rel_tol": 0.02}, True),
    ("1e-12", "0", {"abs_tol": 1e-9}, True),
    ("12", "123", {}, False),
    ("1329", "1330", {"rel_tol": 0.01}, False),  # integers compare exactly whatever the tolerance
    ("2.302", "2.3", {}, True),
    ("2.4", "2.3", {}, False),
]


@pytest.mark.parametrize(("predicted", "gold", "tolerance", "expected"), NUMERIC)
def test_numeric_match(predicted: str, gold: str, tolerance: dict, expected: bool) -> None:
    assert numeric_match(predicted, gold, **tolerance) is expected


@pytest.mark.parametrize("text", ["12 or 13", "12 or 3", "x = 5", "5 apples and 3 oranges", "about", "1/0",
                                  "4(10^{20} - 0.5)/(10^{40} + 1)", "between 3 and 4"])
def test_parse_number_refuses_what_is_not_one_number(text: str) -> None:
    assert parse_number(text) is None


def test_parse_number_reads_units_and_integers() -> None:
    n = parse_number("−1,234 km")
    assert n is not None and n.integer == -1234 and n.unit == "km"
    assert parse_number("2.5%").percent  # type: ignore[union-attr]


# --- multiple choice -----------------------------------------------------------------------------------------------

CHOICE = [
    ("B", "B"),
    ("(B)", "B"),
    ("b", "B"),
    ("**B**", "B"),
    ("\\boxed{B}", "B"),
    ("Answer: B", "B"),
    ("Final answer: (d)", "D"),
    ("The answer is b.", "B"),
    ("The correct answer is (C) because the rest fail.", "C"),
    ("I think it's option D.", "D"),
    ("B) foo", "B"),
    ("B. The Lorentz force", "B"),
    ("Explanation: long reasoning.\nAnswer: E\nConfidence: 80%", "E"),
    ("<think>maybe A</think>Answer: C", "C"),
    ("The answer is a bird", None),  # an article is not a choice
    ("A cat sat there", None),
    ("None of the above apply here", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "letter"), CHOICE)
def test_extract_choice(text: str, letter: str | None) -> None:
    assert extract_choice(text) == letter


@pytest.mark.parametrize(("predicted", "gold", "correct"), [
    ("The answer is b.", "B", True),
    ("(F)", "F", True),
    ("Answer: C", "B", False),
    ("I cannot decide", "B", False),
])
async def test_grade_choice(predicted: str, gold: str, correct: bool) -> None:
    grade = await grade_answer(predicted, gold, "multipleChoice")
    assert grade.correct is correct and grade.method == "choice"


# --- lists ---------------------------------------------------------------------------------------------------------

SPLITS = [
    ("Jane, John and Bob", ["Jane", "John", "Bob"]),
    ("Jane, John, and Bob", ["Jane", "John", "Bob"]),
    ("x; y", ["x", "y"]),
    ("Mulona barnesi and mulona schausi", ["Mulona barnesi", "mulona schausi"]),
    ("(a) Yes; (b) HA, TW, and AS; (c) True.", ["(a) Yes", "(b) HA, TW, and AS", "(c) True"]),
    ("\\{2,3,4,6\\}", ["2", "3", "4", "6"]),
    ("[1,2],[3,4]", ["[1,2]", "[3,4]"]),
    ("(1, 2)", None),  # an ordered tuple
    ("[1, 2, 3]", None),
    ("1,000", None),  # a number, not a list
    ("Warner Music Group", None),
]


@pytest.mark.parametrize(("text", "items"), SPLITS)
def test_split_list(text: str, items: list[str] | None) -> None:
    assert split_list(text) == items


LISTS = [
    ("Bob, Jane and John", "Jane, John and Bob", True),
    ("John; Jane", "Jane and John", True),
    ("jane, JOHN", "Jane and John", True),
    ("1000, 2", "2, 1,000", True),
    ("0.5 and 3", "3, 1/2", True),
    ("(a) yes; (b) HA, AS, TW; (c) true", "(a) Yes; (b) HA, TW, and AS; (c) True.", True),
    ("(a) yes; (b) HA, TW; (c) true", "(a) Yes; (b) HA, TW, and AS; (c) True.", False),
    ("Jane", "Jane and John", False),
    ("Jane, John, Bob", "Jane and John", False),  # an extra item is wrong
    ("Jane, Jane", "Jane, John", False),  # each gold item needs its own match
]


@pytest.mark.parametrize(("predicted", "gold", "expected"), LISTS)
def test_list_match(predicted: str, gold: str, expected: bool) -> None:
    assert list_match(predicted, gold) is expected


# --- extraction and containment ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "answer"), [
    ("Explanation: because.\nExact Answer: 42\nConfidence: 80%", "42"),
    ("so the answer is 42.", "42"),
    ("**Final answer:** Jane Ballou", "Jane Ballou"),
    ("We get \\boxed{\\frac{1}{2}} in the end.", "\\frac{1}{2}"),
    ("<think>answer: 7</think>8", "8"),
    ("Answering this needs care. 42", "Answering this needs care. 42"),
])
def test_extract_final_answer(text: str, answer: str) -> None:
    assert extract_final_answer(text) == answer


@pytest.mark.parametrize(("predicted", "gold", "expected"), [
    ("Her name would be Jane Ballou.", "Jane Ballou", True),
    ("It ranks 37th.", "37th", True),
    ("Jane Smith", "Jane Ballou", False),
    ("Ballou, Jane", "Jane Ballou", False),  # in order only
    ("It ranks 137th.", "37th", False),  # whole tokens only
])
def test_contains_match(predicted: str, gold: str, expected: bool) -> None:
    assert contains_match(predicted, gold) is expected


# --- grade_answer without a judge ----------------------------------------------------------------------------------

GRADES = [
    ("4(10^{20} - 0.5)/(10^{40} + 1)", "4(10^{20} - 0.5)/(10^{40} + 1)", "exactMatch", True, "exact"),
    ("Exact Answer: 1/2\nConfidence: 90%", "\\frac{1}{2}", "exactMatch", True, "numeric"),
    ("123", "12", "exactMatch", False, "numeric"),
    ("$5$", "$5$", "exactMatch", True, "exact"),
    ("Answer: no.", "No", "exactMatch", True, "exact"),
    ("Her name would be Jane Ballou.", "Jane Ballou", "exactMatch", False, "exact"),  # no containment for HLE
    ("Her name would be Jane Ballou.", "Jane Ballou", "freeform", True, "contains"),
    ("It would need to be 87 years earlier.", "87", "freeform", True, "contains"),
    ("87", "87 years", "freeform", True, "numeric"),
    ("Two million", "Two million.", "freeform", True, "exact"),
    ("2,000,000", "Two million.", "freeform", False, "exact"),  # the documented lower bound
    ("Jane Smith", "Jane Ballou", "freeform", False, "exact"),
    ("Schausi and Barnesi", "Barnesi and schausi", "freeform", True, "list"),
]


@pytest.mark.parametrize(("predicted", "gold", "answer_type", "correct", "method"), GRADES)
async def test_grade_answer_offline(predicted: str, gold: str, answer_type: str, correct: bool, method: str) -> None:
    grade = await grade_answer(predicted, gold, answer_type)
    assert (grade.correct, grade.method) == (correct, method)
    assert grade.cost_usd == 0.0


@pytest.mark.parametrize("predicted", [None, "", "   "])
async def test_missing_answer_is_wrong(predicted: str | None) -> None:
    grade = await grade_answer(predicted, "B", "multipleChoice")
    assert not grade.correct and grade.method == "no_answer"


async def test_unknown_answer_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="answer_type"):
        await grade_answer("x", "x", "essay")


# --- the LLM judge -------------------------------------------------------------------------------------------------

WELL_FORMED = """extracted_final_answer: 1/2
reasoning: The response gives 1/2, which equals the correct answer 0.5.
It matches exactly.
correct: yes
confidence: 85%"""

VERDICTS = [
    (WELL_FORMED, True, "1/2", 85, True),
    ("**extracted_final_answer:** 7\n**reasoning:** 7 is not 8.\n**correct:** no\n**confidence:** 100", False, "7",
     100, True),
    ("Extracted final answer: None\nReasoning: no answer given\nCorrect: No\nConfidence: 100", False, None, 100, True),
    ('{"extracted_final_answer": "Paris", "reasoning": "same city", "correct": "yes", "confidence": 90}', True,
     "Paris", 90, True),
    ('Here is my verdict:\n```json\n{"extracted_final_answer": "B", "reasoning": "ok", "correct": true, '
     '"confidence": "70%"}\n```', True, "B", 70, True),
    ('<think>correct: no? let me check</think>extracted_final_answer: 3\nreasoning: fine\ncorrect: yes\n'
     'confidence: 250', True, "3", 100, True),  # reasoning block ignored; confidence clamped
    ("extracted_final_answer: 3\nreasoning: fine\ncorrect: Yes.", True, "3", None, True),  # no confidence
    ("I think the response is right.", False, None, None, False),  # no fields at all
    ("extracted_final_answer: 3\nreasoning: unsure\ncorrect: maybe\nconfidence: 50", False, None, None, False),
    ('{"correct": "perhaps"}', False, None, None, False),
    ("", False, None, None, False),
]


@pytest.mark.parametrize(("reply", "correct", "extracted", "confidence", "parsed"), VERDICTS)
def test_parse_verdict(reply: str, correct: bool, extracted: str | None, confidence: int | None,
                       parsed: bool) -> None:
    verdict = parse_verdict(reply)
    assert (verdict.correct, verdict.parsed) == (correct, parsed)
    if parsed:
        assert (verdict.extracted_final_answer, verdict.confidence) == (extracted, confidence)
    else:
        assert verdict.error


def test_multiline_reasoning_is_kept() -> None:
    assert parse_verdict(WELL_FORMED).reasoning.endswith("It matches exactly.")


def _priced_judge(reply: str) -> tuple[LLMJudge, ScriptedBackend]:
    backend = ScriptedBackend([reply], model="judge", price=ModelPrice(1.0, 2.0))
    return LLMJudge(backend), backend


async def test_judge_grades_and_reports_its_cost() -> None:
    judge, backend = _priced_judge(WELL_FORMED)
    grade = await grade_answer("The result is 1/2.", "0.5", "exactMatch", judge, question="What is 1 - 1/2?")
    assert grade.correct and grade.method == "judge" and grade.confidence == 85
    assert grade.extracted == "1/2"
    assert grade.cost_usd > 0
    sent = backend.requests[0][0].content
    assert "What is 1 - 1/2?" in sent and "The result is 1/2." in sent and "[correct_answer]: 0.5" in sent


async def test_judge_overrules_offline_match() -> None:
    judge, _ = _priced_judge("extracted_final_answer: 5\nreasoning: wrong units\ncorrect: no\nconfidence: 100")
    grade = await grade_answer("5", "5", "exactMatch", judge)
    assert not grade.correct and grade.method == "judge"


async def test_unparseable_judge_reply_is_incorrect_with_reason_and_cost() -> None:
    judge, _ = _priced_judge("Looks right to me!")
    grade = await grade_answer("Jane Ballou", "Jane Ballou", "freeform", judge)
    assert not grade.correct
    assert "could not be parsed" in grade.details and "Looks right" in grade.details
    assert grade.cost_usd > 0  # the failed judge call was still paid for


async def test_multiple_choice_never_calls_the_judge() -> None:
    judge, backend = _priced_judge(WELL_FORMED)
    grade = await grade_answer("Answer: B", "B", "multipleChoice", judge)
    assert grade.correct and grade.method == "choice" and grade.cost_usd == 0.0
    assert backend.requests == []


async def test_judge_infrastructure_failure_propagates() -> None:
    class DownBackend(ScriptedBackend):
        async def complete(self, messages, tools, sampling) -> Completion:  # type: ignore[override]
            raise BackendError("endpoint down", retryable=True)

    with pytest.raises(BackendError):
        await grade_answer("x", "y", "exactMatch", LLMJudge(DownBackend([])))
