"""One module per notebook: ``NN_name.ipynb`` calls ``wow.steps.<name>`` (``data_prep``, ``elicitation``,
``acc_wow``, ``dpo_training``, ``correlation_plots``), and every artefact of that stage is written there.
:mod:`wow.steps.context` is the run context the steps that call models take; :mod:`wow.steps.stage_metrics` the
numbers every stage records."""
