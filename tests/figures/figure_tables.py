"""Tiny synthetic suite tables for the figure tests, and a development aid for real ones.

`synthetic_tables` follows docs/suite_tables.md (no training, no JAX), so the figure
tests in this folder run in seconds (``conftest.py`` gives them as the ``tables`` fixture).

For development against real data this file also holds a small converter from
`RunResult`s to the suite tables (`tables_from_results`) and a script entry point::

    python tests/figures/figure_tables.py [OUT_DIR]

which trains a few cells once (cached under /tmp), converts them and writes every
figure as PNG plus the HTML report to OUT_DIR (default /tmp/suiteplots). The real
converter lives in `testbed.suites.spec`; this one is only for looking at pictures.
"""

from __future__ import annotations

import hashlib
import io
import re
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from testbed.core.style import DPI

CELL_COLUMNS = ["cell", "task", "method", "model", "optimizer", "target", "primary"]
PRIMARY = {"scalar": "mse", "vector": "mse", "distribution": "kl", "class": "error"}


# -- tiny synthetic suite tables (docs/suite_tables.md) ----------------------------------------

STEPS_LIN = np.arange(0, 101, 10)
STEPS_LOG = np.array([0, 1, 2, 3, 5, 8, 13, 22, 36, 60, 100])

# task -> (target, splits, pieces, steps, methods)
TASKS = {
    "line1d": ("scalar", ["train", "near", "far"], ["a", "b"], STEPS_LIN, ["mse", "ce"]),
    "grid2d": ("scalar", ["train", "hole"], ["p"], STEPS_LIN, ["mse", "ce"]),
    "dist1d": ("distribution", ["train", "held"], ["rows"], STEPS_LOG, ["mse", "ce"]),
    "cls2d": ("class", ["train", "held"], ["sum"], STEPS_LIN, ["ce"]),
}
SEEDS = 3
K = {"line1d": 1, "grid2d": 1, "dist1d": 3, "cls2d": 4}


def grid_probes(task: str) -> pd.DataFrame:
    """Grid probes of a task: x0, x1, split, target [per output]."""
    if task == "line1d":
        x = np.linspace(-1, 1, 21)
        split = np.where(np.abs(x) <= 0.5, "train", np.where(np.abs(x) <= 0.8, "near", "far"))
        return pd.DataFrame({"x0": x, "x1": np.nan, "split": split, "t0": np.sin(3 * x)})
    if task == "grid2d":
        a = np.linspace(-1, 1, 6)
        g0, g1 = np.meshgrid(a, a, indexing="ij")  # row-major over (x0, x1)
        x0, x1 = g0.ravel(), g1.ravel()
        split = np.where((x0 > 0.3) & (x1 > 0.3), "hole", "train")
        return pd.DataFrame({"x0": x0, "x1": x1, "split": split, "t0": x0 * x1})
    if task == "dist1d":
        x = np.arange(8.0)
        split = np.where(np.isin(x, [2, 5]), "held", "train")
        df = pd.DataFrame({"x0": x, "x1": np.nan, "split": split})
        for k in range(3):
            df[f"t{k}"] = np.cos(x * (k + 1) / 3)
        return df
    pts = [(i, j) for i in range(6) for j in range(6) if (i + j) % 2 == 0]  # a subset of a lattice
    x0, x1 = np.array(pts, float).T
    split = np.where((x0 + x1) % 5 == 0, "held", "train")
    df = pd.DataFrame({"x0": x0, "x1": x1, "split": split})
    label = (x0 + x1).astype(int) % 4
    for k in range(4):
        df[f"t{k}"] = (label == k).astype(float)
    return df


