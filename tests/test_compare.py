"""Tests for the method comparison tables (`testbed.report.compare`).

Suite tables are built here following docs/suite_tables.md, with known numbers:
every statistic is checked against a direct computation on the per-run values.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from testbed.analyses.kit import final_values, sort_by
from testbed.report.compare import comparison, render_markdown
from testbed.report.tables import latex_escape, write_tables

CATEGORICAL = ["task", "method", "model", "optimizer", "target", "primary", "split", "piece", "metric"]


def direct_ci(values, level=0.95, n_boot=2000, seed=0):
    """Percentile bootstrap of the mean, written out (what bootstrap_ci should compute)."""
    x = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return x.mean(), lo, hi


def cell_key(task, method, model, optimizer):
    return hashlib.sha256(f"{task}|{method}|{model}|{optimizer}".encode()).hexdigest()[:16]


def build(rows, *, last_step=10, primary="mse"):
    """Suite tables from rows (dicts) of final whole-split values.

    Each row: task, method, seed, split, value, and optionally piece, metric, lr, model,
    optimizer, weight_decay, init_scale, step. Adds, per row, a step-0 row with a
    misleading value and a `loss` row, so tests see that only the final primary metric
    counts. Returns a history DataFrame with categorical string columns (as load_tables).
    """
    out = []
    for r in rows:
        r = {"piece": "all", "metric": primary, "lr": 0.01, "weight_decay": 0.0,
             "init_scale": 1.0, "model": "mlp", "optimizer": "adam", "step": last_step, **r}
        out.append(r)
        out.append({**r, "step": 0, "value": 1000.0 + r["value"]})
        if r["metric"] == primary:
            out.append({**r, "metric": "loss", "value": -5.0})
    h = pd.DataFrame(out)
    return _cells(h, primary)


def _cells(df, primary="mse"):
    df = df.copy()
    df["cell"] = [cell_key(*k) for k in zip(df.task, df.method, df.model, df.optimizer, strict=True)]
    df["target"] = "scalar"
    if "primary" not in df.columns:
        df["primary"] = primary
    run_keys = df[["cell", "lr", "weight_decay", "init_scale", "seed"]].drop_duplicates()
    run_keys = run_keys.sort_values(["cell", "lr", "weight_decay", "init_scale", "seed"])
    run_keys["run"] = run_keys.groupby("cell").cumcount()
    df = df.merge(run_keys, on=["cell", "lr", "weight_decay", "init_scale", "seed"])
    for c in CATEGORICAL:
        if c in df.columns:
            df[c] = df[c].astype("category")
    return df


def ood_rows(task, method, values_by_split, train=None, **kw):
    """Rows for several seeds: values_by_split maps split -> per-seed values."""
    rows = []
    for split, vals in values_by_split.items():
        rows += [dict(task=task, method=method, seed=s, split=split, value=v, **kw)
                 for s, v in enumerate(vals)]
    if train is not None:
        rows += [dict(task=task, method=method, seed=s, split="train", value=v, **kw)
                 for s, v in enumerate(train)]
    return rows


def row(df, **where):
    m = np.ones(len(df), dtype=bool)
    for k, v in where.items():
        m &= (df[k] == v).to_numpy()
    assert m.sum() == 1, (where, m.sum())
    return df[m].iloc[0]


# ---------------------------------------------------------------------------- OOD cells
OOD_A = [0.010, 0.013, 0.011, 0.030, 0.012]
OOD_B = [0.020, 0.015, 0.019, 0.050, 0.016]
TRAIN = [0.001, 0.002, 0.0015, 0.004, 0.001]


def test_ood_cell_is_bootstrap_of_per_seed_split_means():
    h = build(ood_rows("t1", "mse", {"ood_a": OOD_A, "ood_b": OOD_B}, train=TRAIN))
    out = comparison({"history": h})
    per_seed = (np.array(OOD_A) + np.array(OOD_B)) / 2
    mean, lo, hi = direct_ci(per_seed)
    r = row(out["ood_long"], label="mse", task="t1")
    assert (r["mean"], r["ci_low"], r["ci_high"], r["n"]) == pytest.approx((mean, lo, hi, 5), rel=1e-12)
    assert r["metric"] == "mse"
    assert lo < mean < hi and hi - mean != mean - lo  # asymmetric values, asymmetric interval
    # The pooled bootstrap over all 10 split values would differ: per-seed averaging matters.
    pooled = direct_ci(np.r_[OOD_A, OOD_B])
    assert abs(pooled[1] - lo) > 1e-4
    assert out["ood"].loc[0, "t1"] == f"{mean:#.3g} [{lo:#.3g}, {hi:#.3g}]"
    t = row(out["train_long"], label="mse", task="t1")
    assert (t["mean"], t["ci_low"], t["ci_high"]) == pytest.approx(direct_ci(TRAIN), rel=1e-12)


def test_other_level_changes_interval():
    h = build(ood_rows("t1", "mse", {"ood_a": OOD_A}, train=TRAIN))
    r = row(comparison({"history": h}, level=0.5)["ood_long"], task="t1")
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(direct_ci(OOD_A, level=0.5)[1:], rel=1e-12)


def test_run_with_a_nan_ood_split_is_dropped_not_partially_averaged():
    b = list(OOD_B)
    b[3] = np.nan  # seed 3 diverged on one split
    h = build(ood_rows("t1", "mse", {"ood_a": OOD_A, "ood_b": b}, train=TRAIN))
    r = row(comparison({"history": h})["ood_long"], task="t1")
    per_seed = [(a + bb) / 2 for a, bb in zip(OOD_A, b, strict=True) if np.isfinite(bb)]
    assert r["n"] == 4
    assert (r["mean"], r["ci_low"], r["ci_high"]) == pytest.approx(direct_ci(per_seed), rel=1e-12)


def test_metric_override_and_primary_per_task():
    rows = ood_rows("t1", "mse", {"ood_a": OOD_A}, train=TRAIN)
    rows += ood_rows("t1", "mse", {"ood_a": [5.0, 6.0, 9.0]}, train=[1.0, 1.0, 2.0], metric="xent")
    h = build(rows)
    assert row(comparison({"history": h})["ood_long"], task="t1")["mean"] == pytest.approx(np.mean(OOD_A))
    r = row(comparison({"history": h}, metric="xent")["ood_long"], task="t1")
    assert (r["mean"], r["n"], r["metric"]) == (pytest.approx(20 / 3), 3, "xent")


# ---------------------------------------------------------------------------- ranks and wins
def test_ranks_wins_and_row_order():
    # Per-task means (lower is better): zeta best on t1 and t2, alpha best on t3; on t4
    # zeta and alpha tie. Alphabetical order (alpha, mid, zeta) differs from rank order.
    means = {"t1": {"zeta": 1.0, "alpha": 2.0, "mid": 3.0},
             "t2": {"zeta": 1.0, "alpha": 3.0, "mid": 2.0},
             "t3": {"zeta": 2.0, "alpha": 1.0, "mid": 3.0},
             "t4": {"zeta": 1.0, "alpha": 1.0, "mid": 5.0}}
    rows = []
    for task, by_method in means.items():
        for method, m in by_method.items():
            rows += ood_rows(task, method, {"ood": [m - 0.1, m + 0.3, m - 0.2]}, train=[0.5, 0.5, 0.6])
    out = comparison({"history": build(rows)})
    ood = out["ood"]
    assert list(ood["label"]) == ["zeta", "alpha", "mid"]
    assert list(ood.columns) == ["label", "t1", "t2", "t3", "t4", "mean rank", "wins"]
    ranks = {"zeta": [1, 1, 2, 1.5], "alpha": [2, 3, 1, 1.5], "mid": [3, 2, 3, 3]}
    for lab, rk in ranks.items():
        r = row(ood, label=lab)
        assert r["mean rank"] == pytest.approx(np.mean(rk))
        assert list(out["ood_long"].query("label == @lab")["rank"]) == rk
    assert dict(zip(ood["label"], ood["wins"], strict=True)) == {"zeta": 3, "alpha": 2, "mid": 0}
    # Train means are equal for everyone: every rank is the tie 2, every label wins.
    assert list(out["train"]["mean rank"]) == [2.0, 2.0, 2.0]
    assert list(out["train"]["wins"]) == [4, 4, 4]
    assert "mean rank" not in out["ratio"].columns
    assert list(out["ratio"]["label"]) == ["zeta", "alpha", "mid"]


# ---------------------------------------------------------------------------- ratio
def test_ratio_is_mean_of_per_run_ratios():
    train, ood_a, ood_b = [1.0, 2.0, 4.0], [2.0, 1.0, 3.0], [2.0, 3.0, 1.0]
    out = comparison({"history": build(ood_rows("t1", "mse", {"a": ood_a, "b": ood_b}, train=train))})
    per_run = [2.0 / 1.0, 2.0 / 2.0, 2.0 / 4.0]
    r = row(out["ratio_long"], task="t1")
    assert (r["mean"], r["ci_low"], r["ci_high"], r["n"]) == pytest.approx((*direct_ci(per_run), 3))
    assert r["mean"] != pytest.approx(2.0 / np.mean(train))  # not the ratio of means


# ---------------------------------------------------------------------------- splits, pieces
@pytest.mark.parametrize("categorical", [False, True])
def test_sort_by_follows_the_given_order(categorical):
    # the suite's label order, not the alphabet: a categorical column (as read back) too
    df = pd.DataFrame({"label": ["b", "a", "z", "c", "a"], "task": ["t2", "t1", "t1", "t1", "t2"], "v": range(5)})
    if categorical:
        df = df.astype({"label": "category", "task": "category"})
    out = sort_by(df, {"label": ["c", "b", "a"], "task": ["t2", "t1"]})
    assert list(out["v"]) == [3, 0, 4, 1, 2]  # z, not in the order, last


def test_final_values_per_cell_last_step_and_pieces():
    rows = ood_rows("t1", "mse", {"ood": [1.0, 2.0]}, train=[0.1, 0.2])
    rows += ood_rows("t1", "mse", {"ood": [3.0, 5.0]}, train=[0.3, 0.4], piece="left")
    rows += ood_rows("t2", "mse", {"ood": [7.0, 8.0]}, train=[0.7, 0.9], step=20)
    h = build(rows)
    # t2 also has a step-10 evaluation, which is not its last one.
    h = pd.concat([h.astype({c: object for c in CATEGORICAL}),
                   h[h.task == "t2"].assign(step=10, value=-1.0).astype({c: object for c in CATEGORICAL})],
                  ignore_index=True)
    f = final_values(h)
    assert set(f.loc[f.task == "t1", "step"]) == {10}
    assert set(f.loc[f.task == "t2", "step"]) == {20}
    assert set(f["piece"]) == {"all", "left"}
    assert (f["ood"] == (f["split"] != "train")).all() and f["ood"].any() and not f["ood"].all()
    out = comparison({"history": h})
    s = out["splits"]
    assert list(s.columns) == ["task", "split", "label", "metric", "mean", "ci_low", "ci_high", "n"]
    assert row(s, task="t2", split="ood")["mean"] == pytest.approx(7.5)
    assert row(s, task="t1", split="train")["mean"] == pytest.approx(0.15)
    p = out["pieces"]
    assert list(p.columns) == ["task", "split", "piece", "label", "metric", "mean", "ci_low", "ci_high", "n"]
    assert set(p["piece"]) == {"left"}
    r = row(p, task="t1", split="ood", piece="left")
    assert (r["mean"], r["ci_low"], r["ci_high"], r["n"]) == pytest.approx((*direct_ci([3.0, 5.0]), 2))


# ---------------------------------------------------------------------------- labels
def test_labels_only_name_what_varies():
    rows = ood_rows("t1", "mse", {"ood": [1.0, 1.2]}, train=[0.1, 0.1], lr=0.01)
    rows += ood_rows("t1", "mse", {"ood": [4.0, 4.4]}, train=[0.1, 0.1], lr=0.1)
    rows += ood_rows("t1", "ce", {"ood": [2.0, 2.2]}, train=[0.1, 0.1], lr=0.01)
    out = comparison({"history": build(rows)})
    assert list(out["ood"]["label"]) == ["mse, lr=0.01", "ce, lr=0.01", "mse, lr=0.1"]
    assert row(out["ood_long"], label="mse, lr=0.1")["mean"] == pytest.approx(4.2)
    lab = row(out["labels"], label="mse, lr=0.1")
    assert (lab["method"], lab["lr"], lab["model"]) == ("mse", 0.1, "mlp")


def test_labels_with_models_optimizers_and_weight_decay():
    rows = ood_rows("t1", "mse", {"ood": [1.0]}, model="mlp", weight_decay=0.0)
    rows += ood_rows("t1", "mse", {"ood": [2.0]}, model="lowrank_r2", weight_decay=0.1)
    rows += ood_rows("t1", "ce", {"ood": [3.0]}, model="mlp", weight_decay=0.0)
    out = comparison({"history": build(rows)})
    # wd differs only together with the model, which already tells the rows apart
    assert set(out["ood"]["label"]) == {"mse/mlp", "mse/lowrank_r2", "ce/mlp"}
    rows2 = ood_rows("t1", "mse", {"ood": [1.0]}, optimizer="adam")
    rows2 += ood_rows("t1", "mse", {"ood": [2.0]}, optimizer="sgd")
    assert set(comparison({"history": build(rows2)})["ood"]["label"]) == {"mse/adam", "mse/sgd"}


def test_per_task_overrides_do_not_split_a_methods_row():
    """A model or optimizer that differs only between tasks (a per-task override) keeps one row."""
    rows = ood_rows("t1", "mse", {"ood": [1.0, 1.1]}, optimizer="adam(lr=0.003)")
    rows += ood_rows("t2", "mse", {"ood": [2.0, 2.1]}, model="lowrank", optimizer="adam(lr=0.01)")
    rows += ood_rows("t1", "ce", {"ood": [3.0, 3.1]}, optimizer="adam(lr=0.003)")
    rows += ood_rows("t2", "ce", {"ood": [0.5, 0.6]}, model="lowrank", optimizer="adam(lr=0.01)")
    out = comparison({"history": build(rows)})
    assert sorted(out["ood"]["label"]) == ["ce", "mse"]
    assert list(out["ood"].set_index("label").loc["mse", ["wins"]]) == [1]


# ---------------------------------------------------------------------------- divergence
def test_divergence_fractions():
    runs = pd.DataFrame([
        dict(task="t1", method="a", seed=0, diverged_step=-1),
        dict(task="t1", method="a", seed=1, diverged_step=40),
        dict(task="t1", method="a", seed=2, diverged_step=-1),
        dict(task="t1", method="b", seed=0, diverged_step=-1),
        dict(task="t1", method="b", seed=1, diverged_step=-1),
        dict(task="t2", method="a", seed=0, diverged_step=0),
        dict(task="t2", method="a", seed=1, diverged_step=7),
    ]).assign(model="mlp", optimizer="adam", lr=0.01, weight_decay=0.0, init_scale=1.0)
    rows = [dict(task=t, method=m, seed=s, split=sp, value=1.0 + s)
            for t, m, s in runs[["task", "method", "seed"]].itertuples(index=False)
            for sp in ("train", "ood")]
    out = comparison({"history": build(rows), "runs": _cells(runs)})
    d = out["divergence"]
    assert list(d.columns) == ["label", "task", "diverged", "runs", "fraction"]
    got = {(r.label, r.task): (r.diverged, r.runs, r.fraction) for r in d.itertuples()}
    assert got == {("a", "t1"): (1, 3, pytest.approx(1 / 3)), ("b", "t1"): (0, 2, 0.0),
                   ("a", "t2"): (2, 2, 1.0)}


# ---------------------------------------------------------------------------- attribution
def test_attribution_fractions_with_missing_candidate_as_zero():
    fr = {  # seed -> candidate -> fraction; seed 1 has no piece:left row (fraction 0)
        0: {"target": 0.5, "linear_fit": 0.3, "piece:left": 0.2},
        1: {"target": 0.7, "linear_fit": 0.3},
        2: {"target": 0.6, "linear_fit": 0.1, "piece:left": 0.3},
    }
    attr = [dict(task="t1", method="mse", seed=s, split="ood_a", candidate=c, fraction=v,
                 mean_distance=0.1) for s, cs in fr.items() for c, v in cs.items()]
    attr += [dict(task="t1", method="mse", seed=s, split="ood_b", candidate="target",
                  fraction=1.0, mean_distance=0.0) for s in fr]
    attr = pd.DataFrame(attr).assign(model="mlp", optimizer="adam", lr=0.01, weight_decay=0.0,
                                     init_scale=1.0)
    h = build(ood_rows("t1", "mse", {"ood_a": [1, 2, 3], "ood_b": [1, 2, 3]}, train=[1, 1, 1]))
    out = comparison({"history": h, "attribution": _cells(attr)})
    long = out["attribution_long"]
    assert list(long.columns) == ["task", "split", "label", "candidate", "mean", "ci_low", "ci_high", "n"]
    for cand in ("target", "linear_fit", "piece:left"):
        vals = [fr[s].get(cand, 0.0) for s in (0, 1, 2)]
        r = row(long, split="ood_a", candidate=cand)
        assert (r["mean"], r["ci_low"], r["ci_high"], r["n"]) == pytest.approx((*direct_ci(vals), 3))
    # ood_b only knows `target`: no made-up zero rows for candidates it never had.
    assert set(long.loc[long.split == "ood_b", "candidate"]) == {"target"}
    wide = out["attribution"]
    assert list(wide.columns) == ["task", "split", "label", "target", "linear_fit", "piece:left"]
    a = row(wide, split="ood_a")
    assert (a["target"], a["linear_fit"], a["piece:left"]) == (60.0, 23.3, 16.7)
    assert row(wide, split="ood_b")["target"] == 100.0
    md = render_markdown(out, which=("attribution",))
    assert "### t1" in md and "piece:left" in md and "23.3" in md


# ---------------------------------------------------------------------------- output
def _suite():
    rows = ood_rows("t_one", "mse", {"ood_a": OOD_A, "ood_b": OOD_B}, train=TRAIN)
    rows += ood_rows("t_one", "ce_two_hot", {"ood_a": OOD_B, "ood_b": OOD_B}, train=TRAIN)
    rows += ood_rows("t_two", "mse", {"ood_a": [0.3, 0.5, 0.4]}, train=[0.1, 0.2, 0.1])
    rows += ood_rows("t_two", "ce_two_hot", {"ood_a": [0.2, 0.1, 0.6]}, train=[0.1, 0.1, 0.3])
    return comparison({"history": build(rows)})


def test_write_tables_csv_round_trip_and_latex(tmp_path):
    out = _suite()
    paths = write_tables(out, tmp_path / "tables")
    assert len(paths) == 2 * len(out) and all(p.exists() for p in paths)
    assert {p.name for p in paths} >= {"ood.csv", "ood.tex", "ood_long.csv", "labels.tex"}
    assert "attribution.csv" not in {p.name for p in paths}  # not measured in this suite: no empty table
    assert "findings.csv" in {p.name for p in paths}
    back = pd.read_csv(tmp_path / "tables" / "ood_long.csv")
    want = out["ood_long"]
    assert list(back.columns) == list(want.columns)
    for c in ("mean", "ci_low", "ci_high", "n", "rank"):
        np.testing.assert_array_equal(back[c].to_numpy(), want[c].to_numpy())
    shown = pd.read_csv(tmp_path / "tables" / "ood.csv")
    assert list(shown["t_one"]) == list(out["ood"]["t_one"])
    tex = (tmp_path / "tables" / "ood.tex").read_text()
    assert r"\begin{tabular}{lllrr}" in tex and r"\end{tabular}" in tex
    assert r"t\_one" in tex and "ce\\_two\\_hot" in tex and "t_one" not in tex
    assert tex.count(r" \\") == 1 + len(out["ood"])
    long_tex = (tmp_path / "tables" / "ood_long.tex").read_text()
    assert format(want["mean"].iloc[0], ".4g") in long_tex


def test_latex_escape():
    assert latex_escape("a_b 50% & #1 $x$ {y} ~^\\") == (
        r"a\_b 50\% \& \#1 \$x\$ \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{}")


def test_render_markdown_names_every_label_and_task():
    out = _suite()
    md = render_markdown(out)
    for lab in out["labels"]["label"]:
        assert lab in md
    for task in ("t_one", "t_two"):
        assert task in md
    assert md.count("\n## ") + md.startswith("## ") == 4  # findings, ood, train, ratio: nothing else measured
    assert md.startswith("## Findings")
    assert "## OOD" in md and "mean rank" in md and "Metric per task: t_one: mse, t_two: mse" in md
    with pytest.raises(KeyError):
        render_markdown(out, which=("nope",))


def test_plateau_columns_and_zero_loss_rate():
    rows = ood_rows("t_one", "mse", {"ood": [1.0, 1.0]}, train=[0.1, 0.1])
    rows += ood_rows("t_one", "ce", {"ood": [2.0, 2.0]}, train=[0.1, 0.1])
    history = build(rows)
    runs = history.drop_duplicates(["cell", "run"])[["cell", "task", "method", "model", "optimizer", "lr",
                                                      "weight_decay", "init_scale", "run", "seed"]]
    plat = runs.assign(stalls=[1, 3, 0, 0], stall_frac=[0.2, 0.4, 0.0, 0.0], stuck=[0, 1, 0, 0],
                       bumps=[0, 2, 0, 0], reached_zero=[1.0, 0.0, 1.0, 1.0], final_loss=[1e-4, 0.5, 1e-5, 1e-5])
    plat = plat.sort_values(["method", "seed"])
    out = comparison({"history": history, "plateaus": plat})
    ood = out["ood"].set_index("label")
    assert ood.loc["mse", "stalls"] == pytest.approx(2.0) and ood.loc["ce", "stalls"] == 0
    assert ood.loc["mse", "stall time"] == "30%" and ood.loc["mse", "stuck"] == "50%"
    assert ood.loc["mse", "zero loss"] == "50%" and ood.loc["ce", "zero loss"] == "100%"
    zl = out["plateaus_long"]
    z = zl[(zl.quantity == "reached_zero") & (zl.label == "mse")]["mean"].item()
    assert z == pytest.approx(0.5)
    assert zl[(zl.quantity == "bumps") & (zl.label == "mse")]["mean"].item() == pytest.approx(1.0)
    md = render_markdown(out)
    for title in ("Rate of reaching the zero-loss solution", "Stalls per run", "Runs stuck at the end", "Bumps"):
        assert title in md
    assert any("Stuck: 50% of mse runs on t_one" in f for f in out["findings"]["finding"])


def test_findings_name_the_best_label_and_whether_its_interval_separates():
    rows = ood_rows("apart", "mse", {"ood": [1.0, 1.1, 0.9, 1.0]}, train=[0.1] * 4)
    rows += ood_rows("apart", "ce", {"ood": [2.0, 2.1, 1.9, 2.0]}, train=[0.1] * 4)
    rows += ood_rows("close", "mse", {"ood": [1.0, 3.0, 1.0, 3.0]}, train=[0.1] * 4)
    rows += ood_rows("close", "ce", {"ood": [2.4, 1.5, 2.4, 1.5]}, train=[0.1] * 4)
    md = render_markdown(comparison({"history": build(rows)}), full=False)
    apart = next(s for s in md.splitlines() if s.startswith("- **apart**"))
    close = next(s for s in md.splitlines() if s.startswith("- **close**"))
    assert "lowest OOD mse: mse 1.00" in apart and "separates from the next, ce 2.00" in apart
    assert "lowest OOD mse: ce 1.95" in close and "does not separate from the next, mse 2.00" in close
    md = render_markdown(comparison({"history": build(rows)}), full=False)
    assert md.startswith("## Findings") and "## OOD" not in md


def test_findings_say_when_a_value_rests_on_fewer_runs():
    rows = ood_rows("t", "a", {"ood": [0.1, np.nan, np.nan, np.nan]}, train=[0.1] * 4)
    rows += ood_rows("t", "b", {"ood": [0.3, 0.31, 0.29, 0.3]}, train=[0.1] * 4)
    md = render_markdown(comparison({"history": build(rows)}), full=False)
    line = next(s for s in md.splitlines() if s.startswith("- **t**"))
    assert "a 0.100 [0.100, 0.100] (1 of 4 runs)" in line and "no interval to compare" in line
    assert "separates" not in line
