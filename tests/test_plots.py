"""Tests for the suite plots (`testbed.report.plots`) and the HTML report (`testbed.report.html`).

The tests draw tiny synthetic tables that follow docs/suite_tables.md (no training,
no JAX in this file), so the whole file runs in seconds.

For development against real data this file also holds a small converter from
`RunResult`s to the suite tables (`tables_from_results`) and a script entry point::

    python tests/test_plots.py [OUT_DIR]

which trains a few cells once (cached under /tmp), converts them and writes every
figure as PNG plus the HTML report to OUT_DIR (default /tmp/suiteplots). The real
converter lives in `testbed.suite`; this one is only for looking at pictures.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import sys
from pathlib import Path

import matplotlib as mpl
import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from testbed.report import html as rhtml
from testbed.report import plots

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


def _grid_probes(task: str) -> pd.DataFrame:
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
            g = _grid_probes(task)
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


@pytest.fixture(scope="module")
def tables():
    return synthetic_tables()


@pytest.fixture(autouse=True)
def _close_all():
    yield
    plt.close("all")


def _visible_axes(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_visible()]


def _with_gid(fig: Figure, prefix: str) -> list:
    return [a for ax in fig.axes for a in ax.get_children() if str(a.get_gid() or "").startswith(prefix)]


def _png_ok(data: bytes, min_px: int = 100) -> np.ndarray:
    img = mpimg.imread(io.BytesIO(data), format="png")
    assert img.ndim == 3 and min(img.shape[:2]) >= min_px
    assert img[..., :3].std() > 0.01  # not blank
    return img


# -- plots ----------------------------------------------------------------------------------

def test_log_spaced():
    assert plots.log_spaced(STEPS_LOG)
    assert not plots.log_spaced(STEPS_LIN)
    assert not plots.log_spaced([0, 1, 2])


def test_labels_append_what_varies_within_a_task(tables):
    labs = plots.method_labels(tables)
    assert set(labs["label"]) == {"mse", "ce"}
    t = {k: v.copy() for k, v in tables.items()}
    for name in ("history", "runs"):  # a second model for line1d's mse cell
        df = t[name]
        extra = df[(df["task"] == "line1d") & (df["method"] == "mse")].assign(cell="f" * 16, model="lowrank_r2")
        t[name] = pd.concat([df, extra], ignore_index=True)
    labs = plots.method_labels(t)
    assert set(labs.loc[labs["task"] == "line1d", "label"]) == {"mse / mlp", "mse / lowrank_r2", "ce / mlp"}
    assert set(labs.loc[labs["task"] == "grid2d", "label"]) == {"mse", "ce"}


@pytest.mark.parametrize("task", list(TASKS))
def test_loss_curves_panels(tables, task):
    fig = plots.loss_curves(tables, task)
    splits = TASKS[task][1]
    axes = _visible_axes(fig)
    assert len(axes) == len(splits)
    assert [ax.get_title().split(" (")[0] for ax in axes] == splits
    target = TASKS[task][0]
    assert all(ax.get_yscale() == ("linear" if target == "class" else "log") for ax in axes)
    assert all(ax.get_xscale() == ("symlog" if task == "dist1d" else "linear") for ax in axes)
    n_methods = len(TASKS[task][4])
    assert all(len(ax.get_lines()) == n_methods for ax in axes)  # one mean line per method
    assert all(len(ax.collections) == n_methods for ax in axes)  # one CI band per method


def test_loss_curves_marks_plateaus(tables):
    cells = tables["runs"].query("task == 'line1d'")[["cell", "run", "seed"]]
    pl = cells.assign(piece="all", start=10.0, end=40.0)
    fig = plots.loss_curves(tables, "line1d", plateaus=pl)
    assert len(_with_gid(fig, "plateau")) == len(pl) * len(TASKS["line1d"][1])


def test_ood_vs_train(tables):
    fig = plots.ood_vs_train(tables)
    axes = _visible_axes(fig)
    assert [ax.get_title() for ax in axes] == list(TASKS)
    for ax, (task, (target, *_rest)) in zip(axes, TASKS.items(), strict=True):
        assert ax.get_xscale() == ax.get_yscale() == ("linear" if target == "class" else "log")
        seeds = [c for c in ax.collections if str(c.get_gid()).startswith("seed:")]
        assert sum(len(c.get_offsets()) for c in seeds) == SEEDS * len(TASKS[task][4])
        (diag,) = ax.get_lines()
        x, y = diag.get_data()
        assert np.allclose(x, y)


def test_piece_heatmap(tables):
    fig = plots.piece_heatmap(tables)
    heat = [ax for ax in fig.axes if ax.images]
    assert len(heat) == 2 and len(fig.axes) == 3  # train, OOD, colour bar
    n_train = sum(len(v[2]) for v in TASKS.values())
    n_ood = sum(len(v[2]) * (len(v[1]) - 1) for v in TASKS.values())
    assert [len(ax.get_yticklabels()) for ax in heat] == [n_train, n_ood]
    assert [t.get_text() for t in heat[0].get_xticklabels()] == ["ce", "mse"]
    img = heat[0].images[0].get_array()
    assert img.shape == (n_train, 2)
    assert img.mask[-1, 1]  # cls2d has no mse cell: blank


def test_attribution_bars_sum_to_one(tables):
    fig = plots.attribution_bars(tables)
    (ax,) = fig.axes
    bars: dict[str, float] = {}
    for p in ax.patches:
        gid = str(p.get_gid() or "")
        if gid.startswith("attr:"):
            key = gid.rsplit(":", 1)[0] if not gid.split(":")[-2] == "piece" else gid.rsplit(":", 2)[0]
            bars[key] = bars.get(key, 0.0) + p.get_width()
    expected = sum((len(v[1]) - 1) * len(v[4]) for v in TASKS.values())
    assert len(bars) == expected
    assert np.allclose(list(bars.values()), 1.0)


def test_probe_trajectory_1d_heatmap_extent(tables):
    fig = plots.probe_trajectory(tables, "line1d")
    meshes = _with_gid(fig, "probe_heatmap")
    assert len(meshes) == 2  # one per method, rows
    # 2 heatmaps, colour bar, loss panel, final-profile panel, legend holder
    assert len(fig.axes) == 6
    g = _grid_probes("line1d")
    for m in meshes:
        xy = m.get_coordinates()
        assert np.isclose(xy[..., 0].min(), STEPS_LIN.min()) and np.isclose(xy[..., 0].max(), STEPS_LIN.max())
        assert np.isclose(xy[..., 1].min(), g["x0"].min()) and np.isclose(xy[..., 1].max(), g["x0"].max())
        assert m.get_array().shape == (len(g), len(STEPS_LIN))
        ax = m.axes
        assert ax.get_xlim() == (STEPS_LIN.min(), STEPS_LIN.max())
    # the train region's edges, on each heatmap
    (lo, hi), = plots.train_intervals(g["x0"].to_numpy(), g["split"].to_numpy())
    edges = sorted({ln.get_ydata()[0] for ln in _with_gid(fig, "train_edge")})
    assert np.allclose(edges, [lo, hi])
    assert -0.6 < lo < -0.5 and 0.5 < hi < 0.6
    # the loss panel shares the step axis with the heatmaps
    loss_ax = next(ax for ax in fig.axes if ax.get_ylabel() == "mse")
    assert loss_ax.get_xlim() == meshes[0].axes.get_xlim()


def test_probe_trajectory_one_method(tables):
    fig = plots.probe_trajectory(tables, "line1d", "mse")
    assert len(_with_gid(fig, "probe_heatmap")) == 1
    with pytest.raises(ValueError, match="no probes for method"):
        plots.probe_trajectory(tables, "line1d", "nope")


def test_probe_trajectory_distribution(tables):
    fig = plots.probe_trajectory(tables, "dist1d")
    meshes = _with_gid(fig, "probe_heatmap")
    assert len(meshes) == 2
    assert isinstance(meshes[0].norm, mpl.colors.LogNorm)  # per-probe KL
    assert meshes[0].axes.get_xscale() == "symlog"  # log-spaced steps
    xy = meshes[0].get_coordinates()
    assert np.isclose(xy[..., 1].min(), -0.5) and np.isclose(xy[..., 1].max(), 7.5)  # integer cells
    # heatmaps, colour bar, one log-prob panel per method, loss panel, legend holder
    assert len(fig.axes) == 2 + 1 + 2 + 1 + 1


@pytest.mark.parametrize("task", ["grid2d", "cls2d"])
def test_probe_trajectory_2d_fields(tables, task):
    fig = plots.probe_trajectory(tables, task)
    n_methods = len(TASKS[task][4])
    assert len(_with_gid(fig, "probe_field")) == 4 * n_methods
    assert len(_with_gid(fig, "target_field")) == 1
    titles = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("step ")]
    assert titles[:4] == ["step 0", "step 30", "step 70", "step 100"]
    if task == "cls2d":  # argmax right (1) or wrong (0) on a partly covered lattice: blank cells masked
        arr = _with_gid(fig, "probe_field")[-1].get_array()
        assert set(np.unique(arr.compressed())) <= {0.0, 1.0}
        assert arr.mask.sum() == 36 - len(_grid_probes("cls2d"))
        assert _with_gid(fig, "ood_mark:held")  # OOD probes marked with dots


def test_probe_trajectory_without_a_picture(tables):
    t = dict(tables)
    t["probes"] = tables["probes"][tables["probes"]["kind"] == "ood"]  # no grid probes
    assert plots.probe_trajectory(t, "line1d") is None
    # more than 2 input dims: the grid is scattered points, x0 and x1 their first coordinates
    pr = tables["probes"].copy()
    jitter = np.random.default_rng(1).uniform(-0.01, 0.01, len(pr))
    pr["x1"] = pr["x1"] + jitter
    t["probes"] = pr
    assert plots.probe_trajectory(t, "grid2d") is None


def test_probe_target_column_variants():
    t = synthetic_tables(probe_target_kind=True)
    assert list(t["probes"].columns).count("target") == 1 and "y" in t["probes"].columns  # kind + value
    fig = plots.probe_trajectory(t, "line1d", "mse")
    assert len(_with_gid(fig, "probe_heatmap")) == 1


def test_save_png_and_svg(tables, tmp_path):
    fig = plots.attribution_bars(tables)
    paths = plots.save(fig, tmp_path / "sub" / "attr")
    assert [p.name for p in paths] == ["attr.png", "attr.svg"]
    img = _png_ok(paths[0].read_bytes())
    assert 1000 <= img.shape[1] <= 1200
    svg = paths[1].read_text()
    assert "<svg" in svg and svg.rstrip().endswith("</svg>")


# -- the HTML report ------------------------------------------------------------------------------

def test_write_report_self_contained(tables, tmp_path):
    extra_png = tmp_path / "attr.png"
    plots.attribution_bars(tables).savefig(extra_png, dpi=plots.DPI)
    summary = pd.DataFrame({"task": ["line1d", "grid2d"], "final_mse": [0.0123456, 2.5e-7]})
    md = "Notes on the run.\n\n| task | value |\n|---|---:|\n| dist1d | 0.5 |\n\n- one\n- two"
    figs = [("Loss of line1d\nLook for the drop.", plots.probe_trajectory(tables, "dist1d")),
            ("Piece heatmap", plots.piece_heatmap(tables)), ("From a file", extra_png)]
    manifest = {"suite": "tiny", "created": "2025-01-02", "provenance": {
        "git_commit": "0123abc", "platform": "Linux-test", "versions": {"jax": "0.10.2", "numpy": "2.4"}}}
    path = rhtml.write_report(tmp_path / "rep", tables, title="Tiny suite", manifest=manifest,
                              table_sections=[("Summary", summary), ("Notes", md)], figures=figs)
    assert path == tmp_path / "rep" / "report.html"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]
    text = path.read_text()
    assert "http://" not in text and "https://" not in text and "<script" not in text and "<link" not in text
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert len(srcs) == 3
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert len(data) > 5000
        _png_ok(data)
    for needle in ("tiny", "0123abc", "Linux-test", "jax 0.10.2", "Tiny suite", "final_mse", "0.01235", "2.5e-07",
                   "Notes on the run.", "dist1d", "<li>one</li>", "Look for the drop.", "Loss of line1d"):
        assert needle in text, needle
    assert text.count('<table class="') == 2
    assert text.count("<figure") == 3
    for sid in re.findall(r'<a href="#([^"]+)"', text):  # the contents link to ids that exist
        assert f'id="{sid}"' in text


def test_figures_for_suite(tables):
    figs = rhtml.figures_for_suite(tables)
    heads = [t.split("\n", 1)[0] for t, _ in figs]
    assert heads[:3] == ["Final OOD vs train error", "Final error per piece",
                         "OOD attribution: which behaviour the final predictions follow"]
    assert len(figs) == 3 + 2 * len(TASKS)
    assert heads[3:5] == ["line1d: mse over training", "line1d: predictions over training"]
    assert all(isinstance(f, Figure) for _, f in figs)
    assert all("Look for" in t for t, _ in figs)


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
    figs = rhtml.figures_for_suite(tabs)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for i, (text, fig) in enumerate(figs):
        name = f"{i:02d}_" + re.sub(r"[^a-z0-9]+", "_", text.split("\n", 1)[0].lower()).strip("_")[:50]
        fig.savefig(out_dir / f"{name}.png", dpi=plots.DPI, facecolor="white")
        names.append(name)
    return rhtml.write_report(out_dir, tabs, title=f"Suite report ({out_dir.name})", manifest=None,
                              table_sections=[], figures=figs)


if __name__ == "__main__":
    full = "--full" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = Path(args[0] if args else "/tmp/suiteplots" + ("/full" if full else ""))
    tabs = real_tables(full=full)
    print({k: v.shape for k, v in tabs.items()})
    print(render_all(tabs, out))
