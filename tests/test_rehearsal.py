"""``wow run SET --fast-dev-run [--stand-ins]``: what a rehearsal shrinks, what it substitutes and that the paper's two
most complex sets rehearse end to end through the command line (wow.cli.rehearsal, wow.cli.llama_server)."""

import json
import logging
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml
from wow import params
from wow.analysis import fig3_points
from wow.cli import commands, datacheck, rehearsal, rehearsal_sizes
from wow.cli.rehearsal import Machine
from wow.cli.stand_in import reply_grammar, stand_in_request
from wow.elicit import judge_prompts, verdicts
from wow.figures.figure_files import stem_part

ROOT = Path(__file__).resolve().parents[1]
#: The end-to-end rehearsals take 14-27 minutes each on 2 cores (README; stage 01 on the stand-in servers), more than
#: the suite's 20-minute budget leaves (the rest of the suite takes about 16): `make rehearse` runs them; set
#: WOW_REHEARSAL_E2E=1 to run them in the suite.
E2E = pytest.mark.skipif(not os.environ.get("WOW_REHEARSAL_E2E"), reason="14-27 min each: set WOW_REHEARSAL_E2E=1")


PAPER = ROOT / "parameters" / "paper"
FIG3 = PAPER / "fig3_alignment.yaml"
TABLE4 = PAPER / "table4_generalisation.yaml"
#: The paper's full grid (each paper set's comment gives the four lists): 3 x 3 x 3 x 3 = 81 points.
FULL_GRID = {
    "learning_rates": [1.0e-4, 5.0e-5, 1.0e-5],
    "lr_schedulers": ["cosine", "cosine_with_restarts", "reduce_lr_on_plateau"],
    "weight_decays": [0.0, 1.0e-5, 1.0e-3],
    "epochs": [1, 3, 5],
}
CPU = Machine(cuda=False, native_bf16=False, offline=True)
GPU = Machine(cuda=True, native_bf16=True, offline=False)
#: What a rehearsal never changes (besides the models and data that stand-ins replace).
SETTINGS = (
    "tasks", "protocol", "seed", "split_fractions", "temperature", "judges", "judge_modes", "pairwise", "score_k",
    "margins", "acc_wow_split", "ci_resample", "pref_types", "pref_source", "pref_judge", "pref_judge_mode",
    "both_orders", "pref_score_k", "trainers", "beta", "train_batch_size", "eval_steps", "gradient_checkpointing",
    "n_bins", "eval_tasks",
)  # fmt: skip


def changed(plan) -> dict:
    return {c.key: (c.old, c.new) for c in plan.shrunk + plan.substituted}


# -- shrinking -------------------------------------------------------------------------------------------------
def test_the_papers_81_point_grid_shrinks_to_its_first_two_points_and_every_setting_stays():
    plan = rehearsal.plan(FIG3, stand_ins=True, machine=CPU, **FULL_GRID)
    assert rehearsal_sizes.grid_size({**params.read_set(FIG3), **FULL_GRID}) == 81
    assert rehearsal_sizes.grid_size(plan.values) == 2
    v = plan.values
    assert v["learning_rates"] == [1.0e-4, 5.0e-5]  # the first axis that varies keeps its first two values
    assert (v["lr_schedulers"], v["weight_decays"], v["epochs"]) == (["cosine"], [0.0], [1])
    original, P = params.load(FIG3), params.validate(v)
    for key in SETTINGS:
        assert getattr(P, key) == getattr(original, key), key
    assert P.judges == ["gpt-4o"] and P.protocol == "paper" and P.pref_sources == ["self", "mix"]


def test_a_grid_of_one_point_is_kept_and_a_grid_varying_late_keeps_two_points_of_that_axis():
    assert rehearsal_sizes.grid_size(rehearsal.plan(FIG3, machine=CPU).values) == 1  # the set's single configuration
    proxy = rehearsal.plan(PAPER / "proxy_runs.yaml", machine=CPU)  # 1 x 1 x 3 x 3
    assert (proxy.values["weight_decays"], proxy.values["epochs"]) == ([0.0, 1.0e-5], [1])
    assert rehearsal_sizes.grid_size(proxy.values) == 2


