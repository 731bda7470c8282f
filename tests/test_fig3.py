"""The figures compute what the paper computes: Fig 3's x-axis from each set's own training pairs (the judge's Acc_WoW
beside it per source), its two regression lines, Self and Mix in one run, Fig 4 over the six set-ups, and CIs that
are CIs. Every expected value was worked out by hand."""

from pathlib import Path

import matplotlib
import pandas as pd
import pytest
from matplotlib.colors import same_color
from matplotlib.container import ErrorbarContainer
from wow import WowError, params
from wow.analysis import acc_wow, fig3_points
from wow.figures import alignment_figures, plots
from wow.preferences import pref_spec

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parents[1]
POLICY, OTHER, JUDGE = "smollm2-135m", "gpt-4o", "gpt-4o"


def run_params(source, tmp_path=None, **extra):
    values = {
        "generators": [POLICY, OTHER],
        "policy_model": POLICY,
        "judges": [JUDGE],
        "judge_modes": ["text"],
        "score_k": [5],
        "pref_types": ["oracle", "direct", "score@0.5", "row"],
        "pref_source": source,
        "pref_score_k": 5,
        "n_boot": 200,
    }
    if tmp_path is not None:
        values["output_root"] = str(tmp_path)
    return params.validate(values | extra)


def acc_row(gen, method, check, margin, n_pairs, n_hits, split="train"):
    return {
        "task": "t",
        "generator": gen,
        "split": split,
        "method": method,
        "judge": JUDGE,
        "check": check,
        "margin": margin,
        "n_pairs": n_pairs,
        "n_hits": n_hits,
        "acc_wow": n_hits / n_pairs,
    }


#: A synthetic acc_wow.csv: pairwise + check 0.50 for the policy (5/10), 0.90 for the other generator (27/30).
ACC = pd.DataFrame(
    [
        acc_row(POLICY, "pairwise_text", "both_orders", 1.0, 10, 5),
        acc_row(OTHER, "pairwise_text", "both_orders", 1.0, 30, 27),
        acc_row(POLICY, "pairwise_text", "none", 1.0, 20, 4),  # other check: never used with both_orders
        acc_row(OTHER, "pairwise_text", "none", 1.0, 40, 40),
        acc_row(POLICY, "score_k5", "none", 0.5, 4, 3),
        acc_row(OTHER, "score_k5", "none", 0.5, 12, 6),
        acc_row(POLICY, "score_k5", "none", 1.0, 8, 2),  # other margin: never used by score@0.5
        acc_row(OTHER, "score_k5", "none", 1.0, 24, 24),
    ]
)


def alignment_rows(sources=("self", "mix")):
    rows = []
    for source in sources:
        for kind, margin, judge in (("oracle", None, None), ("direct", None, JUDGE), ("score", 0.5, JUDGE)):
            rows.append(
                {"setting": f"{source}_{kind}", "task": "t", "pref_type": kind, "source": source, "trainer": "dpo"}
                | {"judge": judge, "margin": margin, "d_p_wrong": 0.1, "d_acc": 0.0, "neg_d_ece": 0.0}
            )
        rows.append({"setting": f"{source}_row", "task": "t", "pref_type": "row", "source": source, "trainer": "dpo"})
    return pd.DataFrame(rows)


def save_set(P, kind, source, margin, train, validation=()):
    """Save a preference set whose pairs are ``(question, right)`` (``right``: the chosen answer is the less wrong),
    under the folder its spec names."""
    from datasets import Dataset, DatasetDict
    from wow.preferences import save_preferences
    from wow.preferences.preference_examples import example_features

    def example(i, question, right):
        labels = (-1.0, -3.0) if right else (-3.0, -1.0)
        message = [{"role": "assistant", "content": f"answer {i}"}]
        return {"prompt": [{"role": "user", "content": question}], "chosen": message, "rejected": message} | {
            "question_id": question,
            "generator": POLICY,
            "chosen_id": f"{question}|{i}|a",
            "rejected_id": f"{question}|{i}|b",
            "chosen_label": labels[0],
            "rejected_label": labels[1],
            "source_method": kind,
            "pref_type": kind,
            "same_prompt": True,
        }

    def dataset(pairs):
        rows = [example(i, q, right) for i, (q, right) in enumerate(pairs)]
        return (
            Dataset.from_list(rows, features=example_features())
            if rows
            else Dataset.from_dict({k: [] for k in example_features()}, features=example_features())
        )

    spec = pref_spec.PrefSpec(kind, margin, JUDGE if kind in ("direct", "score") else None, "text", source)
    save_preferences(
        DatasetDict({"train": dataset(train), "validation": dataset(validation)}),
        P.layout.preferences("t", spec.setting(P)),
    )


