"""Grokking on modular addition (Power et al. 2022, "Grokking: Generalization Beyond Overfitting
on Small Algorithmic Datasets", arXiv 2201.02177, Fig. 1; Gromov 2023, "Grokking modular
arithmetic", arXiv 2301.02679): an MLP on ``(a + b) mod p`` trained with AdamW and weight decay
memorizes the training pairs first and generalizes to held-out pairs much later; without weight
decay it does not generalize in the same budget. Gromov's analytic solution (cosine weights, a
quadratic activation) loaded as parameters is exact, which checks the task and the evaluation.

Here: the ``modular_addition`` task (p = 23, one-hot pairs, 30% of pairs held out), a one-layer
ReLU MLP of width 256 with cross-entropy, AdamW (lr 3e-3, batch 256) with weight decay 1.0
against 0, 30,000 steps, 2 seeds. Measured: the held-out classification error without weight
decay minus with it, at the end. Band [0.3, 1]: both memorize (train error 0 by step 2,000);
with weight decay the held-out error has been falling since (0.97 -> 0.54 measured over
30,000 steps: generalization long after memorization), without it it stays at 1.0. The full
grokking to zero held-out error takes Power et al. about 10^5 steps or more, beyond this
budget. Gromov's solution (width 2,000, square activation) must reach 100% accuracy on every
pair; it is checked first, and a failure there fails the entry.
"""

from __future__ import annotations

import numpy as np

from testbed.reproduce.registry import Measured, Reproduction, register_reproduction

P = 23


def gromov_params(width: int = 2000, p: int = P, seed: int = 0) -> dict:
    """Gromov's analytic weights: unit k has frequency s_k and phases phi_k, psi_k;
    ``W1[a, k] = cos(2 pi s_k a / p + phi_k)`` (and psi_k for b), ``W2[k, q] = cos(2 pi s_k q / p + phi_k + psi_k)``."""
    rng = np.random.default_rng(seed)
    s = rng.integers(1, (p - 1) // 2 + 1, width)
    phi, psi = rng.uniform(0, 2 * np.pi, width), rng.uniform(0, 2 * np.pi, width)
    a = np.arange(p)[:, None]
    w1 = np.concatenate([np.cos(2 * np.pi * s * a / p + phi), np.cos(2 * np.pi * s * a / p + psi)])  # [2p, K]
    w2 = np.cos(2 * np.pi * s * a / p + phi + psi).T  # [K, p]
    return {"w1": w1.astype(np.float32), "w2": w2.astype(np.float32)}


def gromov_accuracy(task) -> float:
    """Accuracy of Gromov's network, built as a testbed MLP (square activation), on every pair."""
    import jax
    from flax import nnx

    from testbed.reproduce import kit

    g = gromov_params()
    model = kit.make_model("mlp", width=g["w1"].shape[1], depth=1, activation="square").build(
        task.in_dim, P, rngs=nnx.Rngs(0))
    model.layers[0].kernel[...] = g["w1"]
    model.layers[0].bias[...] = np.zeros(g["w1"].shape[1], np.float32)
    model.head.kernel[...] = g["w2"]
    model.head.bias[...] = np.zeros(P, np.float32)
    raw = task.domain.all_points()
    x = task.domain.encode(raw)
    pred = np.asarray(jax.numpy.argmax(model(x), axis=-1))
    return float(np.mean(pred == np.asarray(task.target_of_raw(raw))))


def _run(quick: bool) -> Measured:
    from testbed.reproduce import kit

    task = kit.make_task("modular_addition")
    exact = gromov_accuracy(task)
    steps = 3000 if quick else 30000
    err = {}
    for wd in (1.0, 0.0):
        r = kit.train(task, "ce", kit.make_model("mlp", width=256, depth=1),
                          kit.make_optimizer("adamw", lr=3e-3, weight_decay=wd), steps=steps, batch_size=256,
                          seeds=2, evals=16, quiet=True, eval_size=512, probe_points=16)
        h = r.history
        h = h[(h["piece"] == "all") & (h["metric"] == "error")]
        err[wd] = h.groupby(["split", "step"], observed=True)["value"].mean().unstack(0)
    gap = float(err[0.0]["held_out_pairs"].iloc[-1] - err[1.0]["held_out_pairs"].iloc[-1])
    memorized = int(err[1.0].index[np.argmax(err[1.0]["train"].to_numpy() == 0.0)])
    value = gap if exact == 1.0 else float("nan")
    return Measured(value, f"Gromov's analytic network: {exact:.1%} of all {P * P} pairs right. Weight decay 1.0: "
                           f"train error 0 from step {memorized}, held-out error "
                           f"{' -> '.join(f'{v:.2f}' for v in err[1.0]['held_out_pairs'].iloc[::3])}; without: "
                           f"held-out error {err[0.0]['held_out_pairs'].iloc[-1]:.2f} at the end", _figure(err))


def _figure(err):
    from testbed.analyses.figkit import suite_figure
    from testbed.core.style import style

    with style():
        fig = suite_figure("Grokking: memorization first, generalization much later, only with weight decay", [
            f"(a + b) mod {P}, 70% of pairs trained; one-layer ReLU MLP of width 256, AdamW; mean over 2 seeds"], 2.6)
        ax = fig.subplots(1, 1)
        for wd, color in ((1.0, "#4e79a7"), (0.0, "#e15759")):
            e = err[wd]
            ax.plot(e.index, e["train"], color=color, ls=":", lw=1.4, label=f"train, weight decay {wd:g}")
            ax.plot(e.index, e["held_out_pairs"], color=color, lw=1.8, label=f"held-out pairs, weight decay {wd:g}")
        ax.set_xlabel("step")
        ax.set_ylabel("classification error")
        ax.legend(frameon=False, fontsize=7.5)
    return fig


@register_reproduction("grokking")
def grokking() -> Reproduction:
    return Reproduction(
        "grokking", claim="With weight decay a memorizing MLP generalizes much later; without, it does not",
        source="Power et al. 2022, arXiv 2201.02177, Fig. 1; Gromov 2023, arXiv 2301.02679", band=(0.3, 1.0),
        unit="held-out error without minus with weight decay",
        why="both memorize by step 2,000; in 30,000 steps weight decay brings held-out error from 0.97 to about "
            "0.5 while without it stays 1.0; the analytic network must be exact", run=_run, quick_passes=False)
