"""The XLA:CPU ceiling for the engine's speed benchmark: the same training written by hand.

64 seeds of MLP 1-64-64-1, batch 256, Adam, sin(3x) targets, a ``lax.scan`` over steps,
``vmap`` over seeds, seeds sharded over one host device per core: nothing else (no
evaluations, no divergence guard, no method/task indirection). With and without fresh
data per step, and with the layers written two ways: plain ``x @ w + b`` with
``jax.nn.relu``, and the form the engine's models use: ``testbed.models.dense`` (the weight
and bias gradients as one product that XLA:CPU runs on its fast path) with
``testbed.models.activations.relu`` (a derivative without a compare-and-select). Compare its model-steps/s with
``train_speed.py``'s testbed.train line, run back to back: the gap is what the
engine's generality costs; the ceiling's fraction of the matmul peak is what XLA:CPU
gives this model at all.

    python benchmarks/perf/xla_ceiling.py [--seeds 64] [--steps 2000]
"""

from __future__ import annotations

import argparse
import time

FLOP_PER_STEP = 6.49e6  # fwd + bwd of 1-64-64-1 at batch 256 (as in train_speed.py)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=64)
    p.add_argument("--steps", type=int, default=2000)
    args = p.parse_args()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import testbed  # noqa: F401  (first: one host device per core, as the engine runs)

    batch, steps, tx = 256, args.steps, optax.adam(1e-3)

    def init(k):
        k1, k2, k3 = jax.random.split(k, 3)
        return {"w1": jax.random.normal(k1, (1, 64)), "b1": jnp.zeros(64),
                "w2": jax.random.normal(k2, (64, 64)) / 8, "b2": jnp.zeros(64),
                "w3": jax.random.normal(k3, (64, 1)) / 8, "b3": jnp.zeros(1)}

    from testbed.models.activations import relu
    from testbed.models.dense import dense

    def f(p, x, fast: bool):
        act = relu if fast else jax.nn.relu
        h = act(x @ p["w1"] + p["b1"])
        h = act(dense(h, p["w2"], p["b2"]) if fast else h @ p["w2"] + p["b2"])
        return (h @ p["w3"] + p["b3"])[:, 0]

    def run(key, fresh: bool, fast: bool):
        p = init(key)
        x0 = jax.random.uniform(key, (batch, 1), minval=-1, maxval=1)

        def step(c, t):
            p, s = c
            x = jax.random.uniform(jax.random.fold_in(key, t), (batch, 1), minval=-1, maxval=1) if fresh else x0
            loss, g = jax.value_and_grad(lambda p: jnp.mean((f(p, x, fast) - jnp.sin(3 * x[:, 0])) ** 2))(p)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), loss

        _, losses = jax.lax.scan(step, (p, tx.init(p)), jnp.arange(steps))
        return losses[-1]

    mesh = Mesh(np.array(jax.devices()), ("runs",))
    by_run = NamedSharding(mesh, P("runs"))
    keys = jax.device_put(jax.random.split(jax.random.key(0), args.seeds), by_run)
    print(f"{len(jax.devices())} host devices, {args.seeds} seeds x {steps} steps")
    for fast in (False, True):
        for fresh in (True, False):
            fn = jax.jit(jax.vmap(lambda k, fresh=fresh, fast=fast: run(k, fresh, fast)), out_shardings=by_run)
            fn(keys).block_until_ready()  # compile
            t0 = time.perf_counter()
            fn(keys).block_until_ready()
            rate = args.seeds * steps / (time.perf_counter() - t0)
            print(f"hand-written loop, {'testbed.models.dense + relu' if fast else 'x @ w + b, jax.nn.relu'}, "
                  f"{'fresh data' if fresh else 'fixed data'}: {rate:,.0f} model-steps/s, "
                  f"{rate * FLOP_PER_STEP / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
