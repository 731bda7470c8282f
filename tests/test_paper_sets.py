"""The paper's parameter sets: judge reply budgets, the generalisation mapping ``eval_tasks`` (Table 4), and that
every figure and table family has a set."""

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from wow import WowError, io, params
from wow.preferences import pref_spec
from wow.steps import correlation_plots, dpo_training, elicitation
from wow.steps.context import RunContext
from wow.tasks.base import Question

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "parameters" / "paper"


def test_every_paper_family_has_a_set():
    sets = {p.stem for p in PAPER.glob("*.yaml")}
    assert {
        "fig2_fig5_acc_wow",  # Acc_WoW table, Figs 2 and 5
        "fig3_alignment",  # Table 2, Fig 3
        "fig4_trainers",  # Fig 4
        "table3_right_over_wrong",
        "table4_generalisation",
        "proxy_runs",
    } <= sets


def test_the_acc_wow_set_runs_the_papers_datasets():
    P = params.load(PAPER / "fig2_fig5_acc_wow.yaml")
    assert "hellaswag" in P.tasks and "mmlu_pro" not in P.tasks
    assert "medmcqa" not in P.tasks  # one-hot labels: no wrong-over-wrong pair under the default protocol
    assert P.task_options["chess"]["engine_time"] == 2.0 and P.task_options["chess"]["move_format"] == "san"
    assert P.score_reply_tokens > P.pairwise_reply_tokens == 256


def test_judge_budgets_fall_back_to_judge_max_tokens():
    P = params.validate({"judge_max_tokens": 64})
    assert (P.pairwise_reply_tokens, P.score_reply_tokens) == (64, 64)
    P = params.validate({"judge_max_tokens": 64, "score_max_tokens": 900})
    assert (P.pairwise_reply_tokens, P.score_reply_tokens) == (64, 900)


def test_judge_all_gives_each_judge_its_budget(monkeypatch, tmp_path):
    from wow.elicit import judges

    seen = {}
    monkeypatch.setattr(RunContext, "engine", lambda run, m: SimpleNamespace(supports_prefill=False))
    monkeypatch.setattr(
        judges, "judge_pairwise", lambda *a, max_tokens, **k: seen.setdefault("pair", max_tokens) and []
    )
    monkeypatch.setattr(
        judges, "judge_scores", lambda *a, max_tokens, **k: seen.setdefault("score", max_tokens) and []
    )
    P = params.validate(
        {"output_root": str(tmp_path), "judge_modes": ["text"], "score_k": [5], "pairwise_max_tokens": 100,
         "score_max_tokens": 700}
    )  # fmt: skip
    elicitation.judge_all(RunContext(P), [])
    assert seen == {"pair": 100, "score": 700}


def test_eval_tasks_must_be_tasks_of_the_run():
    with pytest.raises(WowError, match=r"eval_tasks\['com2'\] names \['hellaswag'\]"):
        params.validate({"tasks": ["com2"], "eval_tasks": {"com2": ["com2", "hellaswag"]}})
    with pytest.raises(WowError, match="eval_tasks"):
        params.validate({"tasks": ["com2"], "eval_tasks": {"max_flow": ["com2"]}})
    P = params.load(PAPER / "table4_generalisation.yaml")
    assert P.aligned_tasks == ["com2", "shortest_path"]
    assert P.eval_targets("shortest_path") == ["shortest_path", "max_flow"]
    assert params.validate({}).eval_targets("shortest_path") == ["shortest_path"]


