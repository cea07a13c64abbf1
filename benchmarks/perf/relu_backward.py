"""ReLU's backward loop on XLA:CPU: compare-and-select against testbed.models.activations.relu.

Times, on one core, the elementwise loop a ReLU layer's backward pass runs over a
[seeds, batch, width] gradient (default [32, 256, 64], one training step of the speed
benchmark per core): ``jax.nn.relu``'s rule ``select(x > 0, g, 0)``, the same mask as
a multiply ``g * (x > 0)``, ``testbed.models.activations.relu``'s ``g * sign(relu(x))``, and
a plain multiply ``g * x`` for scale. Each runs 50 times inside one program.

    python benchmarks/perf/relu_backward.py [--shape 32 256 64]
"""

from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", type=int, nargs="+", default=[32, 256, 64])
    p.add_argument("--reps", type=int, default=50)
    args = p.parse_args()
    os.environ["TESTBED_HOST_DEVICES"] = "1"
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    import jax
    import jax.numpy as jnp

    from testbed.models.activations import relu

    k1, k2 = jax.random.split(jax.random.key(0))
    g, x = jax.random.normal(k1, args.shape), jax.random.normal(k2, args.shape)
    grad_of = {
        "jax.nn.relu (select)": jax.grad(lambda x, g: jnp.vdot(jax.nn.relu(x), g)),
        "testbed relu (sign multiply)": jax.grad(lambda x, g: jnp.vdot(relu(x), g)),
    }
    loops = {
        **{name: lambda g, x, f=f: f(x, g) for name, f in grad_of.items()},
        "g * (x > 0)": lambda g, x: g * (x > 0).astype(g.dtype),
        "g * x (a plain multiply)": lambda g, x: g * x,
    }
    print(f"ReLU backward over {args.shape} on one core, best of 5 x {args.reps} in one program:")
    for name, body in loops.items():
        f = jax.jit(lambda g, x, body=body: jax.lax.fori_loop(0, args.reps, lambda i, a: body(a, x), g))
        f(g, x).block_until_ready()
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            f(g, x).block_until_ready()
            best = min(best, (time.perf_counter() - t0) / args.reps)
        print(f"  {name:30s} {best * 1e6:7.1f} us")


if __name__ == "__main__":
    main()
