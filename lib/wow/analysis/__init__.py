"""The numbers, and nothing else: Acc_WoW and its tables, bootstrap intervals, the evaluation metrics, the alignment
table, the gains and Fig 3's slope, the signal audit. No module here loads a model, imports TRL or draws a figure
(tests/test_imports.py)."""
