"""Prefilled turns and next-token choices over an OpenAI-compatible server (wow.backends.api.continuation): the
bodies sent in each prefill mode, the choice reading, the logprob judge against the local engine on a real llama.cpp
server, and stage 02 of ``wow run`` judging in logprob mode through that server."""

import json
import math
from types import SimpleNamespace

import pytest
from wow import WowError, params
from wow.backends import ChatRequest, EngineError, get_engine
from wow.backends.api import continuation
from wow.backends.api.openai_engine import OpenAIEngine
from wow.elicit import judges

PREFILL = "Preferred output: "
MESSAGES = [{"role": "user", "content": "Which is better? Output 1: 4. Output 2: 5."}]


def test_choices_are_read_from_the_top_candidates_exact_spaced_or_bounded():
    top = {"1": -0.5, " 2": -1.5, "2": -2.0, "The": -3.0}
    assert continuation.choice_logprobs(top, ["1", "2"]) == {"1": -0.5, "2": -2.0}  # the exact token first
    assert continuation.choice_logprobs({"1": -0.5, " 2": -1.5}, ["1", "2"]) == {"1": -0.5, "2": -1.5}
    # outside the candidates: the smallest candidate logprob, an upper bound (never a made-up zero)
    assert continuation.choice_logprobs({"1": -0.1, "x": -4.0}, ["1", "5"]) == {"1": -0.1, "5": -4.0}
    with pytest.raises(WowError, match="no top logprobs"):
        continuation.choice_logprobs({}, ["1"])


class FakeClient:
    """Records every body; answers a chat call with "ok" and a raw completion with its top candidates."""

    def __init__(self):
        self.sent = []
        self.chat = SimpleNamespace(completions=SimpleNamespace(create=self._chat))
        self.completions = SimpleNamespace(create=self._raw)

    def _chat(self, **body):
        self.sent.append(("chat", body))
        top = [SimpleNamespace(token="1", logprob=-0.2), SimpleNamespace(token="2", logprob=-1.8)]
        logprobs = SimpleNamespace(content=[SimpleNamespace(token="1", logprob=-0.2, top_logprobs=top)])
        message = SimpleNamespace(content="ok")
        choice = SimpleNamespace(message=message, logprobs=logprobs, finish_reason="stop")
        return SimpleNamespace(choices=[choice], usage=SimpleNamespace(prompt_tokens=5, completion_tokens=1))

    def _raw(self, **body):
        self.sent.append(("completions", body))
        logprobs = SimpleNamespace(token_logprobs=[-0.3], top_logprobs=[{"1": -0.3, "2": -1.4}])
        choice = SimpleNamespace(text="1", logprobs=logprobs, finish_reason="length")
        return SimpleNamespace(choices=[choice], usage=SimpleNamespace(prompt_tokens=6, completion_tokens=1))


def test_chat_mode_sends_the_prefill_as_a_final_assistant_turn_to_continue():
    client = FakeClient()
    engine = OpenAIEngine("m", base_url="http://x/v1", client=client, prefill="chat")
    request = ChatRequest(messages=MESSAGES, max_tokens=4, temperature=0.0, prefill=PREFILL)
    assert engine.supports_prefill and engine.generate([request])[0].text == "ok"
    assert engine.choice_logprobs([request], ["1", "2"]) == [{"1": -0.2, "2": -1.8}]
    (kind, body), (_, top) = client.sent
    assert kind == "chat" and body["messages"] == [*MESSAGES, {"role": "assistant", "content": PREFILL}]
    assert body["extra_body"] == {"continue_final_message": True, "add_generation_prompt": False}
    assert (top["max_tokens"], top["temperature"], top["top_logprobs"]) == (1, 0.0, continuation.TOP_LOGPROBS)
    assert engine.identity()["prefill"] == "chat"


def test_completions_mode_renders_the_chat_template_as_the_local_engine_does():
    from transformers import AutoTokenizer
    from wow.backends import models

    client = FakeClient()
    engine = OpenAIEngine(
        "m", base_url="http://x/v1", client=client, prefill="completions", chat_template="smollm2-135m"
    )
    request = ChatRequest(messages=MESSAGES, max_tokens=4, temperature=0.0, prefill=PREFILL)
    assert engine.generate([request])[0].text == "1"
    assert engine.choice_logprobs([request], ["1", "2"]) == [{"1": -0.3, "2": -1.4}]
    plain = engine.generate([ChatRequest(messages=MESSAGES, max_tokens=4)])[0]  # no prefill: a chat call
    tokenizer = AutoTokenizer.from_pretrained(models.resolve("smollm2-135m").source)
    rendered = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) + PREFILL
    (kind, body), (_, top), (last, _) = client.sent
    assert (kind, body["prompt"], body["max_tokens"]) == ("completions", rendered, 4)
    assert top["prompt"] == rendered and top["logprobs"] == continuation.TOP_LOGPROBS and top["max_tokens"] == 1
    assert last == "chat" and plain.text == "ok"
    assert engine.usage()["prompt_tokens"] == 6 + 6 + 5


