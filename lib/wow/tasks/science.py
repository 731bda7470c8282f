"""``science``: numeric physics/chemistry problems with units; correct within 5 % relative error.

Generated (default): one of several seeded problem templates (kinematics, free fall, projectile range, ideal gas,
Ohm's law, electric power, kinetic energy, heating water, density, wave speed) with random input values; the gold
value is computed from the values exactly as printed, with every constant stated in the problem. Loaded
(``path=`` the hub id :data:`HUB_ID`, or ``data_files=`` a local file): SciBench rows (``problem_text``, ``unit``,
``answer_number``; gold = ``float(answer_number)`` with commas removed and the Unicode minus mapped to ``-``).

Grading, with ``rel_err = |answer - gold| / |gold|`` (``|answer|`` when gold is 0):

* ``is_correct``: ``rel_err <= 0.05``, boundary INCLUSIVE (5 % off counts as right; a relative slack of 1e-9
  absorbs float rounding, so 105 against 100 is right and 105.01 is wrong). The paper's alignment code uses a
  strict ``<``; its preference code truncates the gold to an int (a bug we do not copy);
* ``correctness``: 1.0 when correct, else ``max(0, 1 - rel_err)``;
* ``raw_label``: ``-rel_err``.
"""

from __future__ import annotations

import math
import random
import re

from wow import WowError
from wow.tasks.base import UNPARSED, Extraction, Grade, Question, Task
from wow.tasks.extract import EXPONENT, NUMBER, last_match, to_number
from wow.tasks.sources import field, load_rows, row_error, seeded_sample

HUB_ID = "xw27/scibench"
TOLERANCE = 0.05
_SLACK = 1e-9

_INSTRUCTION = (
    "Solve the following science problem step by step. The problem states the unit the answer must be given in; "
    "do not write the unit in the final answer. Give the final answer as a decimal number.\n"
)
_NUM = rf"({NUMBER}){EXPONENT}"
EXTRACTION = Extraction(
    instruction=(
        "What is the final numerical answer in your solution? Reply with the number only (no unit), starting with "
        '"The final answer is". If your solution gave no number, reply "None".'
    ),
    prefix="The final answer is",
    pattern=rf"(?i)The\s+final\s+answer\s+is\s*:?\s*(?:about\s+|approximately\s+|=\s*)?\$?\**\s*{_NUM}",
)
_DIRECT = [
    rf"(?i)(?:final\s+answer|answer|result)\s*(?:is|:|=|\u2248)\s*(?:about\s+|approximately\s+)?\$?\**\s*{_NUM}"
]


def _v(rng: random.Random, lo: float, hi: float, digits: int) -> float:
    """A random value in [lo, hi] rounded to ``digits`` significant digits."""
    x = rng.uniform(lo, hi)
    return float(f"{x:.{digits}g}")


def _fmt(x: float) -> str:
    return f"{x:g}"


def _kinematics(rng, d):
    v0, a, t = _v(rng, 0, 30, d), _v(rng, 0.5, 5, d), _v(rng, 2, 20, d)
    return (
        f"A car moving at {_fmt(v0)} m/s accelerates uniformly at {_fmt(a)} m/s^2 for {_fmt(t)} s. "
        "How far does it travel during that time?",
        "m",
        v0 * t + 0.5 * a * t * t,
    )


def _free_fall(rng, d):
    h = _v(rng, 5, 200, d)
    return (
        f"A stone is dropped from rest from a height of {_fmt(h)} m. Taking g = 9.81 m/s^2 and ignoring air "
        "resistance, how long does it take to reach the ground?",
        "s",
        math.sqrt(2 * h / 9.81),
    )


def _projectile(rng, d):
    v, angle = _v(rng, 5, 50, d), rng.choice([15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 70])
    return (
        f"A ball is launched from level ground at {_fmt(v)} m/s, {angle} degrees above the horizontal. Taking "
        "g = 9.81 m/s^2 and ignoring air resistance, how far away does it land?",
        "m",
        v * v * math.sin(math.radians(2 * angle)) / 9.81,
    )


def _ideal_gas(rng, d):
    n, temp, vol = _v(rng, 0.1, 5, d), _v(rng, 250, 600, d), _v(rng, 1, 50, d)
    return (
        f"{_fmt(n)} mol of an ideal gas at {_fmt(temp)} K fills a container of {_fmt(vol)} L. Taking "
        "R = 8.314 J/(mol K), what is the pressure of the gas?",
        "kPa",
        n * 8.314 * temp / vol,
    )


def _ohm(rng, d):
    r, i = _v(rng, 1, 500, d), _v(rng, 0.01, 5, d)
    return (
        f"A current of {_fmt(i)} A flows through a resistor of {_fmt(r)} ohm. What is the voltage across it?",
        "V",
        i * r,
    )


def _power(rng, d):
    v, r = _v(rng, 1, 240, d), _v(rng, 1, 1000, d)
    return (
        f"A resistor of {_fmt(r)} ohm is connected across a supply of {_fmt(v)} V. How much power does it dissipate?",
        "W",
        v * v / r,
    )


def _kinetic(rng, d):
    m, v = _v(rng, 0.1, 2000, d), _v(rng, 0.5, 40, d)
    return f"An object of mass {_fmt(m)} kg moves at {_fmt(v)} m/s. What is its kinetic energy?", "J", 0.5 * m * v * v


def _heating(rng, d):
    m, dt = _v(rng, 50, 5000, d), _v(rng, 1, 80, d)
    return (
        f"How much heat is needed to warm {_fmt(m)} g of water by {_fmt(dt)} K? Take the specific heat of "
        "water as 4.18 J/(g K).",
        "kJ",
        m * 4.18 * dt / 1000,
    )


