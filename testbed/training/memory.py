"""What a training call will hold in memory, estimated before anything compiles.

A call that does not fit is refused with the number and the knob to turn, instead of being
killed by the kernel halfway through a suite. The estimate adds, for every run of the call:
the parameters and optimizer state (their exact shapes, from `jax.eval_shape`), the
evaluation buffers (metrics, probe predictions, the method's profile, snapshots), the
per-update traces, the activations of a training batch and of the evaluation and probe sets,
and on the host the tidy tables built from them (bytes per row measured: 64 for the history,
56 for the per-update loss). It is an estimate (XLA may fuse or keep more), meant to catch
calls that are off by a factor, not to fill memory to the last byte.

``TESTBED_MEMORY_LIMIT`` (GiB) sets the memory a call may use (default: what the machine has
available now, the accelerator's own memory for its part); ``off`` or 0 turns the check off.
The default is the smaller of ``MemAvailable`` and the room left under this process's cgroup
(v2) limit, which is what a Slurm job or a container may use.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from testbed.core.errors import ConfigError

LIMIT_ENV = "TESTBED_MEMORY_LIMIT"
HISTORY_ROW_BYTES = 64  # one row of the tidy history (measured: pandas, categorical columns)
UPDATE_ROW_BYTES = 56  # one row of the per-update loss table
FLOAT = 4
HEADROOM = 0.9  # of what is available: the interpreter, JAX and the caller need some too


class MemoryLimitError(ConfigError, MemoryError):
    """A training call would not fit in memory (says how much it needs and what to turn down)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training call needs, by part; ``device`` parts live on the accelerator (on a
    CPU, the same memory as the host's)."""

    runs: int
    device: dict[str, int]
    host: dict[str, int]

    @property
    def device_bytes(self) -> int:
        return sum(self.device.values())

    @property
    def host_bytes(self) -> int:
        return sum(self.host.values())

    def largest(self, n: int = 3) -> list[tuple[str, int]]:
        both: dict[str, int] = {}
        for parts in (self.device, self.host):
            for k, v in parts.items():
                both[k] = both.get(k, 0) + v
        return sorted(both.items(), key=lambda kv: -kv[1])[:n]


KNOBS = {  # the part of the estimate -> what to turn down
    "probe predictions": "probe_points (train.probe_points) or evals",
    "history table": "evals, or the number of seeds per call",
    "per-update loss table": "steps, or the number of seeds per call",
    "per-update traces": "steps, or the number of seeds per call",
    "snapshots": "evals (snapshots are kept at every evaluation; only analyses that need them ask for them)",
    "activations": "eval_size or batch_size, or the number of seeds per call",
    "evaluation data": "eval_size",
    "parameters and optimizer state": "the model's size, or the number of seeds per call",
    "metrics": "evals",
}


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"


def estimate(plan, n_metrics: int) -> MemoryEstimate:
    """The estimate for a resolved training call (`testbed.training.engine._plan`) recording
    ``n_metrics`` metrics; `testbed.estimate_memory` takes `testbed.train`'s arguments."""

    st, task, method, data = plan.st, plan.task, plan.method, plan.data
    runs = len(plan.keys)  # padded to a multiple of the devices
    in_dim, out_dim = task.in_dim + method.extras.extra_inputs, method.head_dim(task)
    param_bytes, state, widths = _model_state(st.model, in_dim, out_dim, st.optimizer, st.steps,
                                              (method.name, method.hparams), method.tx)
    n_eval = len(st.eval_steps)
    n_groups = int(data.group.shape[1])
    n_eval_x, n_probe = int(data.batch.x.shape[0]), int(data.probe.x.shape[0])
    # predictions live in the target's space: class scores or distributions over out_dim
    # values, else one value per target entry (tracing method.predict for it costs ~0.1-0.3 s)
    pred_dim = task.out_dim if task.target in ("class", "distribution") else max(1, math.prod(data.probe.y.shape[1:]))
    widths = list(widths) or [out_dim]
    prof = method.extras.profile
    n_prof = len(prof.values(st.steps)) * len(prof.names) if prof is not None else 0
    n_traces = 2  # the loss and (most methods) one more value per update; the names are known only once traced

    metrics = runs * n_eval * n_groups * (n_metrics + n_prof) * FLOAT
    preds = runs * n_eval * n_probe * pred_dim * FLOAT
    snaps = runs * n_eval * param_bytes if st.snapshots else 0
    traces = runs * st.steps * n_traces * FLOAT
    device = {
        "parameters and optimizer state": runs * state,
        "metrics": metrics,
        "probe predictions": preds,
        "snapshots": snaps,
        "per-update traces": runs * st.chunk * n_traces * FLOAT,
        # training keeps every layer's activations for the backward pass (and their gradients);
        # evaluation, of the eval sets and probes at once, about twice the widest layer's
        # (compared with XLA's own memory analysis of the compiled programs in the tests)
        "activations": runs * max(3 * st.batch_size * sum(widths), 2 * (n_eval_x + n_probe) * max(widths)) * FLOAT,
        "evaluation data": len(plan.devices) * (nbytes(data.batch) + nbytes(data.group) + nbytes(data.probe)),
    }
    host = {
        "parameters and optimizer state": runs * param_bytes,
        "metrics": metrics,
        "probe predictions": preds,
        "snapshots": snaps,
        "per-update traces": traces,
        "history table": runs * n_eval * n_groups * n_metrics * HISTORY_ROW_BYTES,
        "per-update loss table": runs * st.steps * UPDATE_ROW_BYTES,
    }
    return MemoryEstimate(runs, device, host)


def nbytes(tree) -> int:
    import jax

    return sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree) if hasattr(leaf, "shape"))