def synthetic_tables(probe_target_kind: bool = False) -> dict[str, pd.DataFrame]:
    """A small suite: 4 tasks (1-D and 2-D scalar, 1-D distribution, 2-D class), 1-2 methods, 3 seeds.

    ``probe_target_kind``: give probes the cell column ``target`` as well as the value
    column ``target`` (duplicate names, as the schema literally reads)."""
    rng = np.random.default_rng(0)
    out: dict[str, list] = {k: [] for k in ("history", "runs", "attribution", "probes", "batch_loss")}
    for task, (target, splits, pieces, steps, methods) in TASKS.items():
        primary = PRIMARY[target]
        for mi, method in enumerate(methods):
            head = dict(cell=_cell_key(task, method), task=task, method=method, model="mlp", optimizer="adam",
                        target=target, primary=primary)
            hp = dict(lr=1e-3, weight_decay=0.0, init_scale=1.0)
            rows = []
            for seed in range(SEEDS):
                for step in steps:
                    for si, split in enumerate(splits):
                        for piece in [*pieces, "all"]:
                            base = (0.02 + 0.5 * si) * (1 + 0.1 * mi)
                            v = base + np.exp(-step / 30.0) * (1 + 0.2 * seed) + rng.uniform(0, 0.01)
                            if primary == "error":
                                v = min(1.0, v)
                            for metric in ("loss", primary):
                                rows.append(dict(run=seed, seed=seed, step=int(step), split=split, piece=piece,
                                                 metric=metric, value=float(v)))
            h = pd.DataFrame(rows)
            out["history"].append(pd.DataFrame({**head, **hp, **{c: h[c] for c in h.columns}}))
            out["runs"].append(pd.DataFrame({**head, **hp, "run": range(SEEDS), "seed": range(SEEDS),
                                             "diverged_step": -1}))
            att = []
            for seed in range(SEEDS):
                for split in splits[1:]:
                    f = rng.dirichlet([3, 1, 1])
                    for cand, fr in zip(["target", f"piece:{pieces[0]}", "linear_fit"], f, strict=True):
                        att.append(dict(run=seed, seed=seed, split=split, candidate=cand, fraction=fr,
                                        mean_distance=rng.uniform(0.1, 1)))
            att = pd.DataFrame(att)
            out["attribution"].append(pd.DataFrame({**head, **hp, **{c: att[c] for c in att.columns}}))
            g = grid_probes(task)
            k_out = K[task]
            pr = []
            for step in steps:
                grow = 1 - np.exp(-step / 30.0)
                for p, row in g.iterrows():
                    for k in range(k_out):
                        t = row[f"t{k}"]
                        pr.append(dict(run=0, seed=0, step=int(step), probe=p, split=row["split"], kind="grid",
                                       x0=row["x0"], x1=row["x1"], output=k, y=t,
                                       pred=t * grow + 0.3 * (1 - grow) + 0.05 * mi))
                # one OOD-sample probe (kind "ood"), not part of the grid
                pr.append(dict(run=0, seed=0, step=int(step), probe=len(g), split=splits[-1], kind="ood",
                               x0=float(g["x0"].max()), x1=g["x1"].iloc[-1], output=0, y=0.0, pred=0.0))
            pr = pd.DataFrame(pr)
            cell = {k: v for k, v in head.items() if k != "target"}
            probes = pd.DataFrame({**cell, **hp, **{c: pr[c] for c in pr.columns}})
            if probe_target_kind:
                probes = pd.concat([probes.iloc[:, :5], pd.Series(target, index=probes.index, name="target"),
                                    probes.iloc[:, 5:]], axis=1)
            out["probes"].append(probes)
            bl = pd.DataFrame({"run": np.repeat(range(SEEDS), 20), "seed": np.repeat(range(SEEDS), 20),
                               "step": np.tile(np.arange(1, 21), SEEDS), "value": rng.uniform(0.1, 1, 20 * SEEDS)})
            out["batch_loss"].append(pd.DataFrame({**head, **hp, **{c: bl[c] for c in bl.columns}}))
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}


def visible_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def with_gid(fig: Figure, prefix: str) -> list:
    return [a for ax in fig.axes for a in ax.get_children() if str(a.get_gid() or "").startswith(prefix)]


def png_ok(data: bytes, min_px: int = 100) -> np.ndarray:
    img = mpimg.imread(io.BytesIO(data), format="png")
    assert img.ndim == 3 and min(img.shape[:2]) >= min_px
    assert img[..., :3].std() > 0.01  # not blank
    return img


# -- a converter from RunResults to suite tables (development aid, not the library's) ---------

def _cell_key(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:16]


def _model_label(cfg: dict) -> str:
    mc = cfg.get("model_config") or {}
    if cfg["model"] == "lowrank":
        return f"lowrank_r{mc.get('rank', '?')}"
    return cfg["model"]


