"""A finished suite's histories for a tracker's UI: TensorBoard event files or offline W&B runs.

`export_suite` reads ``results/<suite>/results.parquet`` (the record; nothing here changes it)
and writes one tracker run per trained model, that is per cell and run (seed, and swept
values): scalars ``<split>/<metric>`` (``<split>/<metric>/<piece>`` for a piece) against the
training step, the cell's config as the run's config, and the cell as the run's group so a
UI puts a cell's seeds together.

- ``tensorboard`` (extra ``testbed[tensorboard]``, tensorboardX): event files under
  ``<out>/<cell label>/<run label>/`` (``<out>`` defaults to ``results/<suite>/exports/tensorboard``);
  ``tensorboard --logdir <out>`` shows them.
- ``wandb`` (extra ``testbed[wandb]``): Weights & Biases runs in offline mode under
  ``<out>/wandb/``; ``wandb sync <out>/wandb/offline-run-*`` uploads them when you choose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

TRACKERS = ("tensorboard", "wandb")
RUN_COLUMNS = ("cell", "run")
SWEEP_COLUMNS = ("lr", "weight_decay", "init_scale")


def export_suite(root: str | Path, to: str, out: str | Path | None = None) -> Path:
    """Write a finished suite's histories for ``to`` (``tensorboard`` or ``wandb``) into
    ``out`` (default ``<root>/exports/<to>``, which the suite runner never takes for a cell).
    Returns the folder. Writing again replaces the runs."""
    from testbed.core.files import StoreError
    from testbed.suites.store import RESULTS_FILE, SuiteStore

    root = Path(root)
    if to not in TRACKERS:
        raise ValueError(f"export: unknown tracker {to!r}; accepted: {', '.join(TRACKERS)}")
    path = root / RESULTS_FILE
    if not path.is_file():
        raise StoreError(f"{path} does not exist: run the suite first (testbed bench SUITE)")
    history = pd.read_parquet(path)
    store = SuiteStore(root)
    manifest = store.read_manifest() or {}
    out = Path(out) if out is not None else root / "exports" / to
    out.mkdir(parents=True, exist_ok=True)
    runs = list(tracker_runs(history, store, manifest))
    (_tensorboard if to == "tensorboard" else _wandb)(runs, out, manifest.get("suite") or root.name)
    return out


def tracker_runs(history: pd.DataFrame, store, manifest: dict) -> Iterator[dict]:
    """One dict per trained model: its group (the cell's label), name, config and a table of
    (step, tag, value) rows."""
    cells = manifest.get("cells", {})
    sweep = [c for c in SWEEP_COLUMNS if c in history.columns]
    varies = (history.groupby("cell", observed=True)[sweep].nunique() > 1) if sweep else None  # per cell
    configs: dict[str, dict] = {}
    for (cell, run), rows in history.groupby(list(RUN_COLUMNS), observed=True, sort=True):
        labels = cells.get(cell) or {}
        group = "/".join(str(labels[k]) for k in ("task", "method", "model", "optimizer") if k in labels) or cell
        first = rows.iloc[0]
        swept = {c: float(first[c]) for c in sweep}
        seed = int(first["seed"]) if "seed" in rows.columns else int(run)
        name = f"seed={seed}" + "".join(f",{k}={v:g}" for k, v in swept.items() if varies.at[cell, k])
        if cell not in configs:
            try:
                configs[cell] = store.load_json(cell, "config")
            except (KeyError, OSError, ValueError):  # a cell folder removed since aggregation: what the table has
                configs[cell] = {"task": labels.get("task")}
        config = configs[cell]
        piece = rows["piece"].astype(str)
        tag = rows["split"].astype(str) + "/" + rows["metric"].astype(str) + ("/" + piece).where(piece != "all", "")
        scalars = pd.DataFrame({"step": rows["step"].to_numpy(), "tag": tag.to_numpy(),
                                "value": rows["value"].to_numpy()}).sort_values(["step", "tag"], kind="stable")
        yield {"cell": cell, "run": int(run), "group": group, "name": name,
               "config": {**config, "cell": cell, "run": int(run), "seed": seed, **swept}, "scalars": scalars}


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.,=+-]+", "_", text)


def _tensorboard(runs: list[dict], out: Path, suite: str) -> None:
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise ImportError("testbed export tensorboard needs tensorboardX: pip install 'testbed[tensorboard]'") from None
    import shutil

    for r in runs:
        logdir = out / _safe(r["group"]) / _safe(r["name"])
        if logdir.exists():
            shutil.rmtree(logdir)  # writing again replaces, never appends a second copy of each point
        writer = SummaryWriter(logdir=str(logdir))
        try:
            writer.add_text("config", "```\n" + json.dumps(r["config"], indent=1, default=str) + "\n```", 0)
            for step, tag, value in r["scalars"].itertuples(index=False):
                writer.add_scalar(tag, float(value), int(step))
        finally:
            writer.close()


def _wandb(runs: list[dict], out: Path, suite: str) -> None:
    import os

    try:
        import wandb
    except ImportError:
        raise ImportError("testbed export wandb needs wandb: pip install 'testbed[wandb]'") from None
    import shutil

    os.environ.setdefault("WANDB_SILENT", "true")
    for r in runs:
        run_id = _safe(f"{r['cell']}-{r['run']}")
        for old in (out / "wandb").glob(f"offline-run-*-{run_id}"):  # writing again replaces the run
            shutil.rmtree(old, ignore_errors=True)
        run = wandb.init(mode="offline", dir=str(out), project=suite, group=r["group"],
                         name=f"{r['group']} {r['name']}", config=r["config"], job_type="train",
                         id=run_id, reinit="create_new")
        try:
            for step, rows in r["scalars"].groupby("step", sort=True):
                run.log(dict(zip(rows["tag"], rows["value"].astype(float), strict=True)), step=int(step))
        finally:
            run.finish()