_STATE: dict = {}  # (model, dims, optimizer structure, steps, method) -> (parameter bytes, state bytes, widths)


def _model_state(model, in_dim: int, out_dim: int, optimizer, steps: int, method_key, tx) -> tuple:
    """Bytes of one run's parameters, and of parameters plus optimizer state, and the widths of
    its layers (from `jax.eval_shape`: nothing is allocated); cached, as a suite's cells share
    a few models."""
    key = (model, in_dim, out_dim, optimizer, steps, method_key)
    try:
        hit = _STATE.get(key)
    except TypeError:  # something unhashable in the key: no cache
        key, hit = None, None
    if hit is not None:
        return hit
    import jax
    from flax import nnx

    params = nnx.state(nnx.eval_shape(lambda: model.build(in_dim, out_dim, rngs=nnx.Rngs(0))))
    opt = jax.eval_shape(lambda p: optimizer.build(1e-3, 0.0, steps, extra=tx).init(p), params)
    widths = tuple(leaf.shape[-1] for leaf in jax.tree.leaves(params) if getattr(leaf, "ndim", 0) >= 2)
    out = (nbytes(params), nbytes(params) + nbytes(opt), widths)
    if key is not None:
        _STATE[key] = out
    return out


def set_limit() -> float | None:
    """``TESTBED_MEMORY_LIMIT`` in GiB: None when unset, 0.0 when the check is off (``off`` or 0)."""
    want = os.environ.get(LIMIT_ENV, "").strip().lower()
    if not want:
        return None
    if want in ("off", "none", "no"):
        return 0.0
    try:
        gb = float(want)
    except ValueError:
        raise ConfigError(f"{LIMIT_ENV}: {want!r} is not a number of GiB (or 'off')") from None
    return gb if gb > 0 else 0.0


def available() -> tuple[int | None, int | None]:
    """(accelerator bytes or None on a CPU, host bytes or None when unknown) this call may use."""
    gb = set_limit()
    if gb is not None:
        limit = int(gb * 2**30) or None  # 0: off
        return limit, limit
    import jax

    device = None
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        try:
            device = int((dev.memory_stats() or {}).get("bytes_limit") or 0) or None
        except Exception:  # noqa: BLE001  (a backend without memory stats)
            device = None
    host = None
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        host = int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        try:
            host = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            host = None
    cgroup = _cgroup_room()
    if cgroup is not None:  # a Slurm job's or a container's limit, which MemAvailable does not see
        host = cgroup if host is None else min(host, cgroup)
    return device, host


def _cgroup_room() -> int | None:
    """Bytes this process's cgroup (v2) may still take, or None without a limit."""
    try:
        rel = next(ln.split("::", 1)[1].strip() for ln in open("/proc/self/cgroup") if ln.startswith("0::"))
        base = os.path.join("/sys/fs/cgroup", rel.lstrip("/"))
        limit = open(os.path.join(base, "memory.max")).read().strip()
        if limit == "max":
            return None
        used = int(open(os.path.join(base, "memory.current")).read().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError, StopIteration):
        return None


def check(plan, n_metrics: int, *, evals: int, probe_points: int) -> MemoryEstimate:
    """Refuse a call that would not fit (`MemoryLimitError`), naming the parts and their knobs."""
    est = estimate(plan, n_metrics)
    device_limit, host_limit = available()
    on_cpu = plan.devices[0].platform == "cpu"
    need = est.device_bytes + est.host_bytes if on_cpu else est.host_bytes
    problems = []
    if host_limit is not None and need > HEADROOM * host_limit:
        problems.append(f"about {gib(need)} of memory, but {gib(host_limit)} is available")
    if not on_cpu and device_limit is not None and est.device_bytes > HEADROOM * device_limit:
        problems.append(f"about {gib(est.device_bytes)} of accelerator memory, but it has {gib(device_limit)}")
    if problems:
        parts = "; ".join(f"{name} {gib(b)}" for name, b in est.largest())
        top = est.largest(1)[0][0]
        raise MemoryLimitError(
            f"train: {plan.task.name}/{plan.method.name} with {len(plan.runs)} runs needs {' and '.join(problems)} "
            f"(largest: {parts}); turn down {KNOBS.get(top, 'the number of seeds per call')} "
            f"(now: seeds x grid {len(plan.runs)}, evals {evals}, probe_points {probe_points}), or set "
            f"{LIMIT_ENV}=<GiB> if the estimate is wrong for this machine")
    return est
