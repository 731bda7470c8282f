"""Eliciting answers and wrong-over-wrong preferences: sampling answers (:mod:`wow.elicit.sampling`), the judge
prompts, reading the judges' replies (:mod:`wow.elicit.verdicts`), running the judges and the scalar scorers
(self-consistency, confidence, length)."""
