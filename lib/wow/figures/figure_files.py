"""Writing figures to files: PNG and PDF under one stem, file-safe name parts, and the note of an empty panel.

Example::

    from wow.figures.figure_files import stem_part, save
    save(fig, run_dir / f"fig2_{stem_part('gpt-3.5-turbo')}")   # fig2_gpt-3_5-turbo.png and .pdf
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from wow import io


def save(fig: plt.Figure, path: str | Path | None) -> list[Path]:
    """Save ``fig`` as ``<path>.png`` (150 dpi) and ``<path>.pdf``; returns the files written.

    The suffix is appended to the whole name (``fig2_gpt-3.5-turbo`` keeps its ``.5-turbo``); a path that already
    ends in ``.png`` or ``.pdf`` stands for its stem.
    """
    if path is None:
        return []
    path = Path(path)
    if path.suffix.lower() in (".png", ".pdf"):
        path = path.with_suffix("")
    out = []
    for suffix in (".png", ".pdf"):
        target = path.with_name(path.name + suffix)
        with io.atomic_path(target) as tmp:  # a unique temporary file, renamed over the target
            metadata = {"CreationDate": None} if suffix == ".pdf" else None
            fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight", metadata=metadata)
        out.append(target)
    return out


def stem_part(name: str) -> str:
    """``name`` as a file-stem part: characters other than letters, digits and ``-`` become ``_``.

    Dots go too: :func:`save` adds the suffix to a stem, so ``gpt-3.5-turbo`` or ``score_0.5`` would lose their tail.
    """
    return "".join(c if c.isalnum() or c == "-" else "_" for c in name)


def empty_panel(ax: plt.Axes, message: str) -> None:
    """Write ``message`` in the middle of an axes that has nothing to draw, without ticks."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=10, color="0.4", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