def test_sizes_shrink_to_the_rehearsals_and_are_never_raised():
    plan = rehearsal.plan(FIG3, machine=CPU)
    sizes = {k: plan.values[k] for k in ("n_questions", "n_samples", "max_new_tokens", "max_steps", "eval_samples")}
    assert sizes == {"n_questions": 8, "n_samples": 2, "max_new_tokens": 48, "max_steps": 2, "eval_samples": 2}
    assert (plan.values["max_judge_pairs"], plan.values["n_boot"], plan.values["max_pairs"]) == (8, 50, 16)
    assert plan.values["pairwise_max_tokens"] == 64 and plan.values["score_max_tokens"] == 64  # k=5: 5 lines fit
    assert plan.values["run_name"] == "paper_alignment_fast_dev_run"
    small = rehearsal.plan(ROOT / "parameters" / "smoke.yaml", machine=CPU).values
    assert (small["n_samples"], small["max_steps"], small["n_questions"]) == (2, 2, 4)
    assert small["max_judge_pairs"] == 4  # the smoke set's 4, below the rehearsal's 8: kept, never raised
    assert small["judge_max_tokens"] == 32  # below the rehearsal's: kept
    assert small["eval_samples"] == 2  # the smoke set's 4, shrunk to the rehearsal's 2


def test_least_questions_fills_every_split_as_the_tasks_split_them():
    # assign_splits rounds half to even: 0.1 * 5 = 0.5 -> 0, 0.8 * 7 = 5.6 -> 6 leaves no test question
    assert rehearsal_sizes.least_questions([0.8, 0.1, 0.1]) == 8
    assert rehearsal_sizes.least_questions([0.6, 0.2, 0.2]) == 4
    assert rehearsal_sizes.least_questions([0.5, 0.1, 0.4]) == 6
    assert rehearsal_sizes.least_questions([1.0, 0.0, 0.0]) == 1
    assert rehearsal_sizes.train_questions(8, [0.8, 0.1, 0.1]) == 6


def test_least_samples_let_the_smallest_score_margin_keep_a_pair():
    # the paper's cut keeps round(pairs x M): 6 train questions x C(2, 2) = 6 pairs keep round(0.6) = 1 at M = 0.1
    assert rehearsal_sizes.least_samples(6, ["oracle", "direct", "score@0.5", "score@0.1"]) == 2
    assert rehearsal_sizes.least_samples(2, ["row", "score@0.1"]) == 3  # 2 x 3 = 6 pairs; 2 x 1 keep round(0.2) = 0
    assert rehearsal_sizes.least_samples(1, ["oracle", "row_score@0.1"]) == 4  # C(4, 2) = 6; C(3, 2) = 3 keep 0
    assert rehearsal_sizes.least_samples(1, ["oracle", "noisy@0.1"]) == 2  # noisy flips a share, it cuts nothing
    # every set judged (fig4_trainers): enough answers for 32 candidate pairs, 6 x C(4, 2) = 36 (6 x C(3, 2) = 18)
    assert rehearsal_sizes.least_samples(6, ["direct", "score@0.5", "score@0.1"]) == 4
    assert rehearsal_sizes.least_samples(6, ["row_direct", "row_score@0.5"]) == 4


# -- substitutions -----------------------------------------------------------------------------------------------
def test_what_the_machine_lacks_is_substituted_and_nothing_else():
    on_cpu = changed(rehearsal.plan(FIG3, machine=CPU))
    assert on_cpu["quantization"] == ("4bit", "none") and on_cpu["dtype"] == ("bfloat16", "auto")
    on_gpu = rehearsal.plan(FIG3, machine=GPU)
    assert on_gpu.values["quantization"] == "4bit" and on_gpu.values["dtype"] == "bfloat16"
    assert on_gpu.values["generators"] == ["llama-3-8b", "gpt-3.5-turbo", "gpt-4o"]  # real models without stand-ins
    assert on_gpu.values["task_options"]["com2"]["labeler"] == "vera"
    # data files this checkout lacks become the samples even on a GPU machine; hub datasets stay while online
    assert on_gpu.values["task_options"]["com2"]["path"] == "data/samples/COM2.csv"
    table4 = rehearsal.plan(TABLE4, machine=GPU).values["task_options"]
    assert table4["hellaswag"] == {"path": "Rowan/hellaswag", "labeler": "vera"}
    offline = rehearsal.plan(TABLE4, machine=Machine(cuda=True, native_bf16=True, offline=True))
    assert offline.values["task_options"]["hellaswag"] == {
        "labeler": "vera",
        "data_files": "data/samples/hellaswag.jsonl",
    }