def test_align_and_evaluate_scores_each_eval_task_on_its_test_questions(monkeypatch, tmp_path):

    from wow.align import evaluate, grid
    from wow.analysis import alignment_csv

    P = params.validate(
        {
            "output_root": str(tmp_path),
            "tasks": ["shortest_path", "max_flow"],
            "eval_tasks": {"shortest_path": ["shortest_path", "max_flow"]},
        }
    )
    questions = [
        Question(f"{t}/{s}", t, s, "p", 1)
        for t in ("shortest_path", "max_flow")
        for s in ("train", "validation", "test")
    ]
    evaluated = []

    def fake_eval(task, qs, model, adapter, **kw):
        evaluated.append((task.name, [q.id for q in qs], adapter))
        return [{"question_id": q.id, "adapter": adapter} for q in qs]

    monkeypatch.setattr(evaluate, "evaluate_adapter", fake_eval)
    monkeypatch.setattr(evaluate, "make_select_fn", lambda *a, **k: None)
    monkeypatch.setattr(grid, "grid_search", lambda *a, **k: SimpleNamespace(best={"output_dir": "ad", "name": "c"}))
    monkeypatch.setattr(
        alignment_csv,
        "build_alignment_table",
        lambda entries, **k: pd.DataFrame([{c: e.get(c) for c in alignment_csv.META_COLUMNS} for e in entries]),
    )
    spec = pref_spec.PrefSpec("oracle", None, None, None, "self")
    sets = {("shortest_path", spec): {"train": [], "validation": []}}
    table, rows = dpo_training.align_and_evaluate(RunContext(P), sets, questions)
    assert list(table["eval_task"]) == ["shortest_path", "max_flow"]
    assert set(table["task"]) == {"shortest_path"}
    assert ("max_flow", ["max_flow/test"], "ad") in evaluated  # the other task's test questions, aligned model
    assert ("max_flow", ["max_flow/test"], None) in evaluated  # and the original model on them
    assert "eval_task" in (P.run_dir / "alignment.csv").read_text().splitlines()[0]
    assert (P.run_dir / "eval" / "max_flow" / "shortest_path__self_oracle_dpo.jsonl").exists()
    assert ("shortest_path", "self_oracle_dpo", "max_flow") in rows


def test_paper_alignment_sets_train_4bit_qlora_and_the_run_passes_the_regime_to_training(monkeypatch, tmp_path):

    from wow.align import evaluate, grid

    for name in ("fig3_alignment", "fig4_trainers", "proxy_runs", "table3_right_over_wrong", "table4_generalisation"):
        P = params.load(PAPER / f"{name}.yaml")
        assert (P.quantization, P.gradient_checkpointing, P.eval_steps) == ("4bit", True, 1000), name
    default = params.validate({})
    assert (default.quantization, default.gradient_checkpointing, default.eval_steps) == ("none", False, 1000)
    with pytest.raises(WowError, match="quantization"):
        params.validate({"quantization": "8bit"})

    seen = []
    monkeypatch.setattr(evaluate, "make_select_fn", lambda *a, **k: None)
    monkeypatch.setattr(grid, "grid_search", lambda *a, **k: seen.append(a[5]) or SimpleNamespace(best={}))
    regime = {"quantization": "4bit", "gradient_checkpointing": True, "eval_steps": 7, "in_run_validation": "always"}
    P = params.validate({"output_root": str(tmp_path), **regime})
    assert default.in_run_validation == "auto"  # a run validates where the loss chooses (wow.align.in_run_validation)
    spec = pref_spec.PrefSpec("oracle", None, None, None, "self")
    dpo_training.train_grids(RunContext(P), {("shortest_path", spec): {"train": [], "validation": []}}, [])
    assert [{k: getattr(c, k) for k in regime} for c in seen] == [regime]


# -- wow estimate -------------------------------------------------------------------------------------------------
def test_estimate_counts_the_model_calls_of_the_smoke_run(smoke_run):
    """Calls per stage and model, as the smoke run's usage.json records them (calls made plus cache hits).

    The smoke set caps judged pairs (max_judge_pairs 4) below the upper bound, so the count is exact there.
    """
    import json

    from wow.cli import estimate

    usage = json.loads((smoke_run / "usage.json").read_text())
    P = params.load(ROOT / "parameters" / "smoke.yaml")
    expected = estimate.calls_by_stage_and_model(estimate.estimate(P))
    assert set(expected) == {"01_data_prep", "02_elicitation", "04_dpo_training"}
    for stage, per_model in expected.items():
        for model, calls in per_model.items():
            used = usage[stage][model]
            assert used["calls"] + used["cache_hits"] == calls, (stage, model, used, calls)


