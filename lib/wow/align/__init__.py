"""Preference alignment through TRL, with LoRA adapters (peft), and the paper's grid search: the command line and
the names the rest of wow uses. The work is done in three modules, by job:

* :mod:`wow.align.align_config`: the trainer table (which TRL trainer and loss each name is) and :class:`AlignConfig`;
* :mod:`wow.align.training`: one training run, :func:`train` (resumable; ``train_log.json``), with
  :mod:`wow.align.checkpoints` (resuming, the best checkpoint), :mod:`wow.align.quantization` (4-bit QLoRA) and
  :mod:`wow.align.truncation` (the paper's length rule);
* :mod:`wow.align.grid`: :func:`grid_search` over learning rate x scheduler x weight decay x epochs, and the choice.

The same entry point runs data-parallel on several GPUs (several CPU processes with ``ACCELERATE_USE_CPU=1``;
``--cpu`` alone starts one); only the main process writes the adapter, the logs and ``train_log.json``
(docs/scale.md)::

    accelerate launch --multi_gpu --num_processes 2 -m wow.align --preferences outputs/demo/preferences/self_oracle \\
        --trainer dpo --output outputs/demo/models/self_oracle_dpo --train-batch-size 1

Example::

    from wow import preferences
    from wow.align import training
    ds = preferences.load_preferences("outputs/demo/preferences/self_oracle")
    result = training.train(ds["train"], ds["validation"], "smollm2-135m", "dpo", "outputs/demo/models/self_oracle_dpo")
"""