def test_stand_ins_replace_local_models_hub_data_and_online_labelers_and_say_so():
    plan = rehearsal.plan(FIG3, stand_ins=True, machine=CPU)
    v = plan.values
    assert v["generators"] == ["smollm2-135m", "gpt-3.5-turbo", "gpt-4o"] and v["policy_model"] == "smollm2-135m"
    assert v["judges"] == ["gpt-4o"]  # API models keep their names: the stand-in server answers them
    assert v["task_options"]["com2"]["labeler"] == "minilm"
    assert v["task_options"]["bio_generation"] == {
        "path": "data/samples/BioGeneration.jsonl",
        "db": "data/samples/enwiki-sample.db",
        "engine": "gpt-3.5-turbo",  # FActScore's engine: served by the stand-in server too
    }
    assert plan.needs_server and plan.api_models == ["gpt-3.5-turbo", "gpt-4o"]
    lines = plan.lines()
    assert len(lines) == len(plan.shrunk) + len(plan.substituted) and all("\n" not in line for line in lines)
    for key in ("generators", "policy_model", "base_url", "task_options.com2.labeler", "task_options.com2"):
        assert any(line.startswith(f"substituted {key}: ") for line in lines), key
    table4 = rehearsal.plan(TABLE4, stand_ins=True, machine=CPU).values["task_options"]
    assert table4["hellaswag"] == {"labeler": "minilm", "data_files": "data/samples/hellaswag.jsonl"}


def test_two_local_models_standing_in_as_one_are_kept_once():
    plan = rehearsal.plan(
        FIG3, stand_ins=True, machine=CPU, generators=["llama-3-8b", "smollm2-360m", "gpt-4o"], judges=["smollm2-360m"]
    )
    assert plan.values["generators"] == ["smollm2-135m", "gpt-4o"] and plan.values["judges"] == ["smollm2-135m"]


def test_a_rehearsal_logs_every_change_on_one_line_and_records_it_in_its_own_folder(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="wow")
    with rehearsal.prepared(FIG3, output_root=str(tmp_path)) as values:
        run_dir = tmp_path / "paper_alignment_fast_dev_run"
        record = json.loads((run_dir / "rehearsal.json").read_text())
    assert values["run_name"] == "paper_alignment_fast_dev_run" and not (tmp_path / "paper_alignment").exists()
    assert not record["stand_ins"] and "server" not in record and record["shrunk"] and record["substituted"]
    for change in record["shrunk"] + record["substituted"]:
        lines = [line for line in caplog.text.splitlines() if f" {change['key']}: " in line]
        assert any(line.endswith(f" -> {change['new']!r} ({change['why']})") for line in lines) or any(
            line.endswith(f"({change['why']})") and isinstance(change["new"], dict) for line in lines
        ), change


def test_a_stand_in_rehearsal_says_its_api_calls_cost_cpu_time_not_money(tmp_path, caplog):
    """Through ``wow run``: the plan line before the first stage prices the stand-ins as local CPU time (stage 02
    then stops, since stage 01 has not run)."""
    caplog.set_level(logging.INFO, logger="wow")
    argv = ["run", str(FIG3), "--fast-dev-run", "--stand-ins", "--set", f"output_root={tmp_path}", "--only", "02"]
    assert commands.main(argv) == 1
    (plan,) = [line for line in caplog.text.splitlines() if "plan (wow estimate" in line]
    assert plan.endswith("(API models: local stand-ins)") and "of CPU time" in plan and "API USD" not in plan


def test_stand_ins_run_only_in_a_rehearsal(capsys):
    assert commands.main(["run", str(FIG3), "--stand-ins"]) == 1
    err = capsys.readouterr().err
    assert "add --fast-dev-run" in err and len(err.strip().splitlines()) == 1


def test_every_paper_sets_rehearsal_data_checks_with_enough_rows():
    for path in sorted(PAPER.glob("*.yaml")):
        P = params.validate(rehearsal.plan(path, stand_ins=True, machine=CPU).values)
        for r in datacheck.check_data(P):
            assert r.ok and "fewer than" not in r.message, (path.name, r)


def test_the_bio_sample_database_holds_every_sample_topic():
    from wow.tasks.factscore import PassageDB

    db = PassageDB(ROOT / "data" / "samples" / "enwiki-sample.db")
    topics = [json.loads(line)["topic"] for line in (ROOT / "data" / "samples" / "BioGeneration.jsonl").open()]
    assert len(topics) >= 8 and all(db.passages(t) for t in topics)


# -- the stand-in server's judge reply formats -----------------------------------------------------------------
ANSWER = {"prompt_messages": [{"role": "user", "content": "What is 2 + 3?"}], "text": "It is 6."}