def tables_from_results(results: list) -> dict[str, pd.DataFrame]:
    """Suite tables (docs/suite_tables.md) from `RunResult`s, one cell each.

    Imports testbed's task code lazily (JAX); the tests never call this.
    """
    import testbed  # noqa: PLC0415  (JAX only when converting real runs)

    out: dict[str, list[pd.DataFrame]] = {k: [] for k in ("history", "runs", "attribution", "probes",
                                                          "batch_loss")}
    for r in results:
        cfg = r.config
        task = testbed.make_task(cfg["task"])
        method, model, opt = cfg["method"], _model_label(cfg), cfg["optimizer"]["name"]
        if method == "ce" and dict(cfg.get("method_hparams") or {}).get("encoding") == "two_hot":
            method = "ce_two_hot"
        cell = _cell_key(task.name, method, model, opt)
        head = dict(cell=cell, task=task.name, method=method, model=model, optimizer=opt, target=task.target,
                    primary=PRIMARY[task.target])

        def with_head(df: pd.DataFrame, head=head) -> pd.DataFrame:
            # probes: the value column `target` wins over the cell's target kind (same name)
            df = df.copy()
            for i, (k, v) in enumerate((k, v) for k, v in head.items() if k not in df.columns):
                df.insert(i, k, v)
            return df

        h = r.history.drop(columns=["task", "method", "model", "optimizer"])
        for c in ("split", "piece", "metric"):
            h[c] = h[c].astype(str)
        out["history"].append(with_head(h))
        out["runs"].append(with_head(r.runs[["lr", "weight_decay", "init_scale", "run", "seed",
                                             "diverged_step"]]))
        hp = r.runs.set_index("run")[["lr", "weight_decay", "init_scale", "seed"]]
        R, S = r.batch_loss.shape
        bl = pd.DataFrame({"run": np.repeat(np.arange(R), S), "step": np.tile(np.arange(1, S + 1), R),
                           "value": r.batch_loss.ravel().astype(np.float64)})
        bl = bl.join(hp, on="run")[["lr", "weight_decay", "init_scale", "run", "seed", "step", "value"]]
        out["batch_loss"].append(with_head(bl))

        # probes: first seed of each grid point
        px = np.asarray(r.probe.x)
        raw = np.asarray(task.domain.decode(px), np.float64)
        y = np.asarray(r.probe.y)
        Pn = px.shape[0]
        K = 1 if r.predictions.ndim == 3 else r.predictions.shape[-1]
        if task.target == "class":
            tgt = (y[:, None] == np.arange(K)[None, :]).astype(np.float64)
        else:
            tgt = y.reshape(Pn, -1).astype(np.float64)
        split_names = np.array([*task.splits, "none"])
        psplit = split_names[np.where(r.probe_split >= 0, r.probe_split, len(task.splits))]
        kind = np.where(np.arange(Pn) < r.probe_grid, "grid", "ood")
        first = r.runs.sort_values("seed").groupby(["lr", "weight_decay", "init_scale"]).head(1)
        E = len(r.eval_steps)
        for run in first["run"]:
            pred = r.predictions[run].reshape(E, Pn, K).astype(np.float64)
            e, p, k = np.meshgrid(np.arange(E), np.arange(Pn), np.arange(K), indexing="ij")
            e, p, k = e.ravel(), p.ravel(), k.ravel()
            df = pd.DataFrame({"run": run, "step": r.eval_steps[e], "probe": p, "split": psplit[p], "kind": kind[p],
                               "x0": raw[p, 0], "x1": raw[p, 1] if raw.shape[1] > 1 else np.nan,
                               "output": k, "y": tgt[p, k], "pred": pred[e, p, k]})
            df = df.join(hp, on="run")
            out["probes"].append(with_head(df[["lr", "weight_decay", "init_scale", "run", "seed", "step", "probe",
                                               "split", "kind", "x0", "x1", "output", "y", "pred"]]))

        # attribution: final predictions on each OOD split's probes vs candidate behaviours
        cands: dict[str, np.ndarray] = {"target": tgt}
        for c in task.candidates:
            cands[c] = np.asarray(task.candidate(c, px), np.float64).reshape(Pn, -1)
        if len(task.pieces) > 1:
            for i, name in enumerate(task.pieces):
                v = task.target_of_raw(raw.astype(np.float32), np.full(Pn, i, np.int32))
                cands[f"piece:{name}"] = np.asarray(v, np.float64).reshape(Pn, -1)
        train = (psplit == "train") & np.isfinite(tgt).all(-1)
        if task.target in ("scalar", "vector") and train.sum() > raw.shape[1]:
            # affine least-squares fit of the training data (here: the train-split probes)
            coef, *_ = np.linalg.lstsq(np.c_[raw[train], np.ones(train.sum())], tgt[train], rcond=None)
            cands["linear_fit"] = np.c_[raw, np.ones(Pn)] @ coef
        rows = []
        for run in r.runs["run"]:
            pred = r.predictions[run, -1].reshape(Pn, K).astype(np.float64)
            for s in task.ood_splits:
                m = psplit == s
                if not m.any():
                    continue
                names = list(cands)
                dist = np.stack([np.nan_to_num(np.sqrt(((pred[m] - cands[n][m]) ** 2).sum(-1)), nan=np.inf)
                                 for n in names])
                best = dist.argmin(0)
                for j, n in enumerate(names):
                    d = dist[j][np.isfinite(dist[j])]
                    rows.append(dict(run=int(run), split=s, candidate=n, fraction=float((best == j).mean()),
                                     mean_distance=float(d.mean()) if d.size else np.nan))
        att = pd.DataFrame(rows).join(hp, on="run")
        out["attribution"].append(with_head(att[["lr", "weight_decay", "init_scale", "run", "seed", "split",
                                                 "candidate", "fraction", "mean_distance"]]))
    return {k: pd.concat(v, ignore_index=True) for k, v in out.items()}


