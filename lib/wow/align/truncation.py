"""The paper's length rule for preference pairs (TRL 0.9's, which TRL 1.16 no longer has): a pair whose prompt +
longer answer exceeds ``max_length`` tokens has its prompt cut to its last ``max_prompt_length`` tokens (the chat
frame kept, the start of the message text cut); answers that still do not fit are cut at ``max_length`` by TRL. No
pair is dropped. :func:`wow.align.training.train` applies it to both splits and records the counts.

Example::

    from wow.align.truncation import prepare_examples
    dataset, counts = prepare_examples(pairs, tokenizer, AlignConfig(), "train")   # counts["prompts_truncated"]
"""

from __future__ import annotations

import logging

from wow import WowError
from wow.align.align_config import AlignConfig

log = logging.getLogger(__name__)


def _chat_lengths(tokenizer, conversations: list[list[dict]], generation_prompt: bool) -> list[int]:
    """Token counts of conversations rendered with the chat template."""
    ids = tokenizer.apply_chat_template(
        conversations, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False
    )
    return [len(x) for x in ids]


def _keep_prompt_end(tokenizer, prompt: list[dict], max_prompt_length: int) -> list[dict]:
    """The prompt with the start of its message text cut until the rendered prompt fits ``max_prompt_length`` tokens.

    The chat frame (system turn, role headers, generation prompt) stays whole; text is cut from the first message
    on, so the end of the prompt (the question) is kept, as TRL 0.9's ``keep_end`` kept the last tokens.

    Raises:
        WowError: the frame alone is longer than ``max_prompt_length``.
    """
    messages = [dict(m) for m in prompt]
    for m in messages:
        while (excess := _chat_lengths(tokenizer, [messages], True)[0] - max_prompt_length) > 0 and m["content"]:
            ids = tokenizer(m["content"], add_special_tokens=False)["input_ids"]
            cut = tokenizer.decode(ids[excess:])  # re-tokenised text may differ by a token: measured again
            m["content"] = cut if len(cut) < len(m["content"]) else m["content"][1:]
        if excess <= 0:
            return messages
    raise WowError(
        f"the chat template alone takes more than max_prompt_length={max_prompt_length} tokens; raise "
        "max_prompt_length (the paper: 512)."
    )


#: ``prepare_examples`` results of this process: a grid trains the same pairs up to 81 times (measuring and cutting 4000
#: long pairs takes about a minute on 2 CPU cores).
_PREPARED: dict[tuple, tuple] = {}


def prepare_examples(ds, tokenizer, config: AlignConfig, name: str):
    """Keep the TRL columns and truncate over-long prompts as TRL 0.9 (the paper's) did; see ``max_prompt_length``.

    Returns:
        ``(dataset or None, counts)``; counts: ``pairs``, ``over_max_length`` (prompt + longer answer over
        ``max_length``), ``prompts_truncated`` (of those, prompts over ``max_prompt_length``: cut), ``answers_truncated``
        (pairs with an answer that still does not fit, which TRL then cuts at the end) and ``longest_prompt``.
    """
    if ds is None or len(ds) == 0:
        return None, {
            "pairs": 0,
            "over_max_length": 0,
            "prompts_truncated": 0,
            "answers_truncated": 0,
            "longest_prompt": 0,
        }
    key = (ds._fingerprint, tokenizer.name_or_path, len(tokenizer), config.max_length, config.max_prompt_length)
    if key not in _PREPARED:
        if len(_PREPARED) >= 8:
            _PREPARED.clear()
        _PREPARED[key] = _truncate(ds, tokenizer, config)
    prepared, counts = _PREPARED[key]
    if counts["over_max_length"]:
        log.info(
            "%s: %d of %d pairs have prompt + answer over max_length=%d tokens: %d prompts cut to their last %d "
            "tokens (longest was %d), %d pairs with an answer cut at max_length",
            name,
            counts["over_max_length"],
            counts["pairs"],
            config.max_length,
            counts["prompts_truncated"],
            config.max_prompt_length,
            counts["longest_prompt"],
            counts["answers_truncated"],
        )
    return prepared, dict(counts)


def _truncate(ds, tokenizer, config: AlignConfig):
    """:func:`prepare_examples` of a non-empty set, uncached."""
    import datasets

    ds = ds.select_columns(["prompt", "chosen", "rejected"])
    prompts, chosen, rejected = list(ds["prompt"]), list(ds["chosen"]), list(ds["rejected"])
    prompt_len = _chat_lengths(tokenizer, prompts, True)
    chosen_len = _chat_lengths(tokenizer, [p + c for p, c in zip(prompts, chosen, strict=True)], False)
    rejected_len = _chat_lengths(tokenizer, [p + r for p, r in zip(prompts, rejected, strict=True)], False)
    # the longer answer's tokens, as TRL 0.9 measured them
    answer_len = [max(c, r) - n for n, c, r in zip(prompt_len, chosen_len, rejected_len, strict=True)]
    too_long = [n + a > config.max_length for n, a in zip(prompt_len, answer_len, strict=True)]
    cut = [i for i, n in enumerate(prompt_len) if too_long[i] and n > config.max_prompt_length]
    final_len = list(prompt_len)
    for i in cut:
        prompts[i] = _keep_prompt_end(tokenizer, prompts[i], config.max_prompt_length)
        final_len[i] = _chat_lengths(tokenizer, [prompts[i]], True)[0]
    # in memory, cut or not: TRL's tokenising map on a set loaded from a run folder would write cache-*.arrow files
    # into that folder (a Ray worker does, where the kernel's set reached it as the files)
    columns = {"prompt": prompts, "chosen": chosen, "rejected": rejected}
    ds = datasets.Dataset.from_dict(columns, features=ds.features)
    counts = {
        "pairs": len(ds),
        "over_max_length": sum(too_long),
        "prompts_truncated": len(cut),
        "answers_truncated": sum(n + a > config.max_length for n, a in zip(final_len, answer_len, strict=True)),
        "longest_prompt": max(prompt_len),
    }
    return ds, counts
