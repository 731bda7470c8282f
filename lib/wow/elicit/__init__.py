"""Eliciting answers and wrong-over-wrong preferences: sampling answers (:mod:`wow.analysis.acc_wow_tables.sampling`), the judge
prompts, reading the judges' replies (:mod:`wow.analysis.acc_wow_tables.verdicts`), running the judges and the scalar scorers
(self-consistency, confidence, length)."""
