"""Capacity of features in superposition (Elhage et al. 2022, "Toy Models of Superposition";
Scherlis et al. 2022, "Polysemanticity and Capacity in Neural Networks", arXiv 2210.01892).

The task: n sparse features, feature i present with probability p (then uniform on [0, 1],
else 0), importance ``decay ** i``. The toy model ``x' = ReLU(W^T W x + b)`` with m hidden
dimensions (W: [m, n]) is trained on the importance-weighted squared error
``sum_i I_i (x_i - x'_i)^2``. The capacity of feature i is

    C_i = (W_i . W_i)^2 / sum_j (W_i . W_j)^2        (W_i: column i; 0 when W_i = 0)

so 0 <= C_i <= 1 (1: a dimension of its own; 1/2: shared equally with one other feature) and
``sum_i C_i <= m``. Dense features (p near 1): about m features get C = 1, the rest 0. Sparse
features: many more than m get a share, the sum staying near m (superposition).

`train_superposition` trains every (sparsity, seed) in one compiled program.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd

from testbed.core.errors import ConfigError, is_count

SPARSITIES = (0.0, 0.7, 0.9, 0.97, 0.99, 0.997)  # 1 - p: Elhage et al.'s sweep
REPRESENTED = 0.5  # a feature is represented when its column's norm exceeds this


def feature_capacity(w: np.ndarray | jax.Array) -> np.ndarray:
    """C_i per feature of W [..., m, n] (columns are features), [..., n]."""
    w = jnp.asarray(w, jnp.float32)
    g = jnp.einsum("...mi,...mj->...ij", w, w)
    diag = jnp.diagonal(g, axis1=-2, axis2=-1)
    denom = jnp.sum(g ** 2, axis=-1)
    return np.asarray(jnp.where(denom > 0, diag ** 2 / jnp.where(denom > 0, denom, 1.0), 0.0))


def train_superposition(n: int = 20, m: int = 5, *, sparsities: Sequence[float] = SPARSITIES, decay: float = 0.9,
                        steps: int = 4000, batch_size: int = 1024, lr: float = 1e-3, seeds: int | Sequence[int] = 2
                        ) -> tuple[pd.DataFrame, np.ndarray]:
    """Train the toy model for every sparsity and seed; returns (table, W [S, seeds, m, n]).

    The table has one row per sparsity, seed and feature: ``sparsity, p, seed, feature,
    importance, norm, capacity, represented``.
    """
    for name, v in (("n", n), ("m", m), ("steps", steps), ("batch_size", batch_size)):
        if not is_count(v):
            raise ConfigError(f"superposition: {name}={v!r} must be a positive integer")
    if m > n:
        raise ConfigError(f"superposition: m={m} hidden dimensions exceed n={n} features; accepted: m <= n")
    sp = [float(s) for s in sparsities]
    if not sp or not all(0.0 <= s < 1.0 for s in sp):
        raise ConfigError(f"superposition: sparsities {sp!r} must be in [0, 1)")
    if not 0.0 < decay <= 1.0:
        raise ConfigError(f"superposition: decay={decay!r} must be in (0, 1]")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    importance = decay ** jnp.arange(n, dtype=jnp.float32)
    tx = optax.adam(lr)

    def run(key, sparsity):
        k_w, k_data = jax.random.split(key)
        params = {"w": jax.random.normal(k_w, (m, n)) * jnp.sqrt(2.0 / (m + n)), "b": jnp.zeros(n)}

        def loss_fn(p, x):
            h = x @ p["w"].T  # [B, m]
            out = jax.nn.relu(h @ p["w"] + p["b"][None, :])
            return jnp.mean(jnp.sum(importance[None, :] * (x - out) ** 2, axis=-1))

        def step(c, t):
            p, s = c
            kx, kp = jax.random.split(jax.random.fold_in(k_data, t))
            present = jax.random.uniform(kp, (batch_size, n)) >= sparsity
            x = jax.random.uniform(kx, (batch_size, n)) * present
            loss, g = jax.value_and_grad(loss_fn)(p, x)
            upd, s = tx.update(g, s, p)
            return (optax.apply_updates(p, upd), s), loss

        (p, _), losses = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
        return p["w"], losses

    keys = jnp.stack([jax.random.key(s) for s in seed_list])
    fn = jax.jit(jax.vmap(jax.vmap(run, in_axes=(0, None)), in_axes=(None, 0)))
    w, losses = fn(keys, jnp.asarray(sp, jnp.float32))
    w = np.asarray(w)  # [S, seeds, m, n]
    cap = feature_capacity(w)
    norms = np.linalg.norm(w, axis=-2)
    rows = []
    for i, s in enumerate(sp):
        for j, seed in enumerate(seed_list):
            rows += [{"sparsity": s, "p": 1.0 - s, "seed": seed, "feature": f, "importance": float(importance[f]),
                      "norm": float(norms[i, j, f]), "capacity": float(cap[i, j, f]),
                      "represented": bool(norms[i, j, f] > REPRESENTED), "final_loss": float(losses[i, j, -1])}
                     for f in range(n)]
    return pd.DataFrame(rows), w


def superposition_figure(table: pd.DataFrame, m: int, title: str = "Capacity of features in superposition"):
    """Left: each feature's capacity against its index (importance order), one line per
    sparsity; right: the total capacity and the features represented against 1 / p."""
    from matplotlib.lines import Line2D

    from testbed.analyses.figkit import suite_figure
    from testbed.core.style import style

    sp = sorted(set(table["sparsity"]))
    n = int(table["feature"].max()) + 1
    per = table.groupby(["sparsity", "feature"])["capacity"].mean().reset_index()
    tot = table.groupby(["sparsity", "seed"]).agg(total=("capacity", "sum"), shown=("represented", "sum")).reset_index()
    tot = tot.groupby("sparsity")[["total", "shown"]].mean()
    meta = [f"n = {n} features, m = {m} hidden dimensions, importance decaying with the index; seeds: "
            f"{table['seed'].nunique()}",
            "capacity C_i = (W_i . W_i)^2 / sum_j (W_i . W_j)^2 (1: a dimension of its own); the sum is at most m"]
    import matplotlib as mpl
    cmap = mpl.colormaps["viridis"]
    with style():
        fig = suite_figure(title, meta, 3.0)
        ax, bx = fig.subplots(1, 2)
        for k, s in enumerate(sp):
            g = per[per["sparsity"] == s]
            ax.plot(g["feature"], g["capacity"], color=cmap(k / max(1, len(sp) - 1)), marker="o", ms=3, lw=1.4,
                    label=f"1 - p = {s:g}", gid=f"capacity:{s:g}")
        ax.set_xlabel("feature (importance order)")
        ax.set_ylabel("capacity C_i")
        ax.set_ylim(-0.03, 1.05)
        ax.legend(frameon=False, fontsize=7.5)
        x = 1.0 / (1.0 - np.asarray(tot.index))
        bx.plot(x, tot["total"], color="#4e79a7", marker="o", lw=1.8, gid="total")
        bx.plot(x, tot["shown"], color="#e15759", marker="s", lw=1.5, ls=(0, (4, 2)), gid="represented")
        bx.axhline(m, color="#777777", ls=":", lw=1.0)
        bx.set_xscale("log")
        bx.set_xlabel("1 / p (sparser to the right)")
        bx.set_ylabel("features")
        bx.legend(handles=[Line2D([], [], color="#4e79a7", marker="o", label="sum of capacities"),
                           Line2D([], [], color="#e15759", marker="s", ls=(0, (4, 2)),
                                  label=f"represented (|W_i| > {REPRESENTED})"),
                           Line2D([], [], color="#777777", ls=":", label=f"m = {m}")], frameon=False, fontsize=7.5)
    return fig