#: Training pairs per set: (question, chosen is the less wrong answer). The validation pairs never count.
SETS = {
    ("self", "oracle", None): [("q1", True)] * 4,
    ("self", "direct", None): [("q1", True), ("q1", False), ("q2", True), ("q2", True)],  # 3 / 4
    ("self", "score", 0.5): [("q1", True), ("q2", False)],  # 1 / 2
    ("mix", "oracle", None): [("q1", True)] * 6,
    ("mix", "direct", None): [("q1", True)] * 4 + [("q2", False)],  # 4 / 5
    ("mix", "score", 0.5): [("q3", False)] * 3 + [("q4", True)],  # 1 / 4
}


def saved_sets(P):
    for (source, kind, margin), train in SETS.items():
        save_set(P, kind, source, margin, train, validation=[("q9", False)] * 5)


# -- item 1: Fig 3's x-axis is the accuracy of the very pairs each set trained on ----------------------------------
def test_fig3_x_is_the_accuracy_of_each_sets_own_training_pairs(tmp_path):
    P = run_params(["self", "mix"], tmp_path)
    saved_sets(P)
    points = fig3_points.method_acc_wow(P, ACC, alignment_rows()).set_index("setting")
    assert "self_row" not in points.index and "mix_row" not in points.index  # right-over-wrong: no Acc_WoW
    assert points.loc["self_oracle", "acc_wow"] == 1.0 and points.loc["mix_oracle", "acc_wow_pairs"] == 6
    assert points.loc["self_direct", "acc_wow"] == pytest.approx(3 / 4)  # the validation pairs (all wrong) left out
    assert points.loc["mix_direct", "acc_wow"] == pytest.approx(4 / 5)
    assert points.loc["self_score", "acc_wow"] == pytest.approx(1 / 2)
    assert points.loc["mix_score", "acc_wow"] == pytest.approx(1 / 4)
    assert points.loc["self_direct", "acc_wow_pairs"] == 4 and points.loc["self_direct", "acc_wow_questions"] == 2
    assert points.loc["mix_score", "method"] == "score@0.5"
    # resampling the two questions of the direct set: q1 alone 1/2, q2 alone 1, one of each 3/4
    assert (points.loc["self_direct", "acc_wow_ci_low"], points.loc["self_direct", "acc_wow_ci_high"]) == (0.5, 1.0)


def test_the_judges_acc_wow_stands_beside_x_self_from_the_policys_rows_mix_pooled(tmp_path):
    P = run_params(["self", "mix"], tmp_path)
    saved_sets(P)
    points = fig3_points.method_acc_wow(P, ACC, alignment_rows()).set_index("setting")
    assert points.loc["self_direct", "judge_acc_wow"] == pytest.approx(0.50)  # not the mean over generators, 0.70
    assert points.loc["mix_direct", "judge_acc_wow"] == pytest.approx(32 / 40)  # (5 + 27) / (10 + 30), not 0.70
    assert points.loc["self_score", "judge_acc_wow"] == pytest.approx(3 / 4)
    assert points.loc["mix_score", "judge_acc_wow"] == pytest.approx(9 / 16)  # (3 + 6) / (4 + 12)
    assert (
        points.loc["mix_direct", "judge_acc_wow_pairs"] == 40 and points.loc["self_score", "judge_acc_wow_pairs"] == 4
    )
    assert pd.isna(points.loc["self_oracle", "judge_acc_wow"])


def test_the_direct_set_without_the_check_takes_its_own_pairs_and_the_unchecked_rows(tmp_path):
    P = run_params("self", tmp_path, both_orders=False)
    save_set(P, "direct", "self", None, [("q1", True), ("q1", False), ("q1", False)])
    points = fig3_points.method_acc_wow(P, ACC, alignment_rows(["self"]).iloc[1:2]).set_index("setting")
    assert points.loc["self_direct", "acc_wow"] == pytest.approx(1 / 3)
    assert points.loc["self_direct", "judge_acc_wow"] == pytest.approx(4 / 20)