def test_estimate_prices_api_calls_and_prints_every_paper_set(capsys):
    from wow.cli import commands, estimate

    P = params.load(PAPER / "fig2_fig5_acc_wow.yaml")
    lines = estimate.estimate(P)
    judged = [x for x in lines if x.model == "gpt-4o" and x.what.startswith("pairwise")]
    # 7 tasks x 3 generators, each capped at 10,000 pairs, both orders
    assert judged[0].calls == 7 * 3 * 10_000 * 2
    assert judged[0].cost_usd == pytest.approx(
        (judged[0].prompt_tokens * 2.5 + judged[0].completion_tokens * 10.0) / 1e6
    )
    assert {x.stage for x in estimate.estimate(P, only=["01", "02"])} == {"01_data_prep", "02_elicitation"}
    half = estimate.estimate(P, batch_api=True)
    assert sum(x.cost_usd or 0 for x in half) == pytest.approx(sum(x.cost_usd or 0 for x in lines) / 2)
    for path in sorted(PAPER.glob("*.yaml")):
        assert commands.main(["estimate", str(path), "--tokens-per-second", "2000"]) == 0
        out = capsys.readouterr().out
        assert "all              (total)" in out and "GPU hours of llama-3-8b: 2,000 tok/s generation" in out


def test_a_stand_in_rehearsal_plans_its_api_calls_as_local_cpu_time_at_no_cost(tmp_path, caplog):
    from wow.cli import estimate, estimate_table, rehearsal

    P = params.validate(rehearsal.plan(PAPER / "fig3_alignment.yaml", stand_ins=True).values)
    api = [x for x in estimate.estimate(P, stand_ins=True) if x.model in ("gpt-4o", "gpt-3.5-turbo")]
    assert api and all(x.cost_usd == 0.0 and x.device == "CPU" for x in api)
    x = api[0]  # hours from the stand-in servers' measured prompt and reply rates
    assert x.hours == pytest.approx((x.prompt_tokens / 240.0 + x.completion_tokens / 65.0) / 3600)
    assert "API USD" not in estimate_table.plan_text(estimate.estimate(P, stand_ins=True))
    assert "API USD" in estimate_table.plan_text(estimate.estimate(P))  # the set's real API models cost money


@pytest.mark.parametrize(
    "dtype, generate, train, where",
    [("float32", 205.0, 270.0, "with AMX, float32 forced"), ("bfloat16", 390.0, 250.0, "with AMX, bfloat16")],
)
def test_cpu_hours_are_priced_at_the_figure_measured_in_the_runs_precision(
    dtype, generate, train, where, tmp_path, capsys
):
    """The offline model's CPU hours use the throughput measured in the precision the run computes in (float32 is
    what ``auto`` picks without AMX), the plan line names it, and ``wow estimate`` prints it."""
    import yaml
    from wow.cli import commands, estimate, estimate_table

    values = {**yaml.safe_load((PAPER.parent / "demo.yaml").read_text()), "dtype": dtype}
    lines = estimate.estimate(params.validate(values))
    sampling = next(x for x in lines if x.stage == "01_data_prep" and x.calls)
    assert sampling.hours == pytest.approx(
        (sampling.completion_tokens + sampling.prompt_tokens / 10) / generate / 3600
    )
    training = next(x for x in lines if x.calls == 0)
    assert training.hours == pytest.approx(training.prompt_tokens / train / 3600)
    assert estimate_table.plan_text(lines).endswith(f"of CPU time (measured, 2-core Intel Xeon {where})")
    path = tmp_path / "set.yaml"
    path.write_text(yaml.safe_dump(values))
    assert commands.main(["estimate", str(path)]) == 0
    printed = f"{generate:,.0f} tok/s generation, {train:,.0f} tok/s training (measured, 2-core Intel Xeon {where};"
    assert printed in capsys.readouterr().out


