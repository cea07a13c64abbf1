"""Reading a suite's results folder back: every finished cell's tables, cell columns first.

Plain pandas: reading results never starts JAX (the cell's target kind and primary metric
come from its ``config.json``, or, for folders written before they were recorded there,
from the metrics in its history).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from testbed.core.columns import METRICS, ZERO_LOSS
from testbed.core.errors import ConfigError
from testbed.suites.spec import Suite
from testbed.suites.store import HISTORY_FILE, SuiteStore


def load_tables(root: str | Path, suite: Suite | None = None,
                which: tuple[str, ...] | None = None) -> dict[str, pd.DataFrame]:
    """The suite's tables (see docs/suite_tables.md) over every finished cell.

    Every table a cell stored is read (``which`` limits them); each row starts with the
    cell's columns: cell, task, method, model, optimizer (the labels), target, primary
    (categorical: over a whole suite they are most of its bytes and of its grouping's time).
    With ``suite`` only its cells are read and its current labels applied; without one, the
    cells of the suite as it last ran (``manifest.json``), so cells left in the folder by an
    earlier version of the suite (or recomputed under a changed default, `testbed.core.keyed`)
    do not mix in.
    """
    store = SuiteStore(root)
    keys = store.done_keys()
    if suite is not None:
        current = {c.key: c for c in suite.cells}
        keys = [k for k in keys if k in current]
    else:
        listed = (store.read_manifest() or {}).get("cells")
        if isinstance(listed, dict) and set(listed) & set(keys):
            keys = [k for k in keys if k in listed]
    if not keys:
        raise ConfigError(f"{root}: no finished cells to read (run `testbed bench` first)")
    out: dict[str, list[pd.DataFrame]] = {}
    zero: dict[str, float] = {}
    for k in keys:
        cfg, hist = store.load_cell(k)
        labels = current[k].labels if suite is not None else cfg.get("labels", {})
        names = sorted(p.stem for p in store.cell_dir(k).glob("*.parquet") if p.name != HISTORY_FILE)
        tables = {"history": hist, **{n: store.load_table(k, n) for n in names if which is None or n in which}}
        facts = cfg.get("facts") or _facts(hist, tables.get("probes"))
        cols = {"cell": k, "task": cfg["task"], "method": labels.get("method", cfg["method"]["name"]),
                "model": labels.get("model", cfg["model"]["name"]),
                "optimizer": labels.get("optimizer", cfg["optimizer"]["name"]), "target": facts["target"],
                "primary": facts["primary"]}
        if isinstance(facts.get("zero_loss"), int | float):  # recorded since 2026-12 (older: the registry's)
            zero[k] = float(facts["zero_loss"])
        for name, df in tables.items():
            clash = [c for c in cols if c in df.columns]
            if clash:
                raise ConfigError(f"{store.cell_dir(k)}: table {name!r} has column {clash[0]!r}, which names a cell "
                                  f"column of every suite table ({', '.join(cols)}); rename it in the analysis "
                                  "that writes the table")
            const = pd.DataFrame({c: pd.Categorical.from_codes(np.zeros(len(df), np.int8), [v]) for c, v in cols.items()},
                                 index=df.index)  # categorical: a suite's tables are mostly these columns
            out.setdefault(name, []).append(pd.concat([const, df], axis=1))
    tables = {w: _concat(dfs) for w, dfs in out.items()}
    if zero and "batch_loss" in tables:
        tables["batch_loss"].attrs[ZERO_LOSS] = zero
    return tables


def cell_facts(task, method=None) -> dict[str, str | float]:
    """What readers need of a cell without building its task or method: the target kind, the
    primary metric and (with ``method``) the loss of a perfect fit (``Extras.zero_loss``)."""
    out: dict[str, str | float] = {"target": task.target, "primary": METRICS[task.target][0]}
    zero = float(method.extras.zero_loss) if method is not None else math.nan
    if math.isfinite(zero):  # JSON holds finite numbers; readers fall back to the method registry
        out["zero_loss"] = zero
    return out


def _facts(history: pd.DataFrame, probes: pd.DataFrame | None) -> dict[str, str]:
    """A cell's facts read off its history (folders from before ``facts`` were recorded)."""
    metrics = set(history["metric"].astype(str))
    if "kl" in metrics:
        target = "distribution"
    elif "error" in metrics:
        target = "class"
    else:
        vector = probes is not None and "output" in probes and probes["output"].nunique() > 1
        target = "vector" if vector else "scalar"
    return {"target": target, "primary": METRICS[target][0]}


def _concat(dfs: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate, categorical columns with differing categories made one categorical over the
    union of their categories (sorted), as are object columns.

    A column categorical in every frame is joined by its codes (`union_categoricals`): turning
    it into Python objects and back took most of a suite's read (1 s for the default suite's
    probes); any other column goes through `pd.concat` as it is."""
    from pandas.api.types import union_categoricals

    names = list(dict.fromkeys(c for d in dfs for c in d.columns))
    joined = {c for c in names if all(c in d.columns and isinstance(d[c].dtype, pd.CategoricalDtype)
                                      and not d[c].cat.ordered for d in dfs)}
    rest = [d.drop(columns=list(joined)) if joined else d for d in dfs]
    rest = [d.astype({c: "object" for c in d.columns if isinstance(d[c].dtype, pd.CategoricalDtype)}) for d in rest]
    out = pd.concat(rest, ignore_index=True)
    for c in out.columns:
        if out[c].dtype == object:
            out[c] = out[c].astype("category")
    for c in joined:
        try:
            cat = union_categoricals([d[c].array for d in dfs])
        except TypeError:  # categories of different types (a plug-in's table): through objects
            out[c] = pd.concat([d[c].astype("object") for d in dfs], ignore_index=True).astype("category")
            continue
        try:
            cat = cat.reorder_categories(sorted(cat.categories))  # as object -> category sorts them
        except TypeError:  # unorderable categories: first appearance
            pass
        out[c] = cat
    return out[names] if joined else out
