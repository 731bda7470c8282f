"""Stage 04's trainings as tasks of a Ray cluster (``train_backend: ray``).

Every (setting, seed, grid point) training of a run is one :class:`TrainingJob`; :func:`train_all` submits those
whose folder holds no finished training (:func:`wow.align.training.is_complete`, the ``train_log.json`` rule) as Ray
tasks, each asking for the resources of one training (one GPU where the cluster has GPUs, ``cpus`` otherwise), and
collects them as they finish. The stage then selects and evaluates as with the local backend: its grid search finds
every point trained and only chooses among them.

* **Resuming.** A killed run reruns stage 04: finished points are reused, and a point that was in flight restarts
  from its last checkpoint (:mod:`wow.align.checkpoints`) in its own folder.
* **Retries.** A task whose worker dies (out of memory, a lost node, a killed process) is retried by Ray
  (``max_retries``, :data:`MAX_RETRIES`) and resumes from its checkpoints; a Python error in a training is not
  retried: it fails the stage with its message.
* **Who writes what.** Each task writes only its own grid point's folder (``models/<task>/<setting>/<point>/``),
  which no other task shares; ``grid.json``, ``selection.json``, evaluation files and ``alignment.csv`` are written by
  the stage's kernel afterwards. The run-folder lock (:mod:`wow.run_folder.lock`) is held by that kernel for the
  whole stage: a second ``wow run`` on the folder is refused on the machine that holds it. On a multi-node cluster
  the run folder must be on a file system every node mounts at the same path (the tasks write into it), and
  ``wow`` installed on every node.
* **Cluster.** ``address`` None starts a local Ray instance on this machine for the stage (and stops it after);
  ``"auto"`` or ``ray://host:10001`` joins a running cluster (``ray start --head`` on one node, ``ray start
  --address=...`` on the others; docs/scale.md).

Example::

    jobs = [TrainingJob(ds["train"], ds["validation"], "smollm2-135m", "dpo", Path("models/t/s/lr=5.0e-05_epochs=1"),
                        AlignConfig(max_steps=2))]
    results = train_all(jobs, cpus=1)          # {output_dir: TrainResult}
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wow import WowError
from wow.align import training
from wow.align.align_config import AlignConfig
from wow.progress import bar as progress_bar

log = logging.getLogger(__name__)

#: Attempts Ray makes again after a worker of a training dies.
MAX_RETRIES = 3
#: The local instance's object store: the tasks ship preference sets (small), not models.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2


@dataclass(frozen=True)
class TrainingJob:
    """One training: what :func:`wow.align.training.train` takes, for one grid point's folder."""

    train: object
    validation: object
    model: str
    trainer: str
    output_dir: Path
    config: AlignConfig
    callbacks: tuple = field(default=())


def _run_job(job: TrainingJob, threads: int) -> training.TrainResult:
    """A Ray task's body: the training with ``threads`` CPU threads (Ray's share for it)."""
    import torch

    torch.set_num_threads(max(1, threads))
    return training.train(
        job.train, job.validation, job.model, job.trainer, job.output_dir, job.config, callbacks=list(job.callbacks)
    )


def train_all(jobs: Sequence[TrainingJob], address: str | None = None, cpus: int = 1) -> dict[Path, object]:
    """Train every job that is not finished as a Ray task; returns ``{output_dir: TrainResult}`` of those trained.

    Args:
        jobs: the trainings; no two may share an ``output_dir``.
        address: None: a local Ray instance for this call; else the address of a running cluster (``ray.init``).
        cpus: CPUs per training where the cluster has no GPU (each training then uses that many threads).

    Raises:
        WowError: Ray is not installed, two jobs share a folder, or a training failed (its error, after Ray's
            retries when its worker died).
    """
    try:
        import ray
    except ImportError:
        raise WowError("train_backend: ray needs Ray: pip install 'ray==2.60.0' (requirements-dev.txt).") from None
    folders = [Path(j.output_dir).resolve() for j in jobs]
    if len(set(folders)) < len(folders):
        raise WowError("train_backend ray: two trainings share an output folder; each grid point needs its own.")
    todo = [j for j in jobs if not training.is_complete(j.output_dir)]
    log.info("ray: %d of %d trainings to run (%d finished before)", len(todo), len(jobs), len(jobs) - len(todo))
    if not todo:
        return {}
    started = not ray.is_initialized()
    if started:
        init = {"address": address} if address else {"object_store_memory": LOCAL_OBJECT_STORE_BYTES}
        ray.init(**init, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=True)
    try:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        resources = {"num_gpus": 1} if gpus else {"num_cpus": cpus}
        remote = ray.remote(_run_job).options(**resources, max_retries=MAX_RETRIES, retry_exceptions=False)
        pending = {remote.remote(job, cpus): job for job in todo}
        log.info("ray: %d trainings submitted, each on %s", len(pending), "1 GPU" if gpus else f"{cpus} CPU(s)")
        results, bar = {}, progress_bar(len(pending), "training", "ray")
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ref)
            try:
                results[Path(job.output_dir)] = ray.get(ref)
            except ray.exceptions.RayError as e:
                for other in pending:
                    ray.cancel(other)
                cause = getattr(e, "cause", None) or e
                raise WowError(f"ray: the training into {job.output_dir} failed: {cause}") from None
            log.info("ray: finished %s", job.output_dir)
            bar.update(1)
        bar.close()
        return results
    finally:
        if started:
            ray.shutdown()
