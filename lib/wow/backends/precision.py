"""Which floating-point precision is fast on the machine at hand: ``dtype: auto`` resolved once per run.

bfloat16 halves memory and, where the hardware multiplies it fast (CUDA GPUs with bf16 support; x86 CPUs with AMX;
ARM CPUs with the BF16 extension), runs faster than float32. Where it does not, it is slower: PyTorch emulates it on
CPUs without bf16 instructions (measured on an Intel Xeon with AVX-512 but no AVX512-BF16: one thread multiplies at
25.8 GFLOP/s in bf16 against 118 GFLOP/s in float32, 4.6x slower), and AVX512-BF16 alone does not make up for it
(measured 2026-12-05 on an Intel Xeon with AVX512-BF16 and no AMX, ``bench/bench_precision.py``: bf16 at 0.55x of
float32 in a one-thread matrix product, 0.98x in the demo's sampling, 0.75x in a batched prompt pass). ``auto``
therefore means bf16 where it is fast, float32 elsewhere. The resolved value is what a run records (``run.yaml``, the
report) and what the engines' cache keys carry, so a cached answer never crosses precisions.

This module reads ``/proc/cpuinfo`` (Linux) or ``sysctl`` (macOS) and imports torch only when an NVIDIA device is
present, so resolving costs milliseconds on a CPU machine. The environment variable ``WOW_CPU_BF16`` overrides the
CPU's flags: ``0`` resolves ``auto`` as on a CPU without native bf16 (float32: how a developer on an AMX machine runs
the suite or the demo in the precision most laptops get), ``1`` as on one with it.

Example::

    from wow.backends import precision
    precision.resolve_dtype("auto")        # "float32" on a CPU without native bf16
    precision.machine()["native_bf16"]
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

#: Precisions a local engine accepts, besides ``auto``.
DTYPES = ("float32", "bfloat16", "float16")
#: CPU flags (``/proc/cpuinfo``) that mean bf16 matrix products run faster than float32: Intel AMX, ARM's BF16
#: extension. Not ``avx512_bf16`` alone (slower than float32 where measured, see the module docstring).
BF16_CPU_FLAGS = ("amx_bf16", "bf16")
#: Environment variable: ``0`` / ``1`` treat this CPU as one without / with native bf16, whatever its flags.
CPU_BF16_ENV = "WOW_CPU_BF16"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo`` ``flags``/``Features``; macOS ``hw.optional`` names)."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return frozenset(value.split())
    if platform.system() == "Darwin":
        try:
            out = subprocess.run(["sysctl", "hw.optional"], capture_output=True, text=True, timeout=5).stdout
        except (OSError, subprocess.SubprocessError):
            return frozenset()
        names = [ln.split(":")[0].rsplit(".", 1)[-1] for ln in out.splitlines() if ln.strip().endswith(": 1")]
        return frozenset("bf16" if n == "FEAT_BF16" else n.lower() for n in names)
    return frozenset()


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (e.g. ``Intel(R) Xeon(R) Processor``, ``AMD EPYC``), or the platform's guess."""
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def cpu_bf16_override() -> str | None:
    """``"0"`` or ``"1"`` where :data:`CPU_BF16_ENV` overrides the CPU's flags, None where it is unset.

    Raises:
        WowError: :data:`CPU_BF16_ENV` set to anything else.
    """
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced and forced not in ("0", "1"):
        from wow import WowError

        raise WowError(f"{CPU_BF16_ENV}={forced!r}: use 0 (float32 for dtype auto) or 1 (bfloat16), or unset it.")
    return forced or None


def cpu_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 faster than float32 (AMX or ARM's BF16 extension; not AVX512-BF16 alone),
    unless :func:`cpu_bf16_override` says otherwise."""
    forced = cpu_bf16_override()
    return forced == "1" if forced else bool(cpu_flags() & set(BF16_CPU_FLAGS))


@functools.cache
def cuda_bf16() -> bool | None:
    """Whether a CUDA GPU is visible and supports bf16 (``None``: no CUDA GPU is visible)."""
    if not any(Path("/dev").glob("nvidia[0-9]*")) and not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return bool(torch.cuda.is_bf16_supported())


def resolve_dtype(dtype: str) -> str:
    """The precision local engines and training use: ``dtype`` itself, or for ``auto`` bf16 where the hardware has
    it fast (a CUDA GPU with bf16, else a CPU with AMX or ARM BF16) and float32 elsewhere (AVX512-BF16 alone included).

    Args:
        dtype: ``auto``, ``float32``, ``bfloat16`` or ``float16``.

    Returns:
        One of :data:`DTYPES`.
    """
    if dtype != "auto":
        return dtype
    gpu = cuda_bf16()
    native = gpu if gpu is not None else cpu_native_bf16()
    return "bfloat16" if native else "float32"


def machine() -> dict:
    """What the precision was chosen from: the CPU model, its bf16-relevant flags, whether bf16 is native, the GPU."""
    flags = cpu_flags()
    gpu = cuda_bf16()
    return {
        "cpu": cpu_model(),
        "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "bf16")),
        "native_bf16": cpu_native_bf16() if gpu is None else gpu,
        "cuda": gpu is not None,
        "auto_dtype": resolve_dtype("auto"),
    }


#: Environment variables that set how the kernels' threads compute and wait (torch's OpenMP runtime reads them at
#: start; ``import wow`` sets the wait policy where the environment does not: ``lib/wow/__init__.py``).
THREAD_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", CPU_BF16_ENV)


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the platform has one, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def run_machine() -> dict:
    """What a stage's timings depend on, as ``wow run`` records it with each attempt (``stages.json``): the
    :func:`machine` dict, the cores this process may use and the thread settings of :data:`THREAD_ENV` it hands
    the notebooks' kernels (None: unset)."""
    return {**machine(), "family": cpu_family(), "cores": cores(), "env": {k: os.environ.get(k) for k in THREAD_ENV}}


def describe_machine(record: dict) -> str:
    """A :func:`run_machine` record in one line, e.g. ``Intel(R) Xeon(R) Processor, 2 cores (AMX), dtype auto ->
    bfloat16; OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=10000``."""
    env = " ".join(f"{k}={v}" for k, v in (record.get("env") or {}).items() if v is not None)
    return (
        f"{record.get('cpu', '?')}, {record.get('cores', '?')} cores ({record.get('family', '?')}), dtype auto -> "
        f"{record.get('auto_dtype', '?')}; {env or 'no thread settings in the environment'}"
    )


def machine_line() -> str:
    """The machine in one line, for logs and benchmark headers: CPU model, cores, family, bf16-relevant flags and
    what ``dtype: auto`` resolves to."""
    m = machine()
    flags = " ".join(m["cpu_flags"])
    forced = cpu_bf16_override()
    note = f" ({CPU_BF16_ENV}={forced})" if forced else ""
    return f"{m['cpu']}, {os.cpu_count()} cores ({cpu_family()}; flags {flags}); dtype auto -> {m['auto_dtype']}{note}"


def cpu_family() -> str:
    """A short name of the CPU family for timings: ``AMX``, ``AVX512-BF16``, ``no native bf16 (AVX-512)`` ..."""
    flags = cpu_flags()
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX512-BF16"
    if "bf16" in flags:
        return "ARM BF16"
    widest = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else platform.machine()
    return f"no native bf16 ({widest})"
