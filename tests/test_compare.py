"""``wow compare``: one small table of what changes between two runs, on two hand-made run folders."""

import pytest
from wow import WowError, io
from wow.cli import compare
from wow.cli.commands import main

ACC_HEADER = "task,generator,split,method,judge,check,margin,n_candidates,n_missing,n_pairs,n_hits,acc_wow\n"


def make_run(folder, protocol, parsed, acc_rows):
    folder.mkdir()
    (folder / "run.yaml").write_text(f"run_name: {folder.name}\nprotocol: {protocol}\n")
    answers = [
        {"answer_id": f"q|g|{i}", "task": "shortest_path", "extracted": 3 if i < parsed else None} for i in range(10)
    ]
    io.write_jsonl(folder / "answers.jsonl", answers)
    (folder / "acc_wow.csv").write_text(ACC_HEADER + "".join(acc_rows))
    return folder


def test_compare_two_runs_by_hand(tmp_path, capsys):
    a = make_run(
        tmp_path / "wow_run",
        "wow",
        9,
        [
            "shortest_path,g,train,oracle,,none,1.0,20,0,20,20,1.0\n",
            "shortest_path,g,train,length,,none,1.0,20,0,20,12,0.6\n",
            "shortest_path,g,train,length,,none,0.5,20,0,10,6,0.6\n",  # M = 0.5: not in the table
            "shortest_path,g,train,pairwise_logprob,j,both_orders,1.0,20,0,8,6,0.75\n",
        ],
    )
    b = make_run(
        tmp_path / "paper_run",
        "paper",
        2,
        [
            "shortest_path,g,train,oracle,,none,1.0,1,0,1,1,1.0\n",
            "shortest_path,g,train,length,,none,1.0,1,0,1,0,0.0\n",
        ],
    )
    rows = compare.compare(a, b).set_index(["what", "task"])
    assert rows.loc[("protocol", ""), ["a", "b"]].tolist() == ["wow", "paper"]
    # parse rate 9/10 -> 2/10
    assert rows.loc[("parse rate", "shortest_path")].tolist() == ["0.900", "0.200", "-0.700"]
    assert rows.loc[("wrong-over-wrong pairs", "shortest_path")].tolist() == ["20", "1", "-19"]
    # length: 12/20 = 0.6 -> 0/1 = 0.0
    assert rows.loc[("Acc_WoW M=1: length", "shortest_path")].tolist() == ["0.600 (n=20)", "0.000 (n=1)", "-0.600"]
    # a method only A ran
    assert rows.loc[("Acc_WoW M=1: pairwise_logprob (j) [both_orders]", "shortest_path")].tolist() == [
        "0.750 (n=8)",
        "-",
        "",
    ]
    # per aligned setting: Δp_wrong beside the parse rate after alignment and the parsed-only Δp_wrong
    header = "setting,task,eval_task,d_p_wrong,after_parse_rate,d_p_wrong_parsed,d_mean_length\n"
    (a / "alignment.csv").write_text(header + "self_oracle_dpo,shortest_path,shortest_path,0.05,0.95,0.04,-2\n")
    (b / "alignment.csv").write_text(header + "self_oracle_dpo,shortest_path,shortest_path,-0.3,0.25,0.1,30\n")
    rows = compare.compare(a, b).set_index(["what", "task"])
    assert rows.loc[("self_oracle_dpo: parse rate after alignment", "shortest_path")].tolist() == [
        "0.950",
        "0.250",
        "-0.700",
    ]
    assert rows.loc[("self_oracle_dpo: Δp_wrong, parsed answers only", "shortest_path"), "delta"] == "+0.060"
    assert rows.loc[("self_oracle_dpo: Δp_wrong", "shortest_path"), "delta"] == "-0.350"
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["what", "task", "wow_run", "paper_run", "B", "-", "A"]
    assert "0.600 (n=20)" in out and "0.000 (n=1)" in out


def test_compare_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(WowError, match="not a run folder"):
        compare.compare(tmp_path / "empty", tmp_path / "empty")
    assert main(["compare", str(tmp_path / "nothing"), str(tmp_path / "empty")]) == 1
    assert "is not a folder" in capsys.readouterr().err