def _summary_totals(out: str) -> dict[str, list[str]]:
    """``wow estimate --summary``'s total lines: stage -> its columns after ``(total)``."""
    rows = [line.split() for line in out.splitlines() if "(total)" in line]
    return {row[0]: row[2:] for row in rows}


@pytest.mark.parametrize("path", sorted(PAPER.glob("*.yaml")), ids=lambda p: p.stem)
def test_each_paper_set_quotes_the_gpu_hours_and_cost_wow_estimate_prints(path, capsys):
    """The header's "Cost" paragraph is what its own ``wow estimate`` command prints: API USD and GPU hours per stage
    and in all, at the GPU throughput the estimate assumes by default and names (docs that agree with the tool)."""
    import re

    from wow.cli import commands, throughput

    header = " ".join(line.lstrip("# ") for line in path.read_text().splitlines() if line.startswith("#"))
    command = re.search(r"`wow estimate ([^`]+)`", header).group(1).split()
    assert command[0] == str(path.relative_to(ROOT))
    assert commands.main(["estimate", str(ROOT / command[0]), *command[1:], "--summary"]) == 0
    totals = _summary_totals(capsys.readouterr().out)
    usd = re.search(r"API USD ([\d,]+) at list prices \(per stage ([^;]+);", header)
    gpu = re.search(r"local GPU time ([\d,]+) h \(per stage ([^)]+)\)", header)
    # columns after (total): calls, prompt tokens, output tokens, USD, GPU hours, CPU hours
    assert round(float(totals["all"][3].replace(",", ""))) == int(usd.group(1).replace(",", ""))
    assert round(float(totals["all"][4].replace(",", ""))) == int(gpu.group(1).replace(",", ""))
    for quoted, column in ((usd.group(2), 3), (gpu.group(2), 4)):
        for stage, value in (part.split(": ") for part in quoted.split(", ")):
            [row] = [v for k, v in totals.items() if k.startswith(stage)]
            printed = 0.0 if row[column] == "-" else float(row[column].replace(",", ""))
            assert round(printed) == int(value.replace(",", "")), (path.name, stage, column, row)
    # without a figure of the user's, the estimate's own assumption: the one the header names
    assert throughput.ASSUMED_GPU["generate"] == 2500 and "assumed 2,500 tok/s of Llama-3-8B generation" in header
    commands.main(["estimate", str(path), "--summary"])
    default = capsys.readouterr().out
    assert "GPU hours of llama-3-8b: 2,500 tok/s generation, 1,250 tok/s training (assumed" in default
    assert _summary_totals(default)["all"][4] == totals["all"][4] or "--only" in command
    # docs/scale.md's table quotes the same two totals
    row = next(line for line in (ROOT / "docs" / "scale.md").read_text().splitlines() if f"| `{path.name}`" in line)
    assert row.split("|")[2].strip() == usd.group(1) and row.split("|")[3].strip() == gpu.group(1), row


@pytest.mark.parametrize("path", sorted(PAPER.glob("*.yaml")), ids=lambda p: p.stem)
def test_the_readmes_quote_each_paper_set_with_its_own_reproduce_command(path):
    """Wherever a README names the command of a paper set, it is the set's ``# Reproduce:`` line (the stages of
    Fig 2/5 are 01-03: a README that left out ``--only`` would run stages the set has no use for)."""
    import re

    reproduce = next(line for line in path.read_text().splitlines() if line.startswith("# Reproduce: "))
    command = reproduce.removeprefix("# Reproduce: ").strip()
    seen = 0
    for readme in (ROOT / "README.md", PAPER / "README.md"):
        for quoted in re.findall(r"`(wow run parameters/paper/[^`]+)`", readme.read_text()):
            if quoted.split()[2] == f"parameters/paper/{path.name}" and "--fast-dev-run" not in quoted:
                assert quoted == command, (readme.name, quoted, command)
                seen += 1
    assert seen >= 1 if path.stem == "acc_wow_mmlu_pro" else seen >= 2, (path.name, seen)