def _density(rng, d):
    m, vol = _v(rng, 1, 1000, d), _v(rng, 1, 500, d)
    return (
        f"A sample has a mass of {_fmt(m)} g and a volume of {_fmt(vol)} cm^3. What is its density?",
        "g/cm^3",
        m / vol,
    )


def _wave(rng, d):
    f, lam = _v(rng, 10, 2000, d), _v(rng, 0.01, 20, d)
    return (
        f"A wave has a frequency of {_fmt(f)} Hz and a wavelength of {_fmt(lam)} m. How fast does it travel?",
        "m/s",
        f * lam,
    )


#: template name -> generator(rng, significant digits) -> (problem, unit, gold).
TEMPLATES = {
    "kinematics": _kinematics,
    "free_fall": _free_fall,
    "projectile": _projectile,
    "ideal_gas": _ideal_gas,
    "ohm": _ohm,
    "power": _power,
    "kinetic_energy": _kinetic,
    "heating": _heating,
    "density": _density,
    "wave": _wave,
}


def relative_error(answer: float, gold: float) -> float:
    """``|answer - gold| / |gold|``; ``|answer|`` when gold is 0.

    Args:
        answer: the answer.
        gold: the reference value.

    Returns:
        the relative error (non-negative).
    """
    return abs(answer - gold) / abs(gold) if gold != 0 else abs(answer)


class Science(Task):
    """Numeric science problems.

    Args:
        templates: generated problems: template names to draw from (default: all of :data:`TEMPLATES`).
        digits: generated problems: significant digits of the input values.
        path: SciBench: hub id (:data:`HUB_ID`) or local file; None generates problems.
        data_files: SciBench: a local file of the same schema.
        split: SciBench: the split (the paper: ``train``).
    """

    name = "science"
    version = "1"
    extraction = EXTRACTION

    def __init__(
        self,
        templates: list[str] | None = None,
        digits: int = 3,
        path: str | None = None,
        data_files=None,
        split: str = "train",
    ):
        self.templates = list(templates or TEMPLATES)
        unknown = [t for t in self.templates if t not in TEMPLATES]
        if unknown:
            raise WowError(f"science: unknown template(s) {unknown}; known: {', '.join(TEMPLATES)}")
        if not 1 <= digits <= 6:
            raise WowError(f"science: digits must be 1-6, got {digits}")
        self.digits, self.path, self.data_files, self.split = digits, path, data_files, split

    def build(self, n: int, seed: int) -> list[Question]:
        """Generate ``n`` problems (problem ``i`` depends only on ``seed`` and ``i``) or sample SciBench.

        Args:
            n: number of questions.
            seed: the seed.

        Returns:
            the questions, split unset.
        """
        if self.path is not None or self.data_files is not None:
            return seeded_sample(self._scibench(), n, seed, self.data_files or self.path)
        out = []
        for i in range(n):
            rng = random.Random(f"{self.name}/{seed}/{i}")
            kind = rng.choice(self.templates)
            text, unit, gold = TEMPLATES[kind](rng, self.digits)
            out.append(
                self._question(
                    f"{self.name}/gen{seed}-{i}",
                    text,
                    unit,
                    float(f"{gold:.6g}"),
                    {"source": "generated", "template": kind},
                )
            )
        return out

    def _scibench(self) -> list[Question]:
        out = []
        for row in load_rows(None if self.data_files else self.path, self.split, self.data_files):
            raw = str(field(row, "answer_number")).replace(",", "").replace("\u2212", "-").strip()
            try:
                gold = float(raw)
            except ValueError:
                raise row_error(row, f"answer_number {raw!r} is not a number") from None
            qid = f"{self.name}/{row.data.get('source', 'scibench')}-{row.data.get('problemid', row.index)}".replace(
                " ", ""
            )
            meta = {"source": str(self.data_files or self.path), "scibench_source": row.data.get("source")}
            out.append(
                self._question(
                    qid, field(row, "problem_text", str).strip(), str(field(row, "unit")).strip(), gold, meta
                )
            )
        return out

    def _question(self, qid: str, text: str, unit: str, gold: float, meta: dict) -> Question:
        prompt = _INSTRUCTION + f"Problem: {text}\nGive the answer in {unit}.\n"
        return Question(id=qid, task=self.name, split="", prompt=prompt, gold=gold, meta={**meta, "unit": unit})

    def parse(self, text: str, question: Question, permutation: list[int] | None = None) -> float | None:
        """The number after "The final answer is" (``1.2e-3``, ``1.2 x 10^-3`` and thousands commas accepted)."""
        m = re.search(self.extraction.pattern, text or "")
        return None if m is None else to_number(m.group(1), m.group(2) or m.group(3))

    def parse_direct(self, answer: str, question: Question, permutation: list[int] | None = None) -> float | None:
        """The last "answer is N" / "result = N" in a reasoning answer, or None."""
        m = last_match(_DIRECT, answer)
        return None if m is None else to_number(m.group(1), m.group(2) or m.group(3))

    def grade(self, question: Question, extracted: float | None) -> Grade:
        """Grade a float answer by relative error (see module docs).

        Args:
            question: the question (float gold).
            extracted: the answer or None.

        Returns:
            the grade; :data:`UNPARSED` for None or a non-finite answer.
        """
        if extracted is None or not math.isfinite(extracted):
            return UNPARSED
        err = relative_error(float(extracted), float(question.gold))
        correct = err <= TOLERANCE * (1 + _SLACK) + _SLACK
        return Grade(correctness=1.0 if correct else max(0.0, 1.0 - err), raw_label=-err, is_correct=correct)