def test_a_score_sets_x_counts_the_pairs_it_kept_while_acc_wow_counts_score_ties_as_misses(tmp_path):
    """One train question, wrong answers labelled -1, -2, -3, -4 scored 3, 3, 1, 2: of the 6 pairs, (-1, -2) is a
    score tie (a miss for Acc_WoW, left out of the set) and (-3, -4) is ordered wrong; the other 4 are hits. Acc_WoW
    at M = 1 is 4 / 6; the set trains on 5 pairs, 4 of them right: x = 4 / 5."""
    from conftest import answer
    from wow.pairs import candidate_pairs
    from wow.preferences import build_preferences, save_preferences

    P = run_params("self", tmp_path, pref_types=["score@1.0"])
    rows = [
        answer("q1", i, label, gen=POLICY)
        | {"split": "train", "text": f"answer {i}", "prompt_messages": [{"role": "user", "content": "q1?"}]}
        for i, label in enumerate([-1, -2, -3, -4])
    ]
    scores = {r["answer_id"]: s for r, s in zip(rows, [3.0, 3.0, 1.0, 2.0], strict=True)}
    judged = acc_wow.acc_wow_pairs(candidate_pairs(rows), scores, 1.0, n_boot=0)
    assert (judged.n_pairs, judged.n_hits) == (6, 4)
    ds = build_preferences(rows, "score", generators=[POLICY], scores=scores, margin=1.0, val_fraction=0.0)
    spec = pref_spec.PrefSpec("score", 1.0, JUDGE, "text", "self")
    save_preferences(ds, P.layout.preferences("t", spec.setting(P)))
    acc = pd.DataFrame([acc_row(POLICY, "score_k5", "none", 1.0, judged.n_pairs, judged.n_hits)])
    alignment = pd.DataFrame(
        [
            {"setting": "self_score", "task": "t", "pref_type": "score", "source": "self", "trainer": "dpo"}
            | {"judge": JUDGE, "margin": 1.0, "d_p_wrong": 0.0, "d_acc": 0.0, "neg_d_ece": 0.0}
        ]
    )
    point = fig3_points.method_acc_wow(P, acc, alignment).iloc[0]
    assert (point.acc_wow, point.acc_wow_pairs) == (pytest.approx(4 / 5), 5)
    assert point.judge_acc_wow == pytest.approx(4 / 6)


def test_an_acc_wow_table_of_other_questions_than_the_sets_is_refused_naming_both(tmp_path):
    P = run_params(["self", "mix"], tmp_path)
    saved_sets(P)
    both = pd.concat([ACC, ACC.assign(split="test")])  # a table that also holds the test split
    with pytest.raises(WowError, match=r"acc_wow_split is 'train' and acc_wow.csv holds the split\(s\) test, train"):
        fig3_points.method_acc_wow(P, both, alignment_rows())
    with pytest.raises(WowError, match="acc_wow_split 'all' scores other questions than the preference sets"):
        run_params("self", acc_wow_split="all")
    assert run_params("self", acc_wow_split="all", pref_types=["oracle", "noisy@0.5"]).acc_wow_split == "all"


def test_a_set_that_was_not_saved_is_named(tmp_path):
    P = run_params("self", tmp_path)
    with pytest.raises(WowError, match="Fig 3's x of self_oracle is the accuracy of the pairs it trained on"):
        fig3_points.method_acc_wow(P, ACC, alignment_rows(["self"]).iloc[:1])


# -- item 2: Self and Mix from one parameter set; the paper's two regression lines ---------------------------------
def test_both_sources_from_one_parameter_set_have_distinct_setting_names():
    P = run_params(["self", "mix"])
    specs = pref_spec.pref_specs(P)
    assert [(s.source, s.pref_type) for s in specs] == [
        (src, kind) for src in ("self", "mix") for kind in ("oracle", "direct", "score", "row")
    ]
    names = [s.setting(P, "dpo") for s in specs]
    assert len(set(names)) == len(names)
    assert "self_direct_filtered_gpt-4o_dpo" in names and "mix_direct_filtered_gpt-4o_dpo" in names
    assert specs[0].generators(P) == [POLICY] and specs[-1].generators(P) == [POLICY, OTHER]
    assert [s.source for s in pref_spec.pref_specs(run_params("mix"))] == ["mix"] * 4  # a plain string still works


def test_fig4_parameter_set_trains_the_papers_six_set_ups_in_one_run():
    P = params.load(ROOT / "parameters" / "paper" / "fig4_trainers.yaml")
    names = {s.setting(P) for s in pref_spec.pref_specs(P)}
    assert names == {
        f"{src}_{kind}"
        for src in ("self", "mix")
        for kind in ("direct_filtered_gpt-4o", "score_0.5_gpt-4o", "score_0.1_gpt-4o")
    }


def points_table():
    # shortest path: (0.5, 0.0), (1.0, 0.1); bio: (0.6, 0.0), (0.8, 0.1)
    return pd.DataFrame(
        {
            "task": ["shortest_path", "shortest_path", "bio_generation", "bio_generation"],
            "method": ["direct", "oracle", "direct", "score@0.1"],
            "source": ["self", "self", "mix", "self"],
            "acc_wow": [0.5, 1.0, 0.6, 0.8],
            "d_p_wrong": [0.0, 0.1, 0.0, 0.1],
            "d_acc": [0.0, 0.0, 0.0, 0.0],
            "neg_d_ece": [0.2, 0.2, 0.1, 0.1],
        }
    )


