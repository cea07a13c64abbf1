"""The memory estimate of a training call (`testbed.training.memory`): close to what XLA
itself plans for the compiled program, for every registered model; a call that would not fit
is refused before anything compiles, naming the number and the knob."""

import jax
import pytest

from testbed.models import list_models
from testbed.training import engine
from testbed.training.memory import LIMIT_ENV, MemoryLimitError, estimate


def plan(model="mlp", task="sine_line", **kw):
    return engine._plan(task, "mse", model, None, **{**engine._train_defaults(), **kw})


@pytest.mark.parametrize("model", list_models())
def test_estimate_is_near_what_xla_plans(model, monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "off")
    p = plan(model, seeds=32, evals=10, eval_size=1024, probe_points=256)
    est = estimate(p, len(engine._metric_names(p.task, p.method)))
    prog, _ = engine._program(p.st, len(p.keys), p.keys, p.hp, p.p0, p.data, p.by_run, p.replicated)
    ma = prog.chunk.memory_analysis()
    if ma is None:
        pytest.skip("this backend gives no memory analysis")
    xla = len(p.devices) * (ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes
                            - ma.alias_size_in_bytes)
    assert 0.7 <= est.device_bytes / xla <= 2.5, (est.device, xla)


def test_a_call_that_would_not_fit_is_refused_before_compiling(monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "0.05")  # 51 MiB
    before = engine.COMPILES["count"]
    with pytest.raises(MemoryLimitError, match=r"needs about [\d.]+ [GM]iB of memory, but 51.2 MiB is available.*"
                                               r"largest: probe predictions .*turn down probe_points"):
        plan(seeds=512, evals=200, probe_points=2048, eval_size=64)
    with pytest.raises(MemoryLimitError, match=r"largest: activations .*turn down eval_size"):
        plan(seeds=256, evals=2, probe_points=8, eval_size=16384)
    assert engine.COMPILES["count"] == before
    plan(seeds=4, evals=5, probe_points=16, eval_size=64)  # a small call passes


def test_the_limit_setting_is_checked(monkeypatch):
    monkeypatch.setenv(LIMIT_ENV, "lots")
    with pytest.raises(Exception, match=f"{LIMIT_ENV}: 'lots' is not a number of GiB"):
        plan(seeds=2, evals=2, probe_points=8, eval_size=16)
    monkeypatch.setenv(LIMIT_ENV, "off")
    plan(seeds=512, evals=200, probe_points=2048, eval_size=64)  # no check


def test_estimate_memory_is_public_and_needs_no_compile():
    import testbed

    compiles = []  # every XLA compile in this process (the event JAX times each one with)
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, secs, **kw: compiles.append(event) if event == "/jax/core/compile/backend_compile_duration"
        else None)
    testbed.estimate_memory("sine_line", seeds=64, probe_points=512, eval_size=78)  # eager helpers compile once
    before, n = engine.COMPILES["count"], len(compiles)
    est = testbed.estimate_memory("sine_line", seeds=64, probe_points=512, eval_size=77)
    assert est.runs == 64 and est.device_bytes > 0 and est.host_bytes > 0
    assert dict(est.largest(7)).keys() >= {"activations", "probe predictions"}
    # neither the training programs nor the evaluation sets' program (a suite checks every
    # task's cells before the first one trains: 0.5-2.5 s each would be paid up front)
    assert engine.COMPILES["count"] == before and len(compiles) == n
    plan, _ = engine._unchecked_plan("sine_line", "mse", None, None, {"seeds": 64, "probe_points": 512,
                                                                       "eval_size": 77})
    real = engine._plan("sine_line", "mse", None, None, seeds=64, probe_points=512, eval_size=77, **{
        k: v for k, v in engine._train_defaults().items() if k not in ("seeds", "probe_points", "eval_size")})
    assert jax.tree.map(lambda a: (a.shape, a.dtype), plan.data) == jax.tree.map(lambda a: (a.shape, a.dtype),
                                                                                    real.data)
    assert testbed.estimate_memory("sine_line", seeds=64, probe_points=512, eval_size=77) == est


@pytest.mark.parametrize("task", __import__("testbed").list_tasks())
def test_eval_shapes_are_those_of_the_evaluation_sets(task):
    """The memory check's shapes (one point traced, the rows counted) are those of the
    evaluation sets and probes the engine draws (their sampler traced whole)."""
    from testbed.tasks import make_task

    t = make_task(task)
    batch, probe, _ = jax.eval_shape(lambda: engine._sample_eval(t, 77, 50))
    traced = engine.EvalData(batch, jax.ShapeDtypeStruct((batch.x.shape[0], len(t.splits) * engine._n_groups(t)),
                                                         "float32"), probe)
    assert (jax.tree.map(lambda a: (a.shape, a.dtype), engine._eval_shapes(t, 77, 50))
            == jax.tree.map(lambda a: (a.shape, a.dtype), traced))