def test_without_a_prefill_mode_the_engine_says_how_to_get_one_and_the_rules_check_the_setting():
    engine = OpenAIEngine("m", base_url="http://x/v1", client=FakeClient())
    assert not engine.supports_prefill and "prefill" not in engine.identity()  # the old cache keys stay
    with pytest.raises(EngineError, match="set api_prefill"):
        engine.choice_logprobs([ChatRequest(messages=MESSAGES, max_tokens=1)], ["1", "2"])
    with pytest.raises(WowError, match="api_chat_template"):
        OpenAIEngine("m", base_url="http://x/v1", client=FakeClient(), prefill="completions")
    judged = {
        "judges": ["openai:gpt-4o"],
        "judge_modes": ["logprob"],
        "pref_types": ["direct"],
        "base_url": "http://x",
    }
    with pytest.raises(WowError, match="api_prefill: chat for vLLM, completions for llama.cpp"):
        params.validate(judged)
    with pytest.raises(WowError, match="set base_url"):
        params.validate({"api_prefill": "chat"})
    assert params.validate({**judged, "api_prefill": "chat"}).api_prefill == "chat"


def _answers():
    """Two questions' wrong answers of one generator (train split), as stage 01 writes them."""
    rows = []
    for q, values in enumerate([(7, 12), (3, 8)]):
        content = (
            f"In a graph, what is the shortest path weight from node 0 to node {q + 3}? Edges: 0-1 w2, 1-{q + 3} w4."
        )
        for i, value in enumerate(values):
            rows.append(
                {
                    "answer_id": f"q{q}|g|{i}", "question_id": f"q{q}", "task": "shortest_path", "split": "train",
                    "generator": "g", "sample_index": i, "permutation": None,
                    "prompt_messages": [{"role": "user", "content": content}],
                    "text": f"The total weight is {value}.", "extracted": value, "raw_label": -abs(value - 6.0),
                    "correctness": 0.5, "is_correct": False,
                }
            )  # fmt: skip
    return rows


@pytest.mark.slow
def test_the_logprob_judge_over_llama_cpp_matches_the_local_engine(llama_server):
    """The server runs the same weights with llama.cpp's Q4_1 kernels where the local engine dequantises them to
    float: the choice probabilities agree within 0.1 (measured: about 0.015 on short prompts, up to 0.063 on the
    smoke run's graph prompts), so the verdicts agree where P(1) and P(2) are further apart than 0.2."""
    answers = _answers()
    server = OpenAIEngine(
        "smollm2-135m", base_url=llama_server + "/v1", prefill="completions", chat_template="smollm2-135m"
    )
    local = get_engine("transformers", model="smollm2-135m", dtype="float32")
    far, near = (judges.judge_pairwise(e, answers, "j", "logprob", max_pairs=10, seed=0) for e in (server, local))
    assert len(far) == len(near) == 2
    for a, b in zip(far, near, strict=True):
        for order in ("forward", "reverse"):
            assert a[order]["p1"] == pytest.approx(b[order]["p1"], abs=0.1), (a["pair_id"], order)
            if abs(b[order]["p1"] - b[order]["p2"]) > 0.2:
                assert a[order]["verdict"] == b[order]["verdict"]
    scored = [judges.judge_scores(e, answers, "j", k=1, mode="logprob") for e in (server, local)]
    for a, b in zip(*scored, strict=True):
        assert a["scores"][0] == pytest.approx(b["scores"][0], abs=0.25)  # expected score over 0..5
    local.close()


@pytest.mark.slow
def test_wow_run_stage_02_judges_in_logprob_mode_through_the_llama_cpp_server(smoke_run, llama_server, tmp_path):
    import shutil

    from wow.cli import run

    copy = tmp_path / "runs" / smoke_run.name
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns(".wow.lock"))
    judge = "openai:smollm2-135m"
    server = {"base_url": llama_server + "/v1", "api_prefill": "completions", "api_chat_template": "smollm2-135m"}
    # logprob mode only: the text mode's generated verdicts through the server are not what this test checks
    run.run(
        "parameters/smoke.yaml",
        output_root=str(copy.parent),
        only=["02"],
        judges=[judge],
        judge_modes=["logprob"],
        **server,
    )
    rows = [json.loads(line) for line in (copy / "judgements" / "pairwise_openai-smollm2-135m_logprob.jsonl").open()]
    local = {
        r["pair_id"]: r
        for r in map(json.loads, (smoke_run / "judgements" / "pairwise_smollm2-135m_logprob.jsonl").open())
    }
    assert rows and {r["pair_id"] for r in rows} <= set(local)
    for r in rows:  # the local judge's verdict probabilities in the smoke run, within the quantisation (see above)
        assert r["forward"]["parse_error"] is None
        assert r["forward"]["p1"] == pytest.approx(local[r["pair_id"]]["forward"]["p1"], abs=0.1)
        assert math.isclose(r["forward"]["p1"] + r["forward"]["p2"], 1.0, abs_tol=1e-6)
    assert json.loads((copy / "stage_params.json").read_text())["02_elicitation"]["values"]["api_prefill"] == (
        "completions"
    )