REAL_CACHE = Path("/tmp/suiteplots_cache/real_runs.pkl")
FULL_CACHE = Path("/tmp/suiteplots_cache/full_runs.pkl")
_KEEP = ("config", "history", "runs", "eval_steps", "probe_split", "probe_grid", "predictions", "batch_loss")


def _light(r):
    """The arrays of a RunResult the converter needs (picklable, no model)."""
    from types import SimpleNamespace  # noqa: PLC0415

    probe = SimpleNamespace(**{k: np.asarray(v) for k, v in r.probe._asdict().items()})
    return SimpleNamespace(probe=probe, **{k: getattr(r, k) for k in _KEEP})


def real_tables(full: bool = False, steps: int = 1500, seeds: int = 4) -> dict[str, pd.DataFrame]:
    """Train real cells once (their arrays cached in /tmp) and convert them.

    ``full``: every registered task x (mse, ce, ce two-hot), 1000 steps, 3 seeds (a few
    minutes on 2 cores); else 9 cells of 5 tasks."""
    cache = FULL_CACHE if full else REAL_CACHE
    if cache.exists():
        return tables_from_results(pd.read_pickle(cache))
    import testbed  # noqa: PLC0415

    if full:
        steps, seeds = 1000, 3
        cells = [(t, m, testbed.LowRank(rank=2) if t == "lowrank_logits" else None)
                 for t in testbed.list_tasks() for m in ("mse", "ce", "ce_two_hot")]
    else:
        cells = [("sine_line", "mse", None), ("sine_line", "ce", None), ("checkerboard", "mse", None),
                 ("checkerboard", "ce", None), ("step", "mse", None), ("step", "ce", None),
                 ("lowrank_logits", "mse", testbed.LowRank(rank=2)),
                 ("lowrank_logits", "ce", testbed.LowRank(rank=2)), ("modular_addition", "ce", None)]
    results = []
    for task, method, model in cells:
        kw = dict(eval_spacing="log") if task in ("step", "two_slopes") else {}
        m = testbed.make_method("ce", encoding="two_hot") if method == "ce_two_hot" else method
        try:
            r = testbed.train(task, m, model, seeds=seeds, steps=steps, quiet=True, **kw)
        except testbed.ConfigError as e:
            print("skipped", task, method, e, flush=True)
            continue
        results.append(_light(r))
        print("trained", task, method, flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    pd.to_pickle(results, cache)
    return tables_from_results(results)


def render_all(tabs: dict[str, pd.DataFrame], out_dir: Path) -> Path:
    """Every standard figure as PNG under out_dir, and the HTML report."""
    from testbed.report.build import suite_figures  # noqa: PLC0415
    from testbed.report.html import write_report  # noqa: PLC0415

    figs = suite_figures(tabs)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(figs):
        name = f"{i:02d}_" + re.sub(r"[^a-z0-9]+", "_", f.caption.split("\n", 1)[0].lower()).strip("_")[:50]
        f.figure.savefig(out_dir / f"{name}.png", dpi=DPI, facecolor="white")
    return write_report(out_dir, tabs, title=f"Suite report ({out_dir.name})", manifest=None,
                        table_sections=[], figures=[(f.caption, f.figure) for f in figs])


if __name__ == "__main__":
    full = "--full" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = Path(args[0] if args else "/tmp/suiteplots" + ("/full" if full else ""))
    tabs = real_tables(full=full)
    print({k: v.shape for k, v in tabs.items()})
    print(render_all(tabs, out))
