"""The pre-registered offline Fig 3 study's result, recomputed by hand from the run's artefacts.

``docs/results/offline_fig3/`` holds what ``wow run parameters/offline_fig3.yaml`` wrote (the tables as written, the
test answers without their prompt and text); the README quotes its numbers. Every number checked here is counted
again from the answers and rewards, not read back through the library that wrote it.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from wow import io
from wow.pairs import candidate_pairs, label

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "docs" / "results" / "offline_fig3"
ARMS = {"self_oracle_rpo": 1.0, "self_random_rpo": 0.5, "self_noisy_1_rpo": 0.0}
SEEDS = (0, 1)


def answers(name: str) -> list[dict]:
    return io.read_jsonl(RESULT / "eval" / "shortest_path" / f"{name}.jsonl")


def p_wrong(rows: list[dict]) -> float:
    """Mean correctness of the wrong answers, an unparsed answer counting 0 (the README's definition)."""
    wrong = [r for r in rows if not r["is_correct"]]
    return sum((r["correctness"] if r["extracted"] is not None else 0.0) or 0.0 for r in wrong) / len(wrong)


def d_p_wrong(setting: str, seed: int) -> float:
    return p_wrong(answers(f"{setting}__seed{seed}")) - p_wrong(answers("original"))


@pytest.fixture(scope="module")
def alignment():
    return pd.read_csv(RESULT / "alignment.csv")


def test_every_gain_of_p_wrong_is_the_answers_counted_again(alignment):
    """alignment.csv's Δp_wrong of every arm and seed from the test answers (every test question answered by both)."""
    for setting in [*ARMS, "self_gold_rpo"]:
        for seed in SEEDS:
            row = alignment[(alignment["setting"] == setting) & (alignment["train_seed"] == seed)].iloc[0]
            assert row["d_p_wrong"] == pytest.approx(d_p_wrong(setting, seed), abs=1e-9), (setting, seed)


def test_the_primary_slope_is_oracle_minus_reversed_averaged_over_seeds():
    """H2's slope at x = 1, 0.5, 0: Δp_wrong(oracle) - Δp_wrong(reversed), each the mean of its two seeds."""
    slopes = pd.read_csv(RESULT / "fig3_slopes.csv").set_index("gain")
    by_hand = np.mean([d_p_wrong("self_oracle_rpo", s) for s in SEEDS]) - np.mean(
        [d_p_wrong("self_noisy_1_rpo", s) for s in SEEDS]
    )
    assert slopes.loc["d_p_wrong", "slope"] == pytest.approx(by_hand, abs=1e-9)
    assert slopes.loc["d_p_wrong", "ci_low"] <= by_hand <= slopes.loc["d_p_wrong", "ci_high"]


def test_h1_ranking_accuracy_difference_is_the_rewards_counted_again():
    """H1: the oracle arm's held-out ranking accuracy minus the reversed arm's, from every base test answer's reward
    under each adapter (seeds averaged)."""
    base = answers("original")
    pairs = candidate_pairs(base)
    rewards = pd.read_csv(RESULT / "mechanism_rewards.csv")

    def accuracy(key):
        mine = rewards[rewards["setting"] == key]
        r = dict(zip(mine["answer_id"], mine["reward"], strict=True))
        return sum((r[a["answer_id"]] - r[b["answer_id"]]) * (label(a) - label(b)) > 0 for a, b in pairs) / len(pairs)

    contrasts = pd.read_csv(RESULT / "mechanism_contrasts.csv").set_index("setting")
    oracle = np.mean([accuracy(f"self_oracle_rpo__seed{s}") for s in SEEDS])
    reversed_ = np.mean([accuracy(f"self_noisy_1_rpo__seed{s}") for s in SEEDS])
    assert contrasts.loc["self_oracle_rpo", "reference"] == "self_noisy_1_rpo"
    assert contrasts.loc["self_oracle_rpo", "difference"] == pytest.approx(oracle - reversed_, abs=1e-9)
    assert contrasts.loc["self_oracle_rpo", "n_pairs"] == len(pairs)


def test_the_readme_quotes_these_numbers():
    """The README's result paragraph carries the slope and H1's difference as the artefacts hold them."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Fig 3 on a laptop") : readme.index("### The first offline study")]
    slope = pd.read_csv(RESULT / "fig3_slopes.csv").set_index("gain").loc["d_p_wrong"]
    h1 = pd.read_csv(RESULT / "mechanism_contrasts.csv").set_index("setting").loc["self_oracle_rpo"]
    assert f"{slope['slope']:+.3f} [{slope['ci_low']:+.3f}, {slope['ci_high']:+.3f}]" in section
    assert f"{h1['difference']:+.3f} [{h1['ci_low']:+.3f}, {h1['ci_high']:+.3f}]" in section
    assert "**Decision, by the rules stated above.**" in section and "not yet run" not in section
