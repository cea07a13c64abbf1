"""Saving a single training call (``testbed train``) to disk, atomically."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from testbed.core.files import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_parquet,
    cell_key,
)
from testbed.training.result import RunResult


def save_run(result: RunResult, out: str | Path) -> Path:
    """Write a RunResult under ``out/<task>-<method>-<key>/``.

    Files: ``config.json`` (config, timing, provenance), ``history.parquet``,
    ``runs.parquet``, ``profile.parquet`` (methods with a `Profile`), ``stages.parquet``
    (staged runs, `testbed.train_stages`), ``arrays.npz``
    (eval steps, probe inputs, predictions, batch losses, the method's per-update
    traces as ``trace_<name>``). The folder name carries a hash of the config, so the same
    call overwrites its own results and nothing else.
    """
    cfg = result.config
    path = Path(out) / f"{cfg['task']}-{cfg['method']}-{cell_key(cfg)}"
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(path / "history.parquet", result.history)
    atomic_write_parquet(path / "runs.parquet", result.runs)
    if result.profile is not None:
        atomic_write_parquet(path / "profile.parquet", result.profile)
    if result.stages is not None:
        atomic_write_parquet(path / "stages.parquet", result.stages)
    import io

    buf = io.BytesIO()
    np.savez_compressed(buf, eval_steps=result.eval_steps, probe_x=np.asarray(result.probe.x),
                        probe_y=np.asarray(result.probe.y), predictions=result.predictions,
                        batch_loss=result.batch_loss,
                        **{f"trace_{k}": v for k, v in result.traces.items()})
    atomic_write_bytes(path / "arrays.npz", buf.getvalue())
    atomic_write_json(path / "config.json", json.loads(json.dumps(
        {"config": cfg, "timing": result.timing, "provenance": result.provenance}, default=str)))
    return path