def test_fig3_lines_over_all_datasets_and_over_bio_generation():
    lines = alignment_figures.fig3_lines(points_table()).set_index(["gain", "line"])
    bio = lines.loc[("d_p_wrong", "Bio Generation")]
    assert (bio.color, bio.n) == ("green", 2)
    assert bio.slope == pytest.approx(0.5) and bio.intercept == pytest.approx(-0.3)  # through (0.6, 0) and (0.8, 0.1)
    every = lines.loc[("d_p_wrong", "all datasets")]
    # x mean 0.725, y mean 0.05; Sxy = 0.035, Sxx = 0.1475
    assert (every.color, every.n) == ("black", 4)
    assert every.slope == pytest.approx(0.035 / 0.1475)
    assert every.intercept == pytest.approx(0.05 - 0.035 / 0.1475 * 0.725)
    assert lines.loc[("d_acc", "all datasets")].slope == pytest.approx(0.0)
    assert lines.loc[("neg_d_ece", "Bio Generation")].slope == pytest.approx(0.0)


def test_fig3_draws_both_lines_and_both_sources():
    fig = alignment_figures.fig_alignment_vs_acc_wow(points_table())
    ax = fig.axes[0]
    green = [ln for ln in ax.lines if same_color(ln.get_color(), "green")]
    black = [ln for ln in ax.lines if same_color(ln.get_color(), "black")]
    assert len(green) == 1 and len(black) == 1
    assert list(green[0].get_xdata()) == [0.6, 0.8] and list(green[0].get_ydata()) == pytest.approx([0.0, 0.1])
    assert list(black[0].get_xdata()) == [0.5, 1.0]
    legend = [t.get_text() for t in fig.axes[2].get_legend().get_texts()]
    assert "direct (self)" in legend and "direct (mix)" in legend
    assert "fit: Bio Generation" in legend and "fit: all datasets" in legend


def test_fig4_averages_over_the_elicited_set_ups_only():
    rows = []
    for trainer, base in (("dpo", 0.0), ("ipo", 1.0)):
        for i, (src, kind, m) in enumerate(
            (s, k, m) for s in ("self", "mix") for k, m in (("direct", None), ("score", 0.5), ("score", 0.1))
        ):
            rows.append({"trainer": trainer, "pref_type": kind, "source": src, "margin": m, "d_p_wrong": base + i})
        rows.append({"trainer": trainer, "pref_type": "oracle", "source": "self", "margin": None, "d_p_wrong": 100.0})
    table = pd.DataFrame(rows).assign(d_acc=0.0, neg_d_ece=0.0)
    setups = alignment_figures.fig4_setups(table)
    assert len(setups) == 12 and set(setups.pref_type) == {"direct", "score"}
    fig = alignment_figures.fig_trainers(setups)
    heights = sorted(p.get_height() for p in fig.axes[0].patches if p.get_height() == p.get_height())
    assert heights == pytest.approx([2.5, 3.5])  # mean of 0..5 and of 1..6; the oracle rows (100) left out
    assert "mean over 6 set-ups" in fig._suptitle.get_text()
    only_oracle = table[table.pref_type == "oracle"]
    assert len(alignment_figures.fig4_setups(only_oracle)) == 2  # a run without elicited set-ups keeps what it has


# -- item 5: a bar's CI is its own rows' CI, never averaged bounds -------------------------------------------------
def test_acc_wow_bars_keep_each_tasks_own_ci():
    table = pd.DataFrame(
        [
            {"task": "a", "generator": "g", "method": "logprob", "judge": None, "check": "none", "margin": 1.0}
            | {"acc_wow": 0.6, "ci_low": 0.4, "ci_high": 0.8, "n_pairs": 30},
            {"task": "b", "generator": "g", "method": "logprob", "judge": None, "check": "none", "margin": 1.0}
            | {"acc_wow": 0.2, "ci_low": 0.1, "ci_high": 0.3, "n_pairs": 10},
        ]
    )
    bars = plots.acc_wow_bars(table).set_index("task")
    assert bars.loc["a", ["acc_wow", "ci_low", "ci_high"]].tolist() == [0.6, 0.4, 0.8]
    assert bars.loc["b", ["acc_wow", "ci_low", "ci_high"]].tolist() == [0.2, 0.1, 0.3]  # not (0.25, 0.55) averaged
    fig = plots.fig_acc_wow_methods(table)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    assert set(panels) == {"a / g", "b / g"}
    errorbars = [c for c in panels["a / g"].containers if isinstance(c, ErrorbarContainer)]
    segments = errorbars[0].lines[2][0].get_segments()
    assert [tuple(seg[:, 1]) for seg in segments] == [pytest.approx((0.4, 0.8))]
    with pytest.raises(WowError, match="one run and one split"):
        plots.acc_wow_bars(pd.concat([table, table]))