# -- wow data check -----------------------------------------------------------------------------------------------
FIXTURES = ROOT / "tests" / "fixtures" / "tasks"


@pytest.fixture
def data_release(tmp_path):
    """The test fixtures laid out as the paper's data release under <root>/data/ (names as the paper sets use)."""
    import shutil

    from wow.tasks.factscore import build_passage_db

    data = tmp_path / "data"
    (data / "factscore").mkdir(parents=True)
    for src, dst in {
        "kc.jsonl": "KC.jsonl",
        "nlgraph_shortest_path.json": "NLGraph_shortest_path.json",
        "nlgraph_flow.json": "NLGraph_maximum_flow.json",
        "com2.csv": "COM2.csv",
        "bio.jsonl": "BioGeneration.jsonl",
    }.items():
        shutil.copy(FIXTURES / src, data / dst)
    build_passage_db(FIXTURES / "passages.jsonl", data / "factscore" / "enwiki-20230401.db", words_per_passage=12)
    return tmp_path


@pytest.mark.parametrize("path", sorted(PAPER.glob("*.yaml")), ids=lambda p: p.name)
def test_data_check_accepts_every_paper_set_on_the_fixtures(path, data_release, capsys):
    from wow.cli import commands, datacheck

    results = datacheck.check_data(params.load(path), root=data_release)
    assert results and all(r.ok for r in results), datacheck.format_results(results)
    assert commands.main(["data", "check", str(path), "--root", str(data_release)]) == 0
    out = capsys.readouterr().out
    assert "data sources ok" in out and "FAIL" not in out


def test_data_check_names_each_problem(data_release, capsys):
    from wow.cli import commands, datacheck

    data = data_release / "data"
    (data / "KC.jsonl").unlink()
    (data / "COM2.csv").write_text("question,context\nq,c\n")
    (data / "NLGraph_shortest_path.json").write_text('{"0": {"question": "no graph here\\nA:", "answer": "x"}}')
    results = {r.task: r for r in datacheck.check_data(params.load(PAPER / "fig3_alignment.yaml"), root=data_release)}
    assert "missing" in results["knowledge_crosswords"].message
    assert not results["com2"].ok and "COM2" in results["com2"].message
    assert not results["shortest_path"].ok and "record '0'" in results["shortest_path"].message
    assert results["bio_generation"].ok
    assert commands.main(["data", "check", str(PAPER / "fig3_alignment.yaml"), "--root", str(data_release)]) == 1
    assert "3 failing" in capsys.readouterr().out


def test_only_the_keys_of_eval_tasks_get_preference_sets(monkeypatch, tmp_path):
    from wow import preferences

    built = []
    monkeypatch.setattr(preferences, "build_preferences", lambda answers, *a, **k: built.append(answers[0]["task"]))
    monkeypatch.setattr(preferences, "save_preferences", lambda ds, folder: None)
    P = params.validate(
        {
            "output_root": str(tmp_path),
            "tasks": ["shortest_path", "max_flow"],
            "eval_tasks": {"shortest_path": ["shortest_path", "max_flow"]},
        }
    )
    answers = [{"task": "shortest_path"}, {"task": "max_flow"}]
    sets = dpo_training.build_preference_sets(P, answers, [], [])
    assert built == ["shortest_path"] and [name for name, _ in sets] == ["shortest_path"]


def test_data_check_reads_local_files_of_hub_tasks(tmp_path):
    from wow.cli import datacheck

    opts = {
        "hellaswag": {"data_files": str(FIXTURES / "hellaswag.jsonl")},
        "medmcqa": {"data_files": str(FIXTURES / "medmcqa.jsonl")},
        "science": {"data_files": str(FIXTURES / "scibench.jsonl")},
        "chess": {"data_files": str(FIXTURES / "lichess_puzzles.csv")},
    }
    P = params.validate({"tasks": list(opts), "task_options": opts})
    results = datacheck.check_data(P)
    assert [r.ok for r in results] == [True] * 4, datacheck.format_results(results)
    bad = tmp_path / "medmcqa.jsonl"
    bad.write_text('{"question": "q", "opa": "a"}\n')
    P = params.validate({"tasks": ["medmcqa"], "task_options": {"medmcqa": {"data_files": str(bad)}}})
    (result,) = datacheck.check_data(P)
    assert not result.ok and "opb" in result.message


