"""Which gradient-routing recipe localizes every multi-piece task? (issue 19)

For each built-in task with more than one piece: a plain model (mse) and routing recipes
that differ in the routed layer and the L1 weight, all on the default model (MLP 64x2).
Prints, per task and recipe, the routed model's final train loss (against the plain one's:
a recipe must not stop the task being learned) and the median own share of the ablation
damage (`testbed.analyses.routing.measure.localization`, 1 = ablating a piece's block hurts
only that piece, 0.5 = no localization), measured at the routed layer.

    python benchmarks/studies/routing_recipe.py [steps=2000] [seeds=4]
    TASKS=radial,checkerboard RECIPES=first_fl1x10,last_l1 DEPTH=3 python ...   (a subset)

Measured 2026-12-01 (2 cores; the README's routing section has the table): ``default`` (first
layer routed, ``foreign_l1 = 1``, the second half of the layer shared by every piece, ``shared =
0.5``; ``first_fl1x10_sh32`` spells it out for width 64) reaches a median own share of 0.97-1.00 on all 10 tasks with
the train loss near plain training's (0.6-2.2x); without shared units (``first_fl1x10``, the
previous default) 0.96-1.00 on 9 tasks and 0.74 on residue_mod3, whose pieces (the residue of a
binary number) the first layer cannot tell apart, so without shared units every block must
compute every piece's membership (0.88 with 16 shared units, 0.95 with 24, 1.00 with 32);
``first_l1`` (the recipe before that) 0.56-1.00; routing the last hidden layer (``last_*``) or the
middle one of three (``mid_*``) breaks training on checkerboard, parity, residue_mod3,
soft_regions and vector_rotate_reflect (train loss 0.04-30 against <= 0.007 plain), with or
without L1.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

import testbed
from testbed.analyses.routing import measure as ra
from testbed.models.modules import MLP
from testbed.tasks import make_task

RECIPES = {  # name -> (routing hparams, layer measured); shared and foreign_l1 given where they differ
    # from the defaults (now shared = 0.5, foreign_l1 = 1.0); sh<n>: n shared units of the default 64
    "default": ({}, 0),  # routing's defaults: layers (0,), shared 0.5, foreign_l1 1.0
    "first_l1": ({"layers": (0,), "l1": 0.01, "foreign_l1": 0.0, "shared": 0}, 0),
    "last_l1": ({"layers": (1,), "l1": 0.01, "foreign_l1": 0.0, "shared": 0}, 1),
    "last_l1x3": ({"layers": (1,), "l1": 0.03, "foreign_l1": 0.0, "shared": 0}, 1),
    "last_l1_003": ({"layers": (1,), "l1": 0.003, "foreign_l1": 0.0, "shared": 0}, 1),
    "last_l1_001": ({"layers": (1,), "l1": 0.001, "foreign_l1": 0.0, "shared": 0}, 1),
    "last_l1_003_sh8": ({"layers": (1,), "l1": 0.003, "shared": 8, "foreign_l1": 0.0}, 1),
    "last_l1_sh8": ({"layers": (1,), "l1": 0.01, "shared": 8, "foreign_l1": 0.0}, 1),
    "first_fl1": ({"layers": (0,), "foreign_l1": 0.1, "shared": 0}, 0),
    "first_fl1x10": ({"layers": (0,), "foreign_l1": 1.0, "shared": 0}, 0),
    "first_fl1x30": ({"layers": (0,), "foreign_l1": 3.0, "shared": 0}, 0),
    "first_fl1x100": ({"layers": (0,), "foreign_l1": 10.0, "shared": 0}, 0),
    "both_fl1x10": ({"layers": (0, 1), "foreign_l1": 1.0, "shared": 0}, 0),
    "both_fl1x10_at1": ({"layers": (0, 1), "foreign_l1": 1.0, "shared": 0}, 1),
    "first_fl1x10_sh8": ({"layers": (0,), "foreign_l1": 1.0, "shared": 8}, 0),
    "first_fl1x10_sh16": ({"layers": (0,), "foreign_l1": 1.0, "shared": 16}, 0),
    "first_fl1x10_sh24": ({"layers": (0,), "foreign_l1": 1.0, "shared": 24}, 0),
    "first_fl1x10_sh32": ({"layers": (0,), "foreign_l1": 1.0, "shared": 32}, 0),
    "last_fl1": ({"layers": (1,), "foreign_l1": 0.1, "shared": 0}, 1),
    "last_fl1x10": ({"layers": (1,), "foreign_l1": 1.0, "shared": 0}, 1),
    "mid_fl1x10": ({"layers": (1,), "foreign_l1": 1.0, "shared": 0}, 1),  # with DEPTH=3
    "mid_l1": ({"layers": (1,), "l1": 0.01, "foreign_l1": 0.0, "shared": 0}, 1),  # with DEPTH=3: the middle layer, an unrouted one after it
    "mid_l1x3": ({"layers": (1,), "l1": 0.03, "foreign_l1": 0.0, "shared": 0}, 1),
}
DEFAULT = ("default", "first_fl1x10", "first_l1")


def train_mse(result) -> float:
    h = result.history
    last = h[(h["split"] == "train") & (h["metric"] == "loss") & (h["piece"] == "all")]
    last = last[last["step"] == last["step"].max()]
    return float(last["value"].median())


def main(steps: int = 2000, seeds: int = 4) -> None:
    import os

    tasks = [n for n in testbed.list_tasks() if len(make_task(n).pieces) > 1]
    tasks = os.environ.get("TASKS", "").split(",") if os.environ.get("TASKS") else tasks
    recipes = {k: RECIPES[k] for k in (os.environ["RECIPES"].split(",") if os.environ.get("RECIPES") else DEFAULT)}
    kw = dict(model=MLP(width=int(os.environ.get("WIDTH", 64)), depth=int(os.environ.get("DEPTH", 2))), steps=steps, batch_size=128, seeds=seeds, lr=3e-3, evals=3,
              eval_size=512, probe_points=32, quiet=True)
    rows = []
    for name in tasks:
        task = make_task(name)
        t0 = time.time()
        plain = testbed.train(task, "mse", **kw)
        row = {"task": name, "plain_loss": train_mse(plain)}
        for label, (hp, layer) in recipes.items():
            method = testbed.make_method("routing", **hp)
            r = testbed.train(task, method, **kw)
            loc = ra.localization(ra.ablate_blocks(task, method, r, layer=layer, eval_size=512))
            base = ra.localization(ra.ablate_blocks(task, "mse", plain, blocks=method, layer=layer, eval_size=512))
            row[f"{label}_loss"] = train_mse(r)
            row[f"{label}_share"] = float(np.nanmedian(loc["score"]))
            row[f"{label}_min_piece"] = float(loc.groupby("piece")["score"].median().min())
            row[f"{label}_plain_share"] = float(np.nanmedian(base["score"]))
        rows.append(row)
        print(f"{name}: {time.time() - t0:.0f} s " + " ".join(f"{k}={v:.3g}" for k, v in row.items()
                                                              if k != "task"), flush=True)
    df = pd.DataFrame(rows).set_index("task")
    pd.set_option("display.width", 250)
    print(df.round(3).to_string())


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
