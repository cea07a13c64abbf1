"""Myopia figures (`testbed.analyses.myopia.figures`) from small synthetic suite tables (no training)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import QuadMesh

from testbed.analyses.myopia.figures import reward_curves, shutdown_heatmap
from testbed.core.style import save

E, STEPS, EVALS = 4, 80, (0, 20, 40, 60, 80)  # 4 epochs of 20 updates
LABELS = ("myopic/step", "H4/step", "myopic/window", "H4/window")
RUNS = 3
STOP = {("myopic/step", 1): 50}  # run 1 of myopic/step shuts down at update 50 (epoch 2)


def _cell(label: str, task: str) -> dict:
    return {"cell": f"{task}-{label}", "task": task, "method": label, "model": "mlp", "optimizer": "adam",
            "target": "scalar", "primary": "mse", "lr": 0.01, "weight_decay": 0.0, "init_scale": 1.0}


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    prof, traces, hist = [], [], []
    for label, run in itertools.product(LABELS, range(RUNS)):
        cell = _cell(label, "t")
        stop = STOP.get((label, run))
        for step, epoch in itertools.product(EVALS, range(2 * E)):
            for split in ("train", "ood"):
                for metric in ("p_stop", "shutdown_rate"):
                    prof.append({**cell, "run": run, "seed": run, "step": step, "split": split, "epoch": epoch,
                                 "metric": metric, "value": rng.uniform()})
        for step in range(1, STEPS + 1):
            for metric in ("p_stop", "reward"):
                v = np.nan if stop is not None and step > stop else rng.uniform(-1, 1)
                traces.append({**cell, "run": run, "seed": run, "step": step, "metric": metric, "value": v})
        turn = 2 if label.endswith("step") else 1
        facts = {"epochs": E, "turn_epoch": turn, "shut_down": float(stop is not None),
                 "shutdown_epoch": (stop - 1) // (STEPS // E) if stop else np.nan, "reward_total": 1.0}
        for metric, value in facts.items():
            hist.append({**cell, "run": run, "seed": run, "step": STEPS, "split": "train", "piece": "all",
                         "metric": metric, "value": value})
    # what the myopia analysis records per cell: the methods' own horizon and schedule (the layout
    # comes from these, never from the label text)
    setup = [{**_cell(label, "t"), "run": run, "seed": run, "horizon": 0.0 if label.startswith("myopic") else 4.0,
              "schedule": label.split("/")[1]} for label, run in itertools.product(LABELS, range(RUNS))]
    return {"profile": pd.DataFrame(prof), "traces": pd.DataFrame(traces), "history": pd.DataFrame(hist),
            "myopia_setup": pd.DataFrame(setup)}


def _panels(fig):
    return {ax.get_title(loc="left").split("\n")[0]: ax for ax in fig.axes if ax.get_title(loc="left")}


def test_heatmap_draws_the_mean_p_stop_per_label(tables, tmp_path):
    fig = shutdown_heatmap(tables, "t")
    panels = _panels(fig)
    assert set(panels) == set(LABELS)  # 2 x 2: schedule rows, horizon columns
    assert len(fig.axes) == len(LABELS) + 1  # + the shared colorbar
    assert panels["myopic/step"].get_subplotspec().rowspan.start == 0
    assert panels["H4/window"].get_subplotspec().rowspan.start == 1
    assert panels["H4/window"].get_subplotspec().colspan.start == 1
    p = tables["profile"]
    for label, ax in panels.items():
        want = (p[(p["method"] == label) & (p["split"] == "train") & (p["metric"] == "p_stop")]
                .pivot_table(index="epoch", columns="step", values="value", aggfunc="mean").to_numpy())
        (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
        got = np.asarray(mesh.get_array()).reshape(want.shape)
        np.testing.assert_allclose(got, want)
        xs, ys = mesh.get_coordinates()[0, :, 0], mesh.get_coordinates()[:, 0, 1]
        np.testing.assert_allclose((xs[1:] + xs[:-1]) / 2, np.array(EVALS) / (STEPS / E))  # time in epochs
        np.testing.assert_allclose(ys, np.arange(2 * E + 1))  # row e spans [e, e + 1)
        hlines = sorted(ln.get_ydata()[0] for ln in ax.get_lines() if np.ptp(ln.get_ydata()) == 0)
        assert hlines == [2 if label.endswith("step") else 1, E]  # turn epoch, unseen boundary
        assert any(t.get_text() == "unseen" for t in ax.texts)
    vlines = [ln for ln in panels["myopic/step"].get_lines() if np.ptp(ln.get_xdata()) == 0]
    assert [ln.get_xdata()[0] for ln in vlines] == [2]  # the one run that shut down did so in epoch 2
    assert "1/3 runs shut down" in panels["myopic/step"].get_title(loc="left")
    assert not [ln for ln in panels["H4/step"].get_lines() if np.ptp(ln.get_xdata()) == 0]
    assert save(fig, tmp_path / "heat")[0].stat().st_size > 0


def test_reward_curves_count_a_stopped_run_as_zero_and_hold_its_p_stop(tables, tmp_path):
    fig = reward_curves(tables, "t")
    assert len(fig.axes) == 2
    ax, bx = fig.axes
    assert {ln.get_label() for ln in ax.get_lines()} >= set(LABELS)
    tr = tables["traces"]
    sub = tr[tr["method"] == "myopic/step"]
    rw = sub[sub["metric"] == "reward"].pivot(index="step", columns="run", values="value")
    ps = sub[sub["metric"] == "p_stop"].pivot(index="step", columns="run", values="value")
    stop = STOP[("myopic/step", 1)]
    rw.loc[stop + 1:, 1] = 0.0
    ps.loc[stop + 1:, 1] = ps.loc[stop, 1]
    for axis, w in ((ax, rw), (bx, ps)):
        (line,) = [ln for ln in axis.get_lines() if ln.get_label() == "myopic/step"]
        x, y = line.get_data()
        assert len(x) == 4 * E
        np.testing.assert_allclose(x[-1], E - 0.125)
        np.testing.assert_allclose(y[-1], w.loc[STEPS - 4:STEPS].mean().mean())  # last bin: updates 76..80
        np.testing.assert_allclose(y[0], w.loc[1:5].mean().mean())
    styles = {ln.get_label(): ln.get_linestyle() for ln in ax.get_lines() if ln.get_label() in LABELS}
    assert styles["myopic/step"] == styles["H4/step"] != styles["myopic/window"]
    colors = {ln.get_label(): ln.get_color() for ln in ax.get_lines() if ln.get_label() in LABELS}
    assert colors["myopic/step"] == colors["myopic/window"] != colors["H4/step"]
    turns = sorted({ln.get_xdata()[0] for ln in ax.get_lines() if np.ptp(ln.get_xdata()) == 0})
    assert turns == [1, 2]
    assert save(fig, tmp_path / "reward")[0].stat().st_size > 0


def test_no_figure_without_profile_or_traces(tables):
    assert shutdown_heatmap(tables, "other_task") is None
    assert reward_curves(tables, "other_task") is None
    assert shutdown_heatmap({k: v for k, v in tables.items() if k != "profile"}, "t") is None
    assert reward_curves({k: v for k, v in tables.items() if k != "traces"}, "t") is None


def test_layout_comes_from_the_setup_not_the_labels(tables):
    """Renamed labels keep the schedule x horizon grid; without the setup table, panels wrap."""
    rename = {lab: f"run{i}" for i, lab in enumerate(LABELS)}
    renamed = {k: v.assign(method=v["method"].map(rename)) for k, v in tables.items()}
    panels = _panels(shutdown_heatmap(renamed, "t"))
    assert panels[rename["myopic/step"]].get_subplotspec().rowspan.start == 0
    assert panels[rename["H4/window"]].get_subplotspec().rowspan.start == 1
    assert panels[rename["H4/window"]].get_subplotspec().colspan.start == 1
    no_setup = {k: v for k, v in tables.items() if k != "myopia_setup"}
    fig = shutdown_heatmap(no_setup, "t")
    assert all(ax.get_subplotspec().rowspan.start == 0 for ax in _panels(fig).values())  # one row of 4


def test_labels_without_a_schedule_wrap():
    rng = np.random.default_rng(1)
    rows = [{**_cell(lab, "t"), "run": 0, "seed": 0, "step": s, "split": "train", "epoch": e,
             "metric": "p_stop", "value": rng.uniform()}
            for lab in ("a", "b", "c", "d", "e") for s in (0, 10) for e in range(4)]
    fig = shutdown_heatmap({"profile": pd.DataFrame(rows)}, "t")
    assert len(_panels(fig)) == 5
    assert sum(ax.axison for ax in fig.axes) == 5 + 1  # 2 x 4 grid, 3 blanks switched off
