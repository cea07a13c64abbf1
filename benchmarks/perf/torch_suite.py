"""The default suite's workload as the plain PyTorch script a researcher would write instead.

One model at a time, one cell after another: for every (task, method) cell of
``benchmarks/default.toml`` and every seed, an MLP ``in -> 64 -> 64 -> head`` trained by
Adam (AdamW with weight decay where the suite says so) for ``steps`` updates on fresh
batches, evaluated ``evals`` times on ``eval_size`` points of two splits. The heads and
losses have the testbed's shapes (``head_dim`` of the method on the task): squared error
for ``mse``; cross-entropy on soft (HL-Gauss-like) targets over the bins for ``ce``. The
targets are a smooth function of the input: the cost is the training loop, not the task.
No tables, no plots. Prints one JSON line: {"seconds": ..., "cells": ..., "runs": ...}.

Run by ``benchmarks/perf/suite_speed.py`` with the cells as JSON on stdin.
"""

from __future__ import annotations

import json
import math
import sys
import time


def main() -> None:
    import torch

    spec = json.loads(sys.stdin.read())
    torch.set_num_threads(spec.get("threads") or torch.get_num_threads())
    t0 = time.perf_counter()
    runs = 0
    for cell in spec["cells"]:
        d_in, d_out, ce = cell["in_dim"], cell["head_dim"], cell["ce"]
        every = max(spec["steps"] // max(spec["evals"] - 1, 1), 1)
        for seed in range(spec["seeds"]):
            torch.manual_seed(seed)
            model = torch.nn.Sequential(torch.nn.Linear(d_in, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                        torch.nn.ReLU(), torch.nn.Linear(64, d_out))
            opt = (torch.optim.AdamW(model.parameters(), lr=cell["lr"], weight_decay=cell["weight_decay"])
                   if cell["weight_decay"] else torch.optim.Adam(model.parameters(), lr=cell["lr"]))
            centers = torch.linspace(-1.5, 1.5, d_out)

            def target(x, ce=ce, centers=centers, d_out=d_out):
                y = torch.sin(math.pi * x.sum(1, keepdim=True))
                if ce:  # soft targets over the bins, as HL-Gauss gives
                    return torch.softmax(-((y - centers) ** 2) / (2 * 0.05 ** 2), dim=1)
                return y.expand(-1, d_out)

            def loss_of(out, y, ce=ce):
                if ce:
                    return -(y * torch.log_softmax(out, dim=1)).sum(1).mean()
                return ((out - y) ** 2).mean()

            evals = [torch.rand(spec["eval_size"], d_in) * 2 - 1 for _ in range(2)]
            for step in range(spec["steps"] + 1):
                if step % every == 0 or step == spec["steps"]:
                    with torch.no_grad():
                        [float(loss_of(model(x), target(x))) for x in evals]
                if step == spec["steps"]:
                    break
                x = torch.rand(spec["batch_size"], d_in) * 2 - 1
                loss = loss_of(model(x), target(x))
                opt.zero_grad()
                loss.backward()
                opt.step()
            runs += 1
    print(json.dumps({"seconds": time.perf_counter() - t0, "cells": len(spec["cells"]), "runs": runs,
                      "threads": torch.get_num_threads(), "version": torch.__version__}))


if __name__ == "__main__":
    main()