#: Records copied verbatim from NLGraph's own main.json files (github.com/Arthur-Heng/NLGraph, NLGraph/shortest_path
#: and NLGraph/flow), to check that the published format loads as it is.
NLGRAPH_SP = {
    "0": {
        "question": "In an undirected graph, the nodes are numbered from 0 to 4, and the edges are:\nan edge between node "
        "0 and node 4 with weight 4,\nan edge between node 0 and node 3 with weight 3,\nan edge between node 0 and "
        "node 1 with weight 3,\nan edge between node 1 and node 4 with weight 4,\nan edge between node 2 and node 4 "
        "with weight 2,\nan edge between node 2 and node 3 with weight 1,\nan edge between node 3 and node 4 with "
        "weight 1.\nQ: Give the shortest path from node 0 to node 2.\nA:",
        "answer": "The shortest path from node 0 to node 2 is 0,3,2 with a total weight of 4",
        "difficulty": "easy",
    },
    "4": {
        "question": "In an undirected graph, the nodes are numbered from 0 to 4, and the edges are:\nan edge between node "
        "0 and node 1 with weight 1,\nan edge between node 0 and node 2 with weight 1,\nan edge between node 1 and "
        "node 4 with weight 1,\nan edge between node 1 and node 2 with weight 3,\nan edge between node 2 and node 3 "
        "with weight 3.\nQ: Give the shortest path from node 3 to node 1.\nA:",
        "answer": "The shortest path from node 3 to node 1 is 3,2,0,1 with a total weight of 5",
        "difficulty": "easy",
    },
}
NLGRAPH_FLOW = {
    "0": {
        "question": "In a directed graph, the nodes are numbered from 0 to 4, and the edges are:\nan edge from node 0 to "
        "node 1 with capacity 3,\nan edge from node 0 to node 2 with capacity 3,\nan edge from node 0 to node 4 with "
        "capacity 3,\nan edge from node 1 to node 3 with capacity 1,\nan edge from node 2 to node 0 with capacity 10,"
        "\nan edge from node 3 to node 2 with capacity 8,\nan edge from node 3 to node 4 with capacity 2,\nan edge "
        "from node 4 to node 2 with capacity 8,\nan edge from node 4 to node 0 with capacity 10.\nQ: What is the "
        "maximum flow from node 0 to node 2?\nA:",
        "answer": "The maximum flow from node 0 to node 2 is 7.",
        "difficulty": "easy",
    },
    "4": {
        "question": "In a directed graph, the nodes are numbered from 0 to 4, and the edges are:\nan edge from node 0 to "
        "node 3 with capacity 9,\nan edge from node 0 to node 1 with capacity 3,\nan edge from node 1 to node 3 with "
        "capacity 1,\nan edge from node 4 to node 0 with capacity 10,\nan edge from node 4 to node 1 with capacity 3."
        "\nQ: What is the maximum flow from node 4 to node 3?\nA:",
        "answer": "The maximum flow from node 4 to node 3 is 10.",
        "difficulty": "easy",
    },
}


@pytest.mark.parametrize(("task", "records", "golds"), [("shortest_path", NLGRAPH_SP, [4, 5]),
                                                        ("max_flow", NLGRAPH_FLOW, [7, 10])])  # fmt: skip
