"""The benchmark scripts still run and write what the summary reads (tiny sizes; no timing is asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from wow.backends import precision

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))


@pytest.fixture
def bench_out(tmp_path, monkeypatch):
    monkeypatch.setenv("WOW_BENCH_OUT", str(tmp_path))
    return tmp_path


@pytest.mark.slow
def test_confidence_bench_counts_forwards_and_writes_its_json(bench_out):
    from bench_confidence import bench_confidence

    res = bench_confidence(n_questions=1, n_samples=1, max_tokens=2, batch_size=8)
    written = json.loads((bench_out / "confidence.json").read_text())
    assert written["name"] == "confidence" and len(written["rows"]) == 3
    for row in res["rows"]:
        assert row["forwards_with_logprobs"] > 0
        assert row["extra_forwards_for_confidence"] == 0
    assert {"loadavg_before", "loadavg_after", "goal"} <= set(written)


@pytest.mark.slow
def test_sampling_bench_takes_the_parameter_set_workload(bench_out):
    from bench_sampling import bench_sampling, workload_from_params
    from wow.backends.local import cascade_attention

    work = workload_from_params()
    assert work["max_tokens"] == 64 and work["batch_size"] == 20  # the demo's
    res = bench_sampling(
        max_tokens=[2], batch_sizes=[8], n_questions=1, reps=1, one_by_one=False, ceiling={"rows": 2, "length": 8}
    )
    written = json.loads((bench_out / "sampling.json").read_text())
    assert written["max_tokens"] == [2] and written["ceiling_tokens_per_s"] > 0
    assert written["dtype"] == work["dtype"] == precision.resolve_dtype("auto")  # the set's precision on this machine
    methods = {r["method"] for r in res["rows"]}
    assert methods == {"wow default", "wow forward step", "wow no cascade", "wow fixed_shapes", "raw batched"}
    assert cascade_attention.ENABLED  # the no-cascade arm switched it off for its runs only
    for row in res["rows"]:
        assert row["answers"] == work["n_samples"] and row["prompt_tokens"] > 0 and row["vs_ceiling"] > 0
        assert 0 < row["prompt_tokens_computed"] <= row["prompt_tokens"]
    [default] = [r for r in res["rows"] if r["method"] == "wow default"]
    assert default["prompt_tokens_computed"] * 4 < default["prompt_tokens"]  # 10 samples of one prompt: read once


@pytest.mark.slow
def test_precision_bench_measures_both_precisions_and_names_the_cpu(bench_out, monkeypatch):
    import bench_precision

    monkeypatch.setattr(bench_precision, "sampling_tok_s", lambda dtype, n, reps: {"float32": 2.0}.get(dtype, 1.0))
    real_pass, real_matmul = bench_precision.prompt_pass_tok_s, bench_precision.matmul_gflops
    monkeypatch.setattr(bench_precision, "prompt_pass_tok_s", lambda d: real_pass(d, rows=1, length=8, reps=1))
    monkeypatch.setattr(bench_precision, "matmul_gflops", lambda d: real_matmul(d, n=64, reps=1))
    res = bench_precision.bench_precision(n_questions=1, reps=1)
    written = res
    assert [r["workload"] for r in written["rows"]][0].startswith("matmul")
    for row in res["rows"]:
        assert row["float32"] > 0 and row["bfloat16"] > 0 and row["auto"] in ("float32", "bfloat16")
        fastest = "float32" if row["float32"] >= row["bfloat16"] else "bfloat16"
        assert row["auto is faster"] == ("yes" if fastest == row["auto"] else "no")
    assert written["machine"]["cpu"] and "auto_dtype" in written["machine"]


@pytest.mark.parametrize(
    "flags, auto",
    [
        ({"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "bfloat16"),  # Intel with AMX: bf16 in matrix units
        ({"avx512f", "avx512_bf16", "avx512_fp16"}, "float32"),  # AVX512-BF16 alone: 0.55x of fp32 where measured
        ({"avx512f", "avx2"}, "float32"),  # emulated bf16
        ({"avx2", "fma"}, "float32"),
        ({"fp", "asimd", "bf16"}, "bfloat16"),  # ARM's BF16 extension
    ],
)
def test_auto_precision_is_bf16_only_where_it_is_faster_than_fp32(monkeypatch, flags, auto):
    monkeypatch.delenv(precision.CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(precision, "cuda_bf16", lambda: None)
    assert precision.resolve_dtype("auto") == auto and precision.machine()["auto_dtype"] == auto
    assert precision.resolve_dtype("bfloat16") == "bfloat16"  # an explicit value is kept


def test_wow_cpu_bf16_makes_auto_resolve_as_on_the_other_cpu_family(monkeypatch):
    """``WOW_CPU_BF16=0`` on an AMX CPU: float32 for the run's set and for training, said in the machine line;
    ``1`` on an AVX2 CPU: bfloat16; anything else is refused, also by the ``wow`` command."""
    from wow import WowError, params
    from wow.align.align_config import AlignConfig, use_bf16

    monkeypatch.setattr(precision, "cuda_bf16", lambda: None)
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx512f", "amx_bf16", "amx_tile"}))
    monkeypatch.setenv(precision.CPU_BF16_ENV, "0")
    assert precision.resolve_dtype("auto") == "float32" == params.validate({}).dtype
    assert use_bf16(AlignConfig(), "cpu") is False
    assert precision.machine_line().endswith("dtype auto -> float32 (WOW_CPU_BF16=0)")
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setenv(precision.CPU_BF16_ENV, "1")
    assert precision.resolve_dtype("auto") == "bfloat16" and use_bf16(AlignConfig(), "cpu") is True
    monkeypatch.setenv(precision.CPU_BF16_ENV, "yes")
    with pytest.raises(WowError, match="WOW_CPU_BF16='yes': use 0"):
        precision.resolve_dtype("auto")
    wow = Path(sys.executable).parent / "wow"
    proc = subprocess.run(
        [str(wow), "estimate", str(BENCH.parent / "parameters" / "smoke.yaml")], capture_output=True, text=True
    )
    assert proc.returncode == 1 and "WOW_CPU_BF16='yes'" in proc.stderr and "Traceback" not in proc.stderr


def test_summary_reads_every_benchmark_result(bench_out):
    import run_all

    results = {
        "sampling": {
            "status": "ok",
            "rows": [
                {"workload": "w", "method": "raw batched", "tokens_per_s": 10.0, "vs_raw_batched": 1.0},
                {"workload": "w", "method": "wow fixed_shapes", "tokens_per_s": 12.0, "vs_raw_batched": 1.2},
                {"workload": "w", "method": "wow default", "tokens_per_s": 520.0, "vs_raw_batched": 52.0,
                 "max_tokens": 64},
            ],
        },
        "confidence": {
            "status": "ok",
            "rows": [{"method": "wow fixed_shapes", "extra_forwards_for_confidence": 0, "forwards_per_answer": 3.0}],
        },
        "judging": {
            "status": "ok",
            "rows": [
                {
                    "judge": "pairwise",
                    "mode": "text",
                    "k": None,
                    "unit": "pair",
                    "calls_per_unit": 2.0,
                    "prompt_tokens_per_unit": 900.0,
                    "completion_tokens_per_unit": 30.0,
                }
            ],
            "cache": {"calls_first_run": 4, "calls_rerun": 0},
        },
        "cache": {
            "status": "ok",
            "warm_over_cold": 0.04,
            "cold": {"seconds": 100.0},
            "warm": {"seconds": 4.0, "model_calls": 0, "stages": {"01": {"outside_cells_seconds": 2.0}}},
            "demo": {"status": "not measured, run make demo"},
        },
        "dpo": {
            "status": "ok",
            "precision": "float32",
            "batch_size": 2,
            "rows": [
                {"s_per_step": 2.0, "vs_trl_s_per_step": 0.5, "vs_ceiling": 2.0, "peak_rss_mb": 900.0,
                 "vs_trl_peak_rss": 1.0},
                {"method": "wow.align.training.train, prompts repeated per answer (TRL's layout)", "s_per_step": 3.2,
                 "vs_trl_s_per_step": 0.8, "vs_ceiling": 3.2, "peak_rss_mb": 900.0, "vs_trl_peak_rss": 1.0},
                {"s_per_step": 4.0, "vs_trl_s_per_step": 1.0, "vs_ceiling": 4.0, "peak_rss_mb": 900.0,
                 "vs_trl_peak_rss": 1.0},
                {"method": "wow.align.training.train, a second arm on the same pairs flipped (reference reused)",
                 "s_per_step": 1.6, "vs_trl_s_per_step": 0.4, "vs_ceiling": 1.6, "peak_rss_mb": 900.0,
                 "vs_trl_peak_rss": 1.0},
                {"s_per_step": 4.0, "vs_trl_s_per_step": 1.0, "vs_ceiling": 4.0, "peak_rss_mb": 900.0,
                 "vs_trl_peak_rss": 1.0},
            ],
            "ceiling": {"s_per_step": 1.0, "tokens_per_step": 1000.0, "gemm_gflops": 200.0},
        },
        "growth": {
            "status": "ok",
            "rows": [
                {"questions": 1, "time_vs_linear": 1.0, "peak_vs_smallest": 1.0, "peak_rss_mb": 800.0},
                {"questions": 16, "time_vs_linear": 0.6, "peak_vs_smallest": 1.0, "peak_rss_mb": 800.0},
            ],
        },
        "e2e": {"status": "ok", "demo_status": "not measured, run make demo", "rows": []},
        "ray": {
            "status": "ok",
            "speedup_2_over_1_worker": 1.25,
            "speedup_2_workers_over_local": 1.5,
            "rows": [
                {"arm": "local", "trainings": 4, "wall s": 150.0},
                {"arm": "ray 1 worker", "trainings": 4, "wall s": 125.0},
                {"arm": "ray 2 workers", "trainings": 4, "wall s": 100.0},
            ],
        },
        "precision": {
            "status": "ok",
            "cpu_family": "no native bf16 (AVX2)",
            "rows": [
                {"workload": "matmul", "float32": 100.0, "bfloat16": 25.0, "bf16 / fp32": 0.25, "auto": "float32",
                 "auto is faster": "yes"},
            ],
        },
    }  # fmt: skip
    rows = run_all.headline(results)
    assert {r["#"] for r in rows} == {0, 1, 2, 3, 4, 5, 6, 7}
    [precision] = [r for r in rows if r["#"] == 0]
    assert "no native bf16 (AVX2)" in precision["measure"] and precision["met"] is True
    [ray] = [r for r in rows if "Ray" in r["measure"]]
    assert ray["value"].startswith("1.25x (100 vs 125 s") and "1.5x vs local" in ray["value"]
    [dpo, ceiling, once, shared] = [r for r in rows if r["measure"].startswith("DPO s/step")]
    assert "prompt read once" in once["measure"] and once["value"].startswith("0.625x (2 vs 3.2 s)")
    assert "second arm on the same pairs" in shared["measure"] and shared["value"].startswith("0.8x (1.6 vs 2 s)")
    assert dpo["value"].startswith("0.5x (2 vs 4 s)") and "float32, 2 pairs a step" in dpo["measure"] and dpo["met"]
    assert ceiling["value"].startswith("2x (2 vs 1 s: 1000 tokens at 200 GFLOP/s")
    [sampler] = [r for r in rows if r["goal"] == ">= 500 tok/s"]  # the sampler's goal, on the demo's budget
    assert sampler["measure"] == "sampling, w: wow default tokens/s" and sampler["value"] == "520" and sampler["met"]
    assert all(r["met"] is not False for r in rows)
    summary = {
        "machine": {"cpu_model": "cpu", "cores": 2, "versions": {}},
        "finished": "2025-01-01T00:00:00+00:00",
        "loadavg_before": [1.0, 1.0, 1.0],
        "loadavg_after": [1.0, 1.0, 1.0],
        "total_seconds": 60.0,
        "headline": rows,
        "benches": results,
    }
    text = run_all.write_markdown(summary)
    assert "| # | measure | value | goal | met |" in text and "## sampling" in text


def test_the_readme_table_says_which_benchmarks_were_rerun_and_which_reused(tmp_path, monkeypatch):
    import run_all

    (tmp_path / "README.md").write_text(f"intro\n{run_all.README_START}\nold table\n{run_all.README_END}\nrest\n")
    monkeypatch.setattr(run_all, "REPO", tmp_path)
    summary = {
        "machine": {"cpu_model": "cpu", "cores": 2, "cpu_family": "AMX", "auto_dtype": "bfloat16"},
        "finished": "2026-12-07T00:00:00+00:00",
        "loadavg_before": [1.0, 1.0, 1.0],
        "loadavg_after": [2.0, 2.0, 2.0],
        "total_seconds": 600.0,
        "headline": [{"#": 1, "measure": "m", "value": "v", "goal": "", "met": None}],
        "benches": {"sampling": {}, "precision": {}, "dpo": {"reused": True}},
        "reused": ["dpo"],
    }
    assert run_all.update_readme(summary)
    text = (tmp_path / "README.md").read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "`make bench` took 10 min (rerun now: sampling, precision; the others are the last run's, dpo)." in text


def test_the_readme_is_not_rewritten_from_a_partial_set_of_results(bench_out, tmp_path, monkeypatch):
    import run_all

    readme = tmp_path / "repo" / "README.md"
    readme.parent.mkdir()
    readme.write_text(f"intro\n{run_all.README_START}\nold table\n{run_all.README_END}\n")
    monkeypatch.setattr(run_all, "REPO", readme.parent)
    ran = []

    def fake_run(name, with_demo, timeout):
        ran.append(name)
        return {"name": name, "status": "ok", "bench_seconds": 1.0, "rows": []}

    monkeypatch.setattr(run_all, "run_bench", fake_run)
    # no earlier results.json: --reuse has nothing to take the other benchmarks from
    assert run_all.main(["--only", "precision", "--reuse", "--readme"]) == 2
    assert ran == ["precision"] and "old table" in readme.read_text()
    # a full run, then one benchmark rerun with the others reused: the table is rewritten
    assert run_all.main(["--readme"]) == 0 and "old table" not in readme.read_text()
    readme.write_text(f"intro\n{run_all.README_START}\nold table\n{run_all.README_END}\n")
    assert run_all.main(["--only", "precision", "--reuse", "--readme"]) == 0
    assert "rerun now: precision; the others are the last run's" in readme.read_text()


def test_e2e_bench_reads_timings(bench_out, tmp_path, monkeypatch):
    import bench_e2e

    run = tmp_path / "run"
    run.mkdir()
    (run / "timings.json").write_text(json.dumps({"01_data_prep": 60.0, "02_elicitation": 30.0}))
    monkeypatch.setattr(bench_e2e, "REPO", tmp_path)
    res = bench_e2e.bench_e2e("run")
    assert res["demo_status"].startswith("partial") and res["rows"][-1]["seconds"] == 90.0
    assert json.loads((bench_out / "e2e.json").read_text())["rows"]


def test_e2e_bench_says_where_the_demo_ran_and_which_stages_this_code_would_compute_again(
    smoke_run, bench_out, tmp_path, monkeypatch
):
    """Row 7 of the README reads a demo folder's timings: they are another code's when a stage's fingerprint changed
    (a demo run before the last change), and mean little without the machine they were measured on."""
    import shutil

    import bench_e2e
    import run_all

    repo = tmp_path / "repo"
    copy = repo / "outputs" / smoke_run.name  # a moved run folder keeps its fingerprints (its name is a parameter)
    shutil.copytree(smoke_run, copy)
    monkeypatch.setattr(bench_e2e, "REPO", repo)
    demo = f"outputs/{smoke_run.name}"
    res = bench_e2e.bench_e2e(demo)
    assert res["demo_status"] == "complete" and res["stale_stages"] == []
    assert res["machine"].startswith("Wall times measured on ") and "GOMP_SPINCOUNT=0" in res["machine"]
    rows = run_all.headline({"e2e": {"status": "ok", **res}})
    assert {"#": 7, "measure": "make demo: where", "value": res["machine"], "goal": "", "met": None} in rows
    records = json.loads((copy / "stage_params.json").read_text())
    records["03_acc_wow"]["fingerprint"] = "0" * 24  # as if stage 03 had run on other code: 04 and 05 follow it
    (copy / "stage_params.json").write_text(json.dumps(records))
    res = bench_e2e.bench_e2e(demo)
    assert res["stale_stages"] == ["03_acc_wow", "04_dpo_training", "05_correlation_plots"]
    assert res["demo_status"] == "complete; stale: 03, 04, 05 would run again on this code (make demo)"
    assert (
        run_all.headline({"e2e": {"status": "ok", **res}})[0]["measure"]
        == f"make demo wall time ({res['demo_status']})"
    )
    (copy / "run.yaml").unlink()
    assert bench_e2e.bench_e2e(demo)["stale_stages"] is None  # no parameters: not known, not claimed


def test_ray_bench_times_each_arm_in_its_own_process_and_divides_the_wall_times(bench_out, monkeypatch):
    import bench_ray

    walls = {"local": 150.0, "ray 1 worker": 125.0, "ray 2 workers": 100.0}
    started = []

    def fake_child(args, timeout):
        arm = args[args.index("--child") + 1]
        started.append(arm)
        threads = 1 if arm == "ray 2 workers" else 2
        return {"arm": arm, "wall_seconds": walls[arm], "training_seconds": [30.0, 40.0], "steps": [4, 4],
                "threads_per_training": threads}  # fmt: skip

    monkeypatch.setattr(bench_ray, "run_child", fake_child)
    assert bench_ray.main(["--settings", "2", "--reps", "2"]) == 0
    assert started == list(walls) + list(reversed(walls))  # alternating order over repetitions
    written = json.loads((bench_out / "ray.json").read_text())
    assert written["speedup_2_over_1_worker"] == pytest.approx(1.25)
    assert written["speedup_2_workers_over_local"] == pytest.approx(1.5)
    by_arm = {r["arm"]: r for r in written["rows"]}
    assert by_arm["ray 2 workers"]["threads per training"] == 1 and by_arm["local"]["speed-up vs ray 1 worker"] == 0.83
    assert "demo stage 04: 2 DPO trainings" in written["workload"]


def test_ray_bench_trains_with_the_demo_set_s_stage_04_settings():
    """The arms train as the demo's stage 04 does: every setting read through the parameter model, defaults included
    (the demo set leaves ``max_eval_pairs`` and ``in_run_validation`` to them)."""
    import bench_ray
    from wow import params

    demo = params.load(BENCH.parent / "parameters" / "demo.yaml")
    config = bench_ray._config("float32", 1)
    assert (config.train_batch_size, config.max_steps, config.learning_rate, config.epochs) == (
        demo.train_batch_size, demo.max_steps, demo.learning_rates[0], demo.epochs[0]
    )  # fmt: skip
    assert (config.max_eval_pairs, config.in_run_validation) == (demo.max_eval_pairs, demo.in_run_validation)
    assert (config.bf16, config.cpu_threads) == (False, 1)


def test_dpo_bench_compares_five_arms_and_the_compute_ceiling(bench_out, monkeypatch):
    import bench_dpo

    per_step = {
        "wow": 3.0,
        "wow-repeated-prompts": 4.5,
        "wow-every-position": 6.0,
        "wow-shared-reference": 2.4,
        "trl": 6.0,
    }
    started = []

    def fake_child(args, timeout=None):
        arm = args[args.index("--child") + 1]
        started.append(arm)
        return {"which": arm, "step_seconds": [10.0] + [per_step[arm]] * 4, "step_tokens": [900, 1000, 1000, 1000,
                1000], "s_per_step": per_step[arm], "first_step_seconds": 10.0, "total_seconds": 40.0,
                "train_loss": 0.69, "bf16": False, "peak_rss_mb": 1000.0}  # fmt: skip

    monkeypatch.setattr(bench_dpo, "run_child", fake_child)
    monkeypatch.setattr(bench_dpo, "model_gemm_gflops", lambda config, bf16: 212.336640)
    assert bench_dpo.main(["--reps", "2"]) == 0
    assert started == list(bench_dpo.ARMS) + list(reversed(bench_dpo.ARMS))
    written = json.loads((bench_out / "dpo.json").read_text())
    # SmolLM2-135M: 30 layers x (576 x (2 x 576 + 2 x 192) + 3 x 576 x 1536) = 106,168,320 linear parameters
    assert written["ceiling"]["linear_parameters"] == 106_168_320
    # 6 x 106,168,320 x 1000 tokens = 637.0 GFLOP at 212.34 GFLOP/s = 3.0 s (the first step's tokens not counted)
    assert written["ceiling"]["tokens_per_step"] == 1000
    assert written["ceiling"]["s_per_step"] == pytest.approx(3.0)
    wow, repeated, every, shared, trl = written["rows"]
    assert wow["vs_trl_s_per_step"] == 0.5 and every["vs_trl_s_per_step"] == 1.0 and trl["vs_ceiling"] == 2.0
    assert repeated["vs_trl_s_per_step"] == 0.75 and "prompts repeated" in repeated["method"]
    assert shared["vs_trl_s_per_step"] == pytest.approx(0.4) and "reference reused" in shared["method"]
    assert wow["vs_ceiling"] == 1.0 and wow["first_step_s"] == 10.0 and written["precision"] == "float32"
