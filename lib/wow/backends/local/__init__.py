"""The engine of local Hugging Face models (:mod:`wow.backends.local.transformers_engine`) and its parts: shared
prompt prefixes read once, token choice, preallocated KV buffers, row-wise attention, the batch-invariant mode."""