def test_nlgraph_main_json_loads_as_published(tmp_path, task, records, golds):
    import json

    import wow.tasks
    from wow.cli import datacheck

    path = tmp_path / "main.json"
    path.write_text(json.dumps(records))
    qs = wow.tasks.get(task, path=str(path)).load_nlgraph(str(path))
    assert [q.gold for q in qs] == golds
    assert all(q.meta["normaliser"] > q.gold for q in qs)
    P = params.validate({"tasks": [task], "task_options": {task: {"path": str(path)}}, "n_questions": 2})
    assert [r.ok for r in datacheck.check_data(P)] == [True]


def test_train_seeds_train_each_setting_once_per_seed_into_folders_of_their_own(monkeypatch, tmp_path):
    """#31's seeds: every setting trained once per seed (config seed = that seed, models/<task>/<setting>/seed<k>/),
    evaluated into eval/<task>/<setting>__seed<k>.jsonl, told apart in alignment.csv by train_seed and in Fig 3's
    answers by (task, setting, train_seed); without train_seeds one training with the run's seed, as before."""

    from wow.align import evaluate, grid
    from wow.analysis import alignment_csv

    seen = []
    monkeypatch.setattr(evaluate, "make_select_fn", lambda *a, **k: None)
    monkeypatch.setattr(
        grid, "grid_search", lambda *a, **k: seen.append((a[4], a[5].seed)) or SimpleNamespace(best={})
    )
    spec = pref_spec.PrefSpec("oracle", None, None, None, "self")
    sets = {("shortest_path", spec): {"train": [], "validation": []}}
    P = params.validate({"output_root": str(tmp_path), "seed": 9, "train_seeds": [3, 4]})
    trained = dpo_training.train_grids(RunContext(P), sets, [])
    setting = spec.setting(P, "dpo")
    folder = P.layout.models("shortest_path", setting)
    assert seen == [(folder / "seed3", 3), (folder / "seed4", 4)]
    assert [t.train_seed for t in trained] == [3, 4]
    seen.clear()
    one = params.validate({"output_root": str(tmp_path), "seed": 9})
    assert [t.train_seed for t in dpo_training.train_grids(RunContext(one), sets, [])] == [None]
    assert seen == [(folder, 9)]

    # the evaluated answers, the table and Fig 3's keys
    before = [{"question_id": "q", "correctness": 0.2, "is_correct": False, "extracted": 1, "n_tokens": 5}]
    after = {3: [{**before[0], "correctness": 0.6}], 4: [{**before[0], "correctness": 0.4}]}
    io.write_jsonl(P.layout.eval_answers("shortest_path"), before)
    entries = []
    for seed, rows in after.items():
        path = P.layout.eval_answers("shortest_path", setting, "shortest_path", seed)
        assert path.name == f"{setting}__seed{seed}.jsonl"
        io.write_jsonl(path, rows)
        entries.append({"before_rows": before, "after_rows": rows, "train_seed": seed, "setting": setting,
                        "task": "shortest_path", "eval_task": "shortest_path", "pref_type": "oracle",
                        "source": "self", "trainer": "dpo"})  # fmt: skip
    table = alignment_csv.build_alignment_table(entries, n_boot=0)
    assert table["train_seed"].tolist() == [3, 4] and table["d_p_wrong"].round(3).tolist() == [0.4, 0.2]
    answers = correlation_plots.point_answers(P, table)
    assert sorted(answers) == [("shortest_path", setting, 3), ("shortest_path", setting, 4)]
    assert answers[("shortest_path", setting, 4)][1][0]["correctness"] == 0.4
    assert "train_seed" not in alignment_csv.build_alignment_table([{**entries[0], "train_seed": None}], n_boot=0)

    from wow.cli import estimate  # two seeds: twice the training steps and the aligned models' test answers

    def stage04(values):
        lines = estimate.estimate(params.validate({"output_root": str(tmp_path), **values}), only=["04"])
        return sum(x.prompt_tokens for x in lines if x.calls == 0), sum(x.calls for x in lines if "dpo" in x.what)

    train_one, tested_one = stage04({})
    assert stage04({"train_seeds": [3, 4]}) == (2 * train_one, 2 * tested_one) and train_one > 0