@pytest.mark.parametrize("protocol", ["wow", "paper"])
def test_judge_prompts_get_the_grammar_of_the_reply_they_ask_for(protocol):
    from llama_cpp import LlamaGrammar

    pairwise = reply_grammar(judge_prompts.pairwise_messages(ANSWER, ANSWER, protocol))
    assert pairwise == 'root ::= "Preferred output: " [12]'
    one = reply_grammar(judge_prompts.score_messages([ANSWER], protocol))
    assert one == 'root ::= "Score: " [0-5]'
    five = reply_grammar(judge_prompts.score_messages([ANSWER] * 5, protocol))
    line = '"Score: " [0-5]' if protocol == "paper" else None
    assert five.count("[0-5]") == 5
    if line:
        assert five == "root ::= " + ' "\\n" '.join([line] * 5)
    else:
        assert '"Score for answer 5: " [0-5]' in five
    for grammar in (pairwise, one, five):
        LlamaGrammar.from_string(grammar, verbose=False)  # llama.cpp accepts it
    # what the grammars allow parses under both protocols' readers
    reply = "\n".join(f"Score for answer {i}: {i - 1}" for i in range(1, 6))
    plain = "\n".join(f"Score: {i - 1}" for i in range(1, 6))
    assert verdicts.parse_scores(reply if protocol == "wow" else plain, 5) == ([0, 1, 2, 3, 4], None)
    assert verdicts.paper_parse_scores(plain, 5)[0] == [0, 1, 2, 3, 4]
    assert verdicts.parse_verdict("Preferred output: 2") == verdicts.paper_parse_verdict("Preferred output: 2") == 2


def test_other_prompts_get_no_grammar():
    assert reply_grammar([{"role": "user", "content": "Tell me a bio of Edda Vornholt."}]) is None
    assert reply_grammar([]) is None


def test_the_stand_in_gives_each_api_model_its_own_seeds_and_judges_their_reply_format():
    bio = [{"role": "user", "content": "Tell me a bio of Edda Vornholt."}]
    four, three = (stand_in_request({"model": m, "seed": 7, "messages": bio}) for m in ("gpt-4o", "gpt-3.5-turbo"))
    assert four["seed"] != three["seed"] and "grammar" not in four  # two API models: two answers, not one twice
    assert four == stand_in_request({"model": "gpt-4o", "seed": 7, "messages": bio})  # reproducible
    judge = {"model": "gpt-4o", "seed": 0, "messages": judge_prompts.pairwise_messages(ANSWER, ANSWER)}
    assert stand_in_request(judge)["grammar"] == 'root ::= "Preferred output: " [12]'
    assert stand_in_request({**judge, "grammar": "root ::= [12]"})["grammar"] == "root ::= [12]"  # its own wins


def test_factscore_prompts_get_a_few_fact_lines_and_a_true_or_false():
    from wow.tasks import factscore

    atomic = reply_grammar([{"role": "user", "content": factscore.ATOMIC_PROMPT.format(sentence="Edda was born.")}])
    assert atomic.count('"- "') == 3 and atomic.startswith('root ::= "- "')
    verify = factscore.VERIFY_PROMPT.format(topic="Edda", passages="Title: Edda\nText: x\n\n", fact="Edda was born.")
    assert reply_grammar([{"role": "user", "content": verify}]) == 'root ::= "True" | "False"'
    assert factscore.parse_facts("- Edda is Norwegian.\n- Edda is a glaciologist.\n") == [
        "Edda is Norwegian.",
        "Edda is a glaciologist.",
    ]


# -- end to end through the command line ---------------------------------------------------------------------
STAGES = ("01_data_prep", "02_elicitation", "03_acc_wow", "04_dpo_training", "05_correlation_plots")
#: Shrunk further for the test suite (2 shared cores): shorter answers, one evaluation answer, a smaller bootstrap.
FURTHER = ["--set", "max_new_tokens=32", "--set", "eval_samples=1", "--set", "n_boot=20"]


def rehearse(path: Path, tmp_path: Path, caplog) -> tuple[Path, object]:
    """Rehearse ``path`` with stand-ins through ``wow run``; check what every rehearsal must leave behind."""
    saved = os.environ.get("OPENAI_API_KEY")
    caplog.set_level(logging.INFO, logger="wow")
    argv = ["run", str(path), "--fast-dev-run", "--stand-ins", "--set", f"output_root={tmp_path}", *FURTHER]
    assert commands.main(argv) == 0
    assert os.environ.get("OPENAI_API_KEY") == saved  # the placeholder key lived for the rehearsal only
    run_dir = tmp_path / (params.read_set(path)["run_name"] + rehearsal_sizes.SUFFIX)
    return run_dir, check_rehearsal(run_dir, caplog.text)


