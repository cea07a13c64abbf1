"""Xu et al. 2021 ("How Neural Networks Extrapolate: From Feedforward to Graph Neural Networks",
arXiv 2009.11848, Theorem 1 and Fig. 3): a ReLU MLP trained on a non-linear target inside a
bounded region is linear along rays far outside it.

Here: the ``radial`` task (a bowl inside the unit circle, rings outside; trained inside radius
1.5), a ReLU MLP (width 64, depth 2, Adam), and 32 random rays from the origin; along each ray
the model is read at radii 5..10 (more than 3x the training radius) and a straight line is
fitted to it. Measured: the median R^2 of those fits over rays and seeds. Band [0.9, 1]: Xu et
al. count R^2 < 0.9 as a failure to be linear; their theorem says every ray becomes exactly
linear in the limit (a ReLU network is piecewise linear with finitely many pieces), so far
enough out the median should be close to 1.
"""

from __future__ import annotations

import numpy as np

from testbed.reproduce.registry import Measured, Reproduction, register_reproduction

RAYS, R_LOW, R_HIGH, POINTS = 32, 5.0, 10.0, 64


def ray_r2(predict, dim: int, *, rays: int = RAYS, key: int = 0) -> np.ndarray:
    """R^2 of a straight-line fit to ``predict`` along each of ``rays`` random rays, radii 5..10."""
    rng = np.random.default_rng(key)
    u = rng.normal(size=(rays, dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    t = np.linspace(R_LOW, R_HIGH, POINTS)
    x = (t[None, :, None] * u[:, None, :]).reshape(-1, dim).astype(np.float32)
    y = np.asarray(predict(x), np.float64).reshape(rays, POINTS)
    design = np.stack([np.ones_like(t), t], 1)
    coef, *_ = np.linalg.lstsq(design, y.T, rcond=None)
    resid = y - (design @ coef).T
    ss = ((y - y.mean(1, keepdims=True)) ** 2).sum(1)
    return 1.0 - (resid ** 2).sum(1) / np.maximum(ss, 1e-30)


def _run(quick: bool) -> Measured:
    from testbed.reproduce import kit

    task = kit.make_task("radial")
    r = kit.train(task, "mse", kit.make_model("mlp", width=64, depth=2),
                      kit.make_optimizer("adam", lr=3e-3), steps=400 if quick else 3000, seeds=2 if quick else 4,
                      evals=2, quiet=True, eval_size=256, probe_points=64)
    r2 = np.concatenate([ray_r2(lambda x, i=i: r.model(i)(x), task.in_dim, key=i) for i in range(len(r.runs))])
    med = float(np.median(r2))
    return Measured(med, f"median R^2 {med:.4f} over {len(r2)} rays; {np.mean(r2 < 0.9):.0%} below 0.9; train mse "
                         f"{_train_mse(r):.3g}", _figure(r, task))


def _train_mse(r) -> float:
    h = r.history
    f = h[(h["step"] == h["step"].max()) & (h["split"] == "train") & (h["piece"] == "all") & (h["metric"] == "mse")]
    return float(f["value"].mean())


def _figure(r, task):
    from testbed.analyses.figkit import suite_figure
    from testbed.core.style import style

    rng = np.random.default_rng(0)
    u = rng.normal(size=(6, task.in_dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    t = np.linspace(0.0, R_HIGH, 200)
    with style():
        fig = suite_figure("Xu et al. 2021: a ReLU MLP is linear along rays far outside its training region", [
            "radial task, trained inside radius 1.5; six random rays from the origin, run 0; shaded: radii 5-10 where "
            "the straight lines are fitted"], 2.6)
        ax = fig.subplots(1, 1)
        for k in range(len(u)):
            x = (t[:, None] * u[k][None]).astype(np.float32)
            ax.plot(t, np.asarray(r.model(0)(x)).ravel(), lw=1.4)
        ax.axvspan(0, 1.5, color="#dddddd", alpha=0.6, lw=0)
        ax.axvspan(R_LOW, R_HIGH, color="#4e79a7", alpha=0.08, lw=0)
        ax.set_xlabel("distance from the origin along the ray (grey: training radius)")
        ax.set_ylabel("model output")
    return fig


@register_reproduction("xu_linear_rays")
def xu_linear_rays() -> Reproduction:
    return Reproduction(
        "xu_linear_rays", claim="A ReLU MLP trained inside a region is linear along rays far outside it",
        source="Xu et al. 2021, arXiv 2009.11848, Thm. 1 / Fig. 3", band=(0.9, 1.0), unit="median R^2 along rays",
        why="Xu et al. count R^2 < 0.9 as not linear; a ReLU net has finitely many linear pieces, so far out every "
            "ray is linear", run=_run)
