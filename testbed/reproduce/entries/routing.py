"""Gradient routing (Cloud et al. 2024, "Gradient Routing: Masking Gradients to Localize
Computation in Neural Networks", arXiv 2410.04332, Sec. 4): routing each piece's gradients into
its own block of hidden units localizes the piece there; ablating the block removes that piece's
capability while the other pieces keep most of theirs, which a plainly trained model with the
same blocks does not show.

Here: ``two_slopes`` (pieces ``shallow`` x < 0, ``steep`` x >= 0), a one-layer MLP of width 32,
method ``routing`` with its default recipe (first hidden layer routed, its second half shared by
both pieces, each block held silent on the other piece's inputs by ``foreign_l1``: the recipe that
localizes every built-in multi-piece task, see `benchmarks/studies/routing_recipe.py`; masks alone
leave units shaped by one piece active on the other), 4 seeds. Measured: the
median localization score, the own piece's share of the ablation damage (1: only the own piece
is hurt, 0.5: both equally). Band [0.8, 1]; the plain model's score is reported beside.
"""

from __future__ import annotations

import numpy as np

from testbed.reproduce.registry import Measured, Reproduction, register_reproduction


def _run(quick: bool) -> Measured:
    from testbed.analyses.routing import measure as ra
    from testbed.reproduce import kit

    task = kit.make_task("two_slopes")
    routed = kit.make_method("routing")
    kw = dict(model=kit.MLP(width=32, depth=1), steps=200 if quick else 400, batch_size=128,
              seeds=2 if quick else 4, lr=1e-2, evals=3, quiet=True, eval_size=256, probe_points=32)
    r, p = kit.train(task, routed, **kw), kit.train(task, "mse", **kw)
    loc = ra.localization(ra.ablate_blocks(task, routed, r, eval_size=512))
    base = ra.localization(ra.ablate_blocks(task, "mse", p, blocks=routed, eval_size=512))
    rec = ra.recovery_table(ra.retrain_after_ablation(task, routed, r, "shallow", steps=60 if quick else 120,
                                                      lr=1e-2, evals=13))
    value = float(np.nanmedian(loc["score"]))
    ratio = rec.groupby("run")["ratio"].first()
    return Measured(value, f"routed: median own share {value:.3f} (per piece: "
                           f"{loc.groupby('piece')['score'].median().round(3).to_dict()}); plain model with the same "
                           f"blocks: {np.nanmedian(base['score']):.3f}; after zeroing the shallow block and "
                           f"fine-tuning on both pieces, its recovery takes {np.nanmedian(ratio):.2f}x the other's "
                           "steps (median over runs)")


@register_reproduction("gradient_routing")
def gradient_routing() -> Reproduction:
    return Reproduction(
        "gradient_routing", claim="Ablating a routed block removes its own piece and spares the others",
        source="Cloud et al. 2024, arXiv 2410.04332, Sec. 4", band=(0.8, 1.0), unit="own share of ablation damage",
        why="0.5 is no localization (a plain model); the paper's ablations remove the routed capability almost "
            "alone, so most of the damage must land on the own piece", run=_run)
