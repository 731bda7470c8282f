"""Stage 02 (notebook ``02_elicitation``): every judge in every mode over the run's answers (``judgements/``), the
judges' parse-failure and order-flip report, and the loaders of what the judges wrote.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import pandas as pd

from wow import io, protocol
from wow.elicit import judges, scorers
from wow.params import RunParams
from wow.steps.context import RunContext

log = logging.getLogger(__name__)


# -- stage 01: questions and answers ------------------------------------------------------------------------------


# -- stage 02: elicitation ----------------------------------------------------------------------------------------
def judge_all(run: RunContext, answers: list[dict]) -> tuple[list[dict], list[dict]]:
    """Run every judge in every mode: pairwise (both orders) and score-based; write ``judgements/``.

    The judges see the answers a later stage uses (:func:`wow.protocol.judged_answers`: under ``wow`` the train
    questions and those of ``acc_wow_split``), and the pair cap is drawn over their pairs.

    Returns:
        ``(pairwise rows, score rows)`` over all judges and modes.
    """
    P = run.params
    judged = protocol.judged_answers(P.protocol, answers, P.acc_wow_split)
    log.info("judges see %d of %d answers (protocol %s)", len(judged), len(answers), P.protocol)
    answers = judged
    verdict_rows, scores = [], []
    for judge in P.judges:
        engine = run.engine(judge)
        for mode in P.judge_modes:
            if mode == "logprob" and not engine.supports_prefill:
                log.warning(
                    "judge %s is served by an API that continues no prefilled turn (api_prefill: none): no "
                    "next-token verdicts, skipping its logprob mode",
                    judge,
                )
                continue
            if P.pairwise:
                rows = judges.judge_pairwise(
                    engine,
                    answers,
                    judge,
                    mode,
                    max_pairs=protocol.judge_pair_cap(P.protocol, judge, P.max_judge_pairs),
                    seed=P.seed,
                    max_tokens=P.pairwise_reply_tokens,
                    protocol=P.protocol,
                )
                io.write_jsonl(P.layout.judgement("pairwise", judge, mode), rows)
                verdict_rows += rows
            for k in P.score_k:
                if mode == "logprob" and k != 1:
                    continue  # next-token scores read one answer per prompt
                rows = judges.judge_scores(
                    engine, answers, judge, k, mode, max_tokens=P.score_reply_tokens, protocol=P.protocol
                )
                io.write_jsonl(P.layout.judgement("score", judge, mode, k), rows)
                scores += rows
    return verdict_rows, scores


def judge_report(verdict_rows: list[dict], scores: list[dict]) -> pd.DataFrame:
    """Parse-failure and order-flip rates of every judge file, so unparseable replies never vanish silently."""
    out = []
    groups = defaultdict(list)
    for r in verdict_rows:
        groups[("pairwise", r["judge"], r["mode"], None)].append(r)
    for r in scores:
        groups[("score", r["judge"], r["mode"], r["k"])].append(r)
    for (kind, judge, mode, k), rows in groups.items():
        rates = judges.pairwise_rates(rows) if kind == "pairwise" else judges.score_parse_rate(rows)
        out.append({"kind": kind, "judge": judge, "mode": mode, "k": k, "rows": len(rows), **rates})
    return pd.DataFrame(out)


def load_judgements(P: RunParams) -> tuple[list[dict], list[dict]]:
    """All pairwise and score judgement rows of the run."""
    folder = P.layout.judgements
    if not folder.exists():
        return [], []
    return judges.read_judgements(folder, "pairwise"), judges.read_judgements(folder, "score")


def load_scores(P: RunParams) -> list[dict]:
    """Rows of ``scores.jsonl``."""
    return io.read_jsonl(P.layout.scores)


def score_all(P: RunParams, answers: list[dict], score_rows: list[dict]) -> list[dict]:
    """Every scalar signal of every answer (self-consistency, confidence, length, and the score judges' scores:
    :func:`wow.elicit.scorers.score_answers`); writes ``scores.jsonl``."""
    scores = scorers.score_answers(answers, scorers.judge_score_maps(score_rows), protocol=P.protocol)
    io.write_jsonl(P.layout.scores, scores)
    return scores
