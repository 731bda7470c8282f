"""The judge prompts: what a pairwise or score judge is asked, its prompt versions, prefills and answer choices.

The judge sees the task exactly as the generator saw it (``prompt_messages`` of the answer, options included); under
``protocol="paper"`` it sees the question only, as in the paper's code (:func:`wow.protocol.paper_query`). The
replies are read by :mod:`wow.elicit.verdicts`; :mod:`wow.elicit.judges` sends the requests.

Example::

    from wow.elicit.judge_prompts import pairwise_messages
    messages = pairwise_messages(answer_a, answer_b)   # one user message: task, answer 1, answer 2, instructions
"""

from __future__ import annotations

from collections.abc import Sequence

from wow import WowError
from wow.protocol import is_paper, paper_query

#: Versions of the judge prompts below; part of every request's cache key. Bump when a prompt changes.
PAIRWISE_PROMPT_VERSION = "wow-pairwise-1"
SCORE_PROMPT_VERSION = "wow-score-1"
#: Prefills of the logprob mode and the choices read after them. The trailing space matters: tokenizers that split
#: digits (SmolLM2, Llama-3, Qwen) write ": 1" as ":", " ", "1"; without the space the next token is almost surely
#: " " and P("1") + P("2") is ~0.001 (measured on SmolLM2-135M) instead of ~0.9.
VERDICT_PREFILL = "Preferred output: "
VERDICT_CHOICES = ("1", "2")
SCORE_PREFILL = "Score: "
SCORE_CHOICES = tuple(str(s) for s in range(6))
MAX_SCORE = 5

_PAIRWISE_INTRO = (
    "Below are two answers to the same task. Decide which of the two is more correct.\n"
    "Judge correctness only: ignore length, style, tone and how sure an answer sounds. Both answers may be wrong; "
    "if so, prefer the one that comes closer to the right answer."
)
_PAIRWISE_OUTRO = (
    "Explain your judgement in at most 100 words. Then write one last line that reads exactly "
    '"Preferred output: 1" if answer 1 is more correct, or "Preferred output: 2" if answer 2 is more correct.'
)
_SCORE_INTRO = (
    "Below {what} to a task. Grade the correctness of {each} on an integer scale from 0 to 5, where 0 means "
    "completely wrong and 5 means fully correct. Wrong answers can be wrong by different amounts: give more points "
    "to an answer that comes closer to the right answer. Judge correctness only: ignore length, style and tone."
)
_SCORE_OUTRO_ONE = (
    "Explain your grade in at most 60 words. Then write one last line that reads exactly "
    '"Score: n", where n is an integer from 0 to 5.'
)
_SCORE_OUTRO_MANY = (
    "Explain your grades briefly, in at most 30 words per answer. Then end with {k} lines, one per answer in order, "
    'each of the form "Score for answer i: n", where i is the answer number and n an integer from 0 to 5.'
)
#: Under ``protocol: paper``: plain "Score: n" lines in order, the form the paper's parse reads.
_SCORE_OUTRO_PAPER = (
    "Explain your grades briefly, in at most 30 words per answer. Then end with {k} lines, one per answer in order, "
    'each of the form "Score: n", where n is an integer from 0 to 5.'
)
_OWN_COPY = (
    "Each answer was written for its own copy of the task; the copies differ only in the order of the options, "
    "so read each answer against its own copy."
)


# -- prompts -----------------------------------------------------------------------------------------------------
def render_task(messages: Sequence[dict]) -> str:
    """The task text of a generation prompt: the user turn, or every turn labelled by role when there are several."""
    if len(messages) == 1:
        return str(messages[0]["content"]).strip()
    return "\n\n".join(f"[{m['role']}]\n{str(m['content']).strip()}" for m in messages)


def _answer_blocks(answers: Sequence[dict], protocol: str = "wow") -> str:
    """Task + numbered answer blocks; one shared task when every answer saw the same prompt, else one task each.

    ``protocol="paper"``: the task is the paper's query (no options, no step-by-step instruction,
    :func:`wow.protocol.paper_query`), the same for every answer of a question.
    """
    if is_paper(protocol):
        tasks = [paper_query(a["prompt_messages"], a.get("permutation")) for a in answers]
    else:
        tasks = [render_task(a["prompt_messages"]) for a in answers]
    if all(t == tasks[0] for t in tasks):
        parts = [f"[Task]\n{tasks[0]}"]
        parts += [f"[Answer {i}]\n{a['text'].strip()}" for i, a in enumerate(answers, 1)]
    else:
        parts = [_OWN_COPY]
        for i, (t, a) in enumerate(zip(tasks, answers, strict=True), 1):
            parts.append(f"[Task, as shown to the author of answer {i}]\n{t}")
            parts.append(f"[Answer {i}]\n{a['text'].strip()}")
    return "\n\n".join(parts)


def pairwise_messages(first: dict, second: dict, protocol: str = "wow") -> list[dict]:
    """The pairwise judge prompt with ``first`` as answer 1 and ``second`` as answer 2 (one user message); under
    ``protocol="paper"`` the task is the question only (:func:`_answer_blocks`)."""
    body = "\n\n".join([_PAIRWISE_INTRO, _answer_blocks([first, second], protocol), _PAIRWISE_OUTRO])
    return [{"role": "user", "content": body}]


def score_messages(group: Sequence[dict], protocol: str = "wow") -> list[dict]:
    """The score judge prompt for a group of answers (one user message); asks for ``len(group)`` scores. Under
    ``protocol="paper"`` the task is the question only (:func:`_answer_blocks`)."""
    k = len(group)
    if k == 0:
        raise WowError("a score prompt needs at least one answer.")
    intro = _SCORE_INTRO.format(
        what="is one answer" if k == 1 else f"are {k} answers", each="the answer" if k == 1 else "each answer"
    )
    outro = _SCORE_OUTRO_ONE if k == 1 else _SCORE_OUTRO_MANY.format(k=k)
    if is_paper(protocol) and k > 1:
        outro = _SCORE_OUTRO_PAPER.format(k=k)
    return [{"role": "user", "content": "\n\n".join([intro, _answer_blocks(group, protocol), outro])}]
