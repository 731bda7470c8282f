"""wow: varying shades of wrong.

A toolkit that reproduces and extends "Varying Shades of Wrong: Aligning LLMs with Wrong Answers Only"
(Yao et al., 2024): build tasks whose wrong answers are graded, sample answers from a model, elicit
wrong-over-wrong preferences (consistency, confidence, length, LLM judges), measure them (Acc_WoW), align a
model on them with TRL and evaluate whether it becomes less wrong, more correct and better calibrated.

The numbered notebooks in ``notebooks/`` call this package; ``wow run parameters/<set>.yaml`` executes them.
"""

import logging
import os

__version__ = "0.1.0"

# OpenMP threads (torch) spin-wait for a busy sibling by default: on a shared 2-core machine that made DPO steps
# 10x slower (measured: 7.6 s/step passive, 50-75 s spinning). Set before torch is imported (every entry point and
# notebook imports wow first); an explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

logging.getLogger(__name__).addHandler(logging.NullHandler())


class WowError(Exception):
    """An error with a message meant for the user: it names the problem and what to do about it."""

    def _render_traceback_(self) -> list[str]:
        """How IPython shows it in a notebook: one line (what went wrong and what to do), no stack frames."""
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]
