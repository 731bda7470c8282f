"""Vera plausibility scores (the paper's COM2 and HellaSwag labeler), optional.

Vera (``liujch1998/vera``, a T5 encoder fine-tuned to rate commonsense statements) scores a statement as follows:
encode it, take the last hidden state of the statement's last non-padding token ``h``, compute
``logit = w . h + b`` with ``w`` = row 32099 of the shared input embedding and ``b`` = element 0 of row 32098,
divide by the temperature ``t`` = element 0 of row 32097, and take the sigmoid. The weights are large (a T5-XXL
encoder, ~5B parameters, ~10 GB in bf16) and are downloaded from the hub: this labeler is never the offline default,
and the tests check its arithmetic on a tiny randomly initialised T5 encoder only.

Example::

    scorer = VeraScorer()                      # downloads the weights once
    scorer.score(["Water is wet.", "Fire is cold."])  # [0.9..., 0.0...]
"""

from __future__ import annotations

import logging

from wow import WowError

log = logging.getLogger(__name__)

VERA_ID = "liujch1998/vera"
W_ROW, B_ROW, T_ROW = 32099, 32098, 32097


def scores_from_hidden(hidden, attention_mask, embedding):
    """Vera's head on encoder outputs.

    Args:
        hidden: last hidden states, ``(batch, seq, d)``.
        attention_mask: ``(batch, seq)``, right-padded (1 for tokens, 0 for padding).
        embedding: the shared input embedding matrix, ``(vocab, d)`` with vocab > 32099.

    Returns:
        a float tensor of plausibility scores in (0, 1), one per statement.
    """
    import torch

    last = attention_mask.long().sum(dim=1) - 1
    h = hidden[torch.arange(hidden.shape[0]), last].float()
    w, b, t = embedding[W_ROW].float(), embedding[B_ROW, 0].float(), embedding[T_ROW, 0].float()
    return torch.sigmoid((h @ w + b) / t)


class VeraScorer:
    """Plausibility of statements with a Vera checkpoint.

    Args:
        model: a hub id or local folder of a Vera checkpoint (default ``liujch1998/vera``); or a loaded
            ``T5EncoderModel`` (then ``tokenizer`` is required).
        tokenizer: the tokenizer when ``model`` is an object.
        batch_size: statements per forward pass.
        dtype: ``bfloat16`` (the paper) or ``float32``.
    """

    def __init__(self, model=VERA_ID, tokenizer=None, batch_size: int = 8, dtype: str = "bfloat16"):
        import torch

        if isinstance(model, str):
            from transformers import AutoTokenizer, T5EncoderModel

            try:
                tokenizer = AutoTokenizer.from_pretrained(model)
                model = T5EncoderModel.from_pretrained(model, dtype=getattr(torch, dtype))
            except OSError as e:
                raise WowError(
                    f"could not load the Vera model {model!r} ({str(e)[:200]}). It is a ~10 GB download: fetch it "
                    "once with network access, or use labeler='minilm' (offline option-to-gold similarity)."
                ) from None
        elif tokenizer is None:
            raise WowError("VeraScorer: pass the tokenizer together with a loaded model")
        self.model, self.tokenizer, self.batch_size = model.eval(), tokenizer, batch_size
        if self.model.get_input_embeddings().weight.shape[0] <= W_ROW:
            raise WowError("VeraScorer: the model's vocabulary is smaller than 32100 rows; not a Vera/T5 checkpoint")

    def score(self, statements: list[str]) -> list[float]:
        """Plausibility of each statement.

        Args:
            statements: the statements.

        Returns:
            one score in (0, 1) per statement, rounded to 6 decimals.
        """
        import torch

        out: list[float] = []
        embedding = self.model.get_input_embeddings().weight
        with torch.inference_mode():
            for i in range(0, len(statements), self.batch_size):
                self.tokenizer.padding_side = "right"
                enc = self.tokenizer(statements[i : i + self.batch_size], padding=True, return_tensors="pt")
                enc = {k: v.to(self.model.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
                hidden = self.model(**enc).last_hidden_state
                out += [round(float(s), 6) for s in scores_from_hidden(hidden, enc["attention_mask"], embedding)]
        return out


def plausibility_labels(
    statements: list[list[list[str]]], golds: list[int], scorer: VeraScorer | None = None
) -> list[list[float]]:
    """Option labels from Vera: per option, the mean score of its statements; the gold option gets exactly 1.0.

    Args:
        statements: per question, per option, the statements to score (COM2: one per condition).
        golds: per question, the gold option index.
        scorer: a :class:`VeraScorer` (default: the hub checkpoint).

    Returns:
        per question, one label per option.
    """
    scorer = scorer or VeraScorer()
    flat = [s for q in statements for opt in q for s in opt]
    scores = iter(scorer.score(flat))
    out = []
    for q, g in zip(statements, golds, strict=True):
        labels = [round(sum(next(scores) for _ in opt) / len(opt), 6) for opt in q]
        labels[g] = 1.0
        out.append(labels)
    return out
