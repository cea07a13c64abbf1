"""The superposition phase change (Elhage et al. 2022, "Toy Models of Superposition", Fig. 2-3;
capacity as in Scherlis et al. 2022, arXiv 2210.01892): in the toy model ``ReLU(W^T W x + b)``
with m hidden dimensions and n > m features of decaying importance, dense features get m
dimensions of their own and the rest nothing; sparse features are all represented, in
superposition, while the total capacity stays at most m.

Here: n = 20, m = 5, importance 0.9^i, sparsity 0 and 0.99 (`testbed.analyses.capacity.
superposition`). Measured: features represented (column norm > 0.5) when sparse, over
those represented when dense. Band [3, 4]: dense gives m = 5; sparse at 1 - p = 0.99 gives
most of the 20 (Elhage et al.'s Fig. 3 shows nearly all), so 15-20 over 5.
"""

from __future__ import annotations

from testbed.reproduce.registry import Measured, Reproduction, register_reproduction


def _run(quick: bool) -> Measured:
    from testbed.analyses.capacity.superposition import superposition_figure, train_superposition

    table, _ = train_superposition(20, 5, sparsities=(0.0, 0.9, 0.99), steps=1500 if quick else 4000,
                                   seeds=1 if quick else 2)
    shown = table.groupby(["sparsity", "seed"])["represented"].sum().groupby("sparsity").mean()
    total = table.groupby(["sparsity", "seed"])["capacity"].sum().max()
    ratio = float(shown.loc[0.99] / max(shown.loc[0.0], 1))
    return Measured(ratio, f"represented: {shown.loc[0.0]:.1f} dense, {shown.loc[0.99]:.1f} at 1 - p = 0.99; the "
                           f"largest total capacity {total:.3f} (at most m = 5)", superposition_figure(table, 5))


@register_reproduction("superposition")
def superposition() -> Reproduction:
    return Reproduction(
        "superposition", claim="Sparse features go into superposition; dense ones get m dimensions",
        source="Elhage et al. 2022, Toy Models of Superposition, Fig. 2-3", band=(3.0, 4.0),
        unit="features represented, sparse / dense",
        why="dense: m = 5 features; at 1 - p = 0.99 most of the 20 are represented (15-20)", run=_run)
