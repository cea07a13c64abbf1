"""The task library is learned: every built-in task, trained with ``mse`` and ``ce`` (HL-Gauss)
targets on the default model and budget (an MLP of width 64 and depth 2, Adam 3e-3, 2,000 steps
of 128; AdamW with weight decay 0.1 on ``modular_addition``, as in benchmarks/default.toml),
reaches a train error far below where it started, or says in its description why it is meant to
be hard.

Measured: the fraction of tasks that at least one method learns, where learned means the final
train primary metric (mse, kl or classification error) is at most 10% of its value at step 0 (mean
over 2 seeds). Band [1, 1]: a task no method learns makes its OOD questions moot. The details
list every task's ratio per method (the health table); the figure draws it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from testbed.core.columns import METRICS
from testbed.reproduce.registry import Measured, Reproduction, register_reproduction

LEARNED = 0.1
METHODS = ({"name": "mse"}, {"name": "ce", "encoding": "hl_gauss"})


def health_table(tasks=None, *, steps: int = 2000, seeds: int = 2) -> pd.DataFrame:
    """``task, method, initial, final, ratio, learned``: the train primary metric at step 0 and at the end."""
    from testbed.reproduce import kit

    rows = []
    for name in tasks or kit.list_tasks():
        task = kit.make_task(name)
        opt = (kit.make_optimizer("adamw", lr=3e-3, weight_decay=0.1) if name == "modular_addition"
               else kit.make_optimizer("adam", lr=3e-3))
        model = kit.make_model("mlp", width=64, depth=2)
        for m in METHODS:
            method = kit.make_method(m["name"], **{k: v for k, v in m.items() if k != "name"})
            r = kit.train(task, method, model, opt, steps=steps, batch_size=128, seeds=seeds, evals=2, quiet=True,
                              eval_size=512, probe_points=16)
            h = r.history
            h = h[(h["split"] == "train") & (h["piece"] == "all") & (h["metric"] == METRICS[task.target][0])]
            first = float(h[h["step"] == 0]["value"].mean())
            last = float(h[h["step"] == h["step"].max()]["value"].mean())
            rows.append({"task": name, "method": m["name"], "initial": first, "final": last,
                         "ratio": last / first if first > 0 else np.nan, "learned": last <= LEARNED * first})
    return pd.DataFrame(rows)


def _run(quick: bool) -> Measured:
    tasks = ["sine_line", "parity"] if quick else None
    t = health_table(tasks, steps=300 if quick else 2000, seeds=1 if quick else 2)
    by_task = t.groupby("task", sort=False)["learned"].any()
    frac = float(by_task.mean())
    text = "; ".join(f"{task}: " + ", ".join(f"{r.method} {r.ratio:.3g}" for r in g.itertuples())
                     for task, g in t.groupby("task", sort=False))
    failed = [k for k, v in by_task.items() if not v]
    return Measured(frac, f"final / initial train error per task and method: {text}. Not learned by any method: "
                          f"{', '.join(failed) or 'none'}.", _figure(t))


def _figure(t: pd.DataFrame):
    from testbed.analyses.figkit import suite_figure
    from testbed.core.style import style

    tasks = list(dict.fromkeys(t["task"]))
    with style():
        fig = suite_figure("Task library health: is every task learned?", [
            "final over initial train error (primary metric), mean over seeds, per task and method; dotted: the 10% "
            "a task must reach"], 0.28 * len(tasks) + 0.8)
        ax = fig.subplots(1, 1)
        y = np.arange(len(tasks))
        for k, (m, c) in enumerate((("mse", "#4e79a7"), ("ce", "#f28e2b"))):
            v = t[t["method"] == m].set_index("task")["ratio"].reindex(tasks)
            ax.barh(y + (k - 0.5) * 0.38, np.maximum(v.to_numpy(), 1e-6), height=0.36, color=c, label=m)
        ax.set_yticks(y, tasks)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.axvline(LEARNED, color="#777777", ls=":", lw=1.0)
        ax.set_xlabel("final / initial train error")
        ax.legend(frameon=False, loc="lower right")
    return fig


@register_reproduction("task_health")
def task_health() -> Reproduction:
    return Reproduction(
        "task_health", claim="Every built-in task is learned by mse or ce on the default model and budget",
        source="this testbed (issue 19: a task no method learns makes its OOD questions moot)", band=(1.0, 1.0),
        unit="fraction of tasks learned", why="a task must reach 10% of its initial train error with some method",
        run=_run)