def check_rehearsal(run_dir: Path, log: str):
    """Every substitution logged and in ``rehearsal.json``, every stage done, a report, no key in any file; returns
    the run's parameters."""
    P = params.validate(yaml.safe_load((run_dir / "run.yaml").read_text()))
    record = json.loads((run_dir / "rehearsal.json").read_text())
    assert record["stand_ins"] and P.base_url == record["server"]["base_url"]
    for change in record["substituted"]:  # every substitution logged, one line each
        assert f"substituted {change['key']}: " in log
    assert {c["key"] for c in record["substituted"]} >= {"quantization", "generators", "policy_model", "base_url"}
    attempts = json.loads((run_dir / "stages.json").read_text())
    assert [attempts[s][-1]["status"] for s in STAGES] == ["done"] * 5
    assert (run_dir / "report" / "index.html").exists()
    for f in (
        p for p in run_dir.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".yaml", ".csv", ".md")
    ):
        assert rehearsal.PLACEHOLDER_KEY not in f.read_text(errors="ignore"), f  # the key never lands in a file
    return P


def check_alignment(run_dir: Path, P) -> pd.DataFrame:
    """alignment.csv has one row per trained setting and evaluation task: every preference set built is trained by
    every trainer and evaluated on every task of ``eval_targets``; each row has its reliability diagram."""
    built = [(d.parent.name, d.name) for d in (run_dir / "preferences").glob("*/*") if d.is_dir()]
    assert built, "no preference set was built"
    alignment = pd.read_csv(run_dir / "alignment.csv")
    rows = set(zip(alignment.task, alignment.setting, alignment.eval_task, strict=True))
    expected = {(t, f"{name}_{tr}", e) for t, name in built for tr in P.trainers for e in P.eval_targets(t)}
    assert rows == expected and len(alignment) == len(expected)
    for _, r in alignment.iterrows():
        name = r.setting if r.eval_task == r.task else f"{r.task}__{r.setting}"
        assert list(run_dir.glob(f"reliability_{stem_part(r.eval_task)}_{stem_part(name)}.png")), name
    return alignment


@E2E
def test_fig3_alignment_rehearses_end_to_end_with_stand_ins(tmp_path, caplog):
    run_dir, P = rehearse(FIG3, tmp_path, caplog)
    assert P.judges == ["gpt-4o"] and P.protocol == "paper" and P.pref_types == params.load(FIG3).pref_types
    alignment = check_alignment(run_dir, P)
    assert set(alignment.task) <= set(P.tasks) and set(alignment.source) == {"self", "mix"}
    points = pd.read_csv(run_dir / "fig3_points.csv")
    # Fig 3 draws every aligned setting whose pairs have a wrong-over-wrong accuracy; right-over-wrong sets (row),
    # built or not depending on the stand-ins' answers, have none and are left out
    drawn = alignment[alignment.pref_type.isin(fig3_points.FIG3_TYPES)]
    assert set(zip(points.task, points.setting, strict=True)) == set(zip(drawn.task, drawn.setting, strict=True))
    assert not points.pref_type.str.startswith("row").any() and points.acc_wow.between(0, 1).all()
    for name in ("fig_acc_wow", "fig3_acc_wow_vs_alignment", "fig4_trainers", "answer_labels"):
        assert (run_dir / f"{name}.png").exists(), name
    assert (run_dir / "fig3_slopes.csv").exists() and (run_dir / "summary.md").exists()


@E2E
def test_table4_generalisation_rehearses_end_to_end_with_stand_ins(tmp_path, caplog):
    run_dir, P = rehearse(TABLE4, tmp_path, caplog)
    alignment = check_alignment(run_dir, P)
    assert set(alignment.task) <= {"com2", "shortest_path"}  # only the keys of eval_tasks are aligned
    for task in set(alignment.task):  # each aligned model evaluated on its own task and on the other
        assert set(alignment[alignment.task == task].eval_task) == set(P.eval_targets(task))
    assert (run_dir / "eval" / "hellaswag" / "original.jsonl").exists() or "com2" not in set(alignment.task)
    assert (run_dir / "fig3_acc_wow_vs_alignment.png").exists() and (run_dir / "summary.md").exists()
