"""The offline default model converts once, reloads fast, and generates; hub ids fail fast offline."""

import time

import pytest
from wow import WowError
from wow.backends import models


def test_default_model_generates_a_reply(default_model):
    model, tok = default_model
    msgs = [{"role": "user", "content": "What is 2+3? Answer with a number."}]
    enc = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    reply = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert reply.strip(), "the default model produced an empty reply"
    assert tok.padding_side == "left" and tok.pad_token is not None


def test_second_load_reuses_the_converted_folder_without_converting(monkeypatch):
    """What a cached load does, not how long it takes: the GGUF file is never read again and the converted
    folder's files are not rewritten (the README's < 5 s goal is measured in bench/)."""
    folder = models.default_model_path()  # make sure it is converted
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def no_conversion():
        raise AssertionError("the default model was converted again")

    monkeypatch.setattr(models, "_gguf_dir", no_conversion)  # the conversion's first step
    model, _ = models.load_model(models.DEFAULT_MODEL)
    assert models.resolve(models.DEFAULT_MODEL).source.startswith(str(models.cache_dir()))
    assert not hasattr(model, "hf_quantizer") or model.hf_quantizer is None
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps


def test_hub_id_offline_fails_fast_with_advice(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(WowError, match="HF_HUB_OFFLINE|pre-download|Pre-download"):
        models.resolve("someorg/not-a-cached-model")
    assert time.perf_counter() - t0 < 10


def test_unknown_model_name_is_refused():
    with pytest.raises(WowError, match="unknown model name"):
        models.resolve("definitely not a model")


def test_api_models_resolve_without_loading():
    assert models.resolve("gpt-4o").kind == "api"
    assert models.resolve("openai:my-served-model").source == "my-served-model"
    with pytest.raises(WowError, match="API"):
        models.load_model("gpt-4o")


def test_make_install_prepares_the_offline_default_once():
    """``make install`` converts the GGUF file (``wow models --prepare``), so a first run does not; once converted,
    the command only names the folder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    plan = subprocess.run(
        ["make", "-n", "--no-print-directory", "install"], cwd=root, env=env, capture_output=True, text=True
    ).stdout
    assert "wow models --prepare" in plan
    folder = models.default_model_path()
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    out = subprocess.run(
        [sys.executable, "-m", "wow.cli", "models", "--prepare"], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == f"{models.DEFAULT_MODEL}: {folder}" and (folder / "model.safetensors").exists()
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps  # not converted again
