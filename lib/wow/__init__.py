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

# OpenMP threads (torch's libgomp) wait for each other at the end of every parallel region. By default they spin
# for about 300,000 iterations first: on a shared 2-core machine that made DPO steps 10x slower (measured: 7.6 s/step
# passive, 50-75 s spinning). Passive waiting alone (no spin) costs a decoding step, hundreds of small parallel
# regions, a wake-up each: 254 tok/s against 405 spinning on the demo's sampling (Intel Xeon with AMX, 2 cores, alone).
# 10,000 spins (microseconds) then sleep: 390 tok/s alone; with a second busy process on the cores, 125 tok/s each
# against 250 passive, and a training step 15% slower (measured 2026-12-07; docs/footguns.md). Set before torch is
# imported (every entry point and notebook imports wow first); a wait policy set in the environment wins, spin count
# included.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

logging.getLogger(__name__).addHandler(logging.NullHandler())


class WowError(Exception):
    """An error with a message meant for the user: it names the problem and what to do about it."""

    def _render_traceback_(self) -> list[str]:
        """How IPython shows it in a notebook: one line (what went wrong and what to do), no stack frames."""
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]
