"""The paper's figures from a run's tables (matplotlib), each saved as PNG and PDF (:mod:`wow.figures.figure_files`)."""
