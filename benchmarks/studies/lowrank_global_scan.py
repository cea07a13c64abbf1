"""The settings scan behind benchmarks/lowrank_global.toml: for one target spectrum and init
scale, every rank x {CE, MSE} x {SGD, Adam} at several learning rates (8 seeds each, one program
per cell with the learning rates swept inside it), printing per setting the stall counts, how
many runs converged or ended stuck, the bumps and the final train loss.

    python benchmarks/studies/lowrank_global_scan.py 16,8,4,2 0.01 6000

Arguments: singular values (comma-separated), init scale, steps. About 2-4 minutes on 2 cores.
"""

from __future__ import annotations

import sys

import numpy as np

import testbed

LRS = {("ce", "sgd"): [0.05, 0.1, 0.2, 0.5], ("mse", "sgd"): [0.5, 1.0, 2.0],
       ("ce", "adam"): [0.003, 0.01, 0.03], ("mse", "adam"): [0.003, 0.01, 0.03]}
RANKS = (1, 2, 4, 10, 16)


def main(values: tuple[float, ...], init: float, steps: int) -> None:
    task = testbed.make_task("lowrank_global", singular_values=values)
    print("spectrum init method optimizer lr rank | final loss (median, max) | runs by stall count | "
          "converged stuck bumps")
    for (method, opt_name), lrs in LRS.items():
        opt = testbed.Optimizer(name=opt_name, lr=lrs[0], **({"momentum": 0.0} if opt_name == "sgd" else {}))
        for rank in RANKS:
            r = testbed.train(task, method=method, model=testbed.Matrix(rank=rank), optimizer=opt, init_scale=init,
                              lr=lrs, batch_size=1, steps=steps, evals=40, eval_size=4, probe_points=4, seeds=8,
                              quiet=True)
            h = r.history
            final = h[(h.metric == "loss") & (h.split == "train") & (h.piece == "all") & (h.step == h.step.max())]
            for lr in lrs:
                ids = r.runs[np.isclose(r.runs.lr, lr)].run.to_numpy()
                fin = final[final.run.isin(ids)].value.to_numpy()
                curves = [testbed.read_curve(np.arange(r.batch_loss.shape[1]), r.batch_loss[i]) for i in ids]
                counts = np.bincount([len(c.stalls) for c in curves], minlength=4).tolist()
                print(values, init, method, opt_name, lr, rank, f"| {np.nanmedian(fin):.2g} {np.nanmax(fin):.2g} |",
                      counts, "|", sum(c.final.converged for c in curves), sum(c.final.stuck for c in curves),
                      sum(len(c.bumps) for c in curves), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:] or ["16,8,4,2", "0.01", "6000"]
    main(tuple(float(x) for x in args[0].split(",")), float(args[1]), int(args[2]))
