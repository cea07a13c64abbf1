"""The ``testbed`` command line: thin commands that parse, call the library, print.

Bad input (unknown names, bad values, invalid specs) prints one clear line on
stderr and exits with status 2, like a usage error.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Testbed: hand-crafted piecewise tasks, small models, fast experiments.")


def _fail(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(2)


@app.callback()
def main_options(
    tasks_dir: Annotated[list[Path] | None, typer.Option(
        "--tasks-dir", help="Extra folder of TOML task specs (repeatable; also TESTBED_TASKS).")] = None,
    plugins: Annotated[list[str] | None, typer.Option(
        "--plugins", help="Plug-in file (.py) or module registering tasks, methods, models or analyses "
        "(repeatable; also TESTBED_PLUGINS).")] = None,
    no_compile_cache: Annotated[bool, typer.Option(
        "--no-compile-cache", help="Compile every program afresh instead of loading it from the persistent "
        "cache (TESTBED_COMPILE_CACHE: its folder, or off).")] = False,
):
    """Global options."""
    if no_compile_cache:  # read when JAX first starts, which no command has done yet
        import os

        from testbed.core.platform import CACHE_ENV

        os.environ[CACHE_ENV] = "off"
    from testbed.core.plugins import load_env_plugins, load_plugins

    for d in tasks_dir or []:
        from testbed.core.catalog import add_task_dir

        try:
            add_task_dir(d)
        except Exception as e:  # noqa: BLE001  (reported, exit 2)
            _fail(str(e))
    load_env_plugins()
    load_plugins(plugins or [], where="--plugins")


@app.command("tasks")
def tasks_cmd():
    """List the tasks: name, dims, target kind, pieces, splits, description."""
    import pandas as pd

    from testbed.report.tables import markdown_table
    from testbed.tasks.registry import describe, list_tasks

    typer.echo(markdown_table(pd.DataFrame([describe(name) for name in list_tasks()])))


@app.command("show")
def show_cmd(name: Annotated[str, typer.Argument(help="Task name (see `testbed tasks`).")],
             output: Annotated[Path | None, typer.Option("-o", "--output", help="PNG or SVG path.")] = None):
    """Plot a task: its function by piece, with the train and OOD regions marked."""
    import testbed
    from testbed.report.taskplot import save_task_plot

    task = testbed.make_task(name)
    path = output or Path(f"{name}.png")
    if path.suffix.lower() not in (".png", ".svg"):
        _fail(f"--output: {str(path)!r} must end in .png or .svg")
    typer.echo(str(save_task_plot(task, path)))


@app.command("train")
def train_cmd(
    task: Annotated[str, typer.Option(help="Task name (see `testbed tasks`).")],
    method: Annotated[str, typer.Option(help="Method name: mse, ce, routing, myopic, nonmyopic.")] = "mse",
    method_arg: Annotated[list[str] | None, typer.Option(
        "--method-arg", "-m", help="Method hyperparameter KEY=VALUE (a TOML value); repeatable, "
        "e.g. -m schedule=window -m start=4 -m end=6.")] = None,
    model: Annotated[str, typer.Option(help="Model: mlp, lowrank, deep_linear, or a plug-in's.")] = "mlp",
    model_arg: Annotated[list[str] | None, typer.Option(
        "--model-arg", "-M", help="Model field KEY=VALUE (a TOML value); repeatable, e.g. -M width=128.")] = None,
    width: Annotated[int | None, typer.Option(help="Hidden width (mlp, deep_linear).")] = None,
    depth: Annotated[int | None, typer.Option(help="Hidden layers (mlp) or matrices (deep_linear).")] = None,
    rank: Annotated[int | None, typer.Option(help="Rank (lowrank).")] = None,
    activation: Annotated[str | None, typer.Option(help="relu, tanh, gelu (mlp).")] = None,
    optimizer: Annotated[str, typer.Option(help="adam, adamw, sgd.")] = "adam",
    lr: Annotated[list[float] | None, typer.Option(help="Learning rate; repeat to sweep.")] = None,
    weight_decay: Annotated[list[float] | None, typer.Option(help="Weight decay; repeat to sweep.")] = None,
    init_scale: Annotated[list[float] | None, typer.Option(help="Init scale; repeat to sweep.")] = None,
    schedule: Annotated[str, typer.Option(help="constant, cosine, warmup, warmup_cosine.")] = "constant",
    warmup_steps: Annotated[int, typer.Option(help="Warmup steps for warmup schedules.")] = 0,
    clip: Annotated[float | None, typer.Option(help="Gradient clipping (global norm).")] = None,
    seeds: Annotated[int, typer.Option(help="Number of seeds.")] = 8,
    steps: Annotated[int, typer.Option(help="Training updates.")] = 5000,
    stage: Annotated[list[str] | None, typer.Option(
        help="Train in stages instead of --steps: STEPS[:METHOD[:SPLIT]], repeatable, e.g. --stage 2000 "
             "--stage 1000:routing:extrapolate (a stage without a method keeps the previous one's; the "
             "first's is --method).")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per update.")] = 256,
    evals: Annotated[int, typer.Option(help="Evaluation points.")] = 50,
    eval_spacing: Annotated[str, typer.Option(help="linear or log.")] = "linear",
    out: Annotated[Path, typer.Option(help="Folder for results.")] = Path("results/train"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
):
    """Train one task under one method over many seeds; print the final losses per split."""
    import testbed
    from testbed.report.tables import markdown_table
    from testbed.training.runio import save_run

    model_kwargs = {k: v for k, v in dict(width=width, depth=depth, rank=rank, activation=activation).items()
                    if v is not None}
    extra = _key_values(model_arg or [], "--model-arg")
    for k in set(extra) & set(model_kwargs):
        _fail(f"--model-arg: {k} is also given as --{k}; give it once")
    model_kwargs.update(extra)
    mth = testbed.make_method(method, **_key_values(method_arg or [], "--method-arg"))
    mdl = testbed.make_model(model, **model_kwargs)
    opt = testbed.make_optimizer(optimizer, schedule=schedule, warmup_steps=warmup_steps, clip=clip)
    if stage:
        result = testbed.train_stages(task, [_stage_arg(text, i, mth if i == 0 else None, opt, lr)
                                             for i, text in enumerate(stage)], mdl, batch_size=batch_size,
                                      seeds=seeds, weight_decay=weight_decay or None, init_scale=init_scale or None,
                                      evals=evals, eval_spacing=eval_spacing, quiet=quiet)
    else:
        result = testbed.train(task, mth, mdl, opt, steps=steps, batch_size=batch_size, seeds=seeds,
                               lr=lr or None, weight_decay=weight_decay or None, init_scale=init_scale or None,
                               evals=evals, eval_spacing=eval_spacing, quiet=quiet)
    summary = result.summary()
    typer.echo(markdown_table(summary, floatfmt=".4g"))
    diverged = int((result.runs["diverged_step"] >= 0).sum())
    if diverged:
        typer.echo(f"{diverged} of {len(result.runs)} runs diverged (see runs.parquet)")
    path = save_run(result, out)
    t = result.timing
    compiled = f"compile {t['compile_s']:.1f}s" if t.get("compiled", True) else "compiled program reused"
    typer.echo(f"{compiled}, train {t.get('run_s', t['wall_s']):.1f}s; wrote {path}")


def _stage_arg(text: str, i: int, method, optimizer, lr):
    """``--stage STEPS[:METHOD[:SPLIT]]`` -> a `testbed.Stage` (the first stage gets --method)."""
    import testbed

    parts = text.split(":")
    if not 1 <= len(parts) <= 3 or not parts[0].isdigit() or int(parts[0]) < 1:
        _fail(f"--stage: expected STEPS[:METHOD[:SPLIT]] with STEPS a positive integer, got {text!r}")
    method = parts[1] if len(parts) > 1 and parts[1] else method
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return testbed.Stage(steps=int(parts[0]), method=method, optimizer=optimizer, split=split, lr=lr or None)


def _key_values(items: list[str], flag: str) -> dict:
    """KEY=VALUE strings -> hyperparameters; values are parsed as TOML (never evaluated)."""
    import tomllib

    out = {}
    for item in items:
        key, eq, text = item.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            _fail(f"{flag}: expected KEY=VALUE with a TOML value, got {item!r}")
        text = text.strip()
        if text.isidentifier() and text not in ("true", "false", "inf", "nan"):
            out[key] = text  # a bare word is a string: -m schedule=window
            continue
        try:
            out[key] = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            _fail(f"{flag}: {key}: {text!r} is not a TOML value (number, true/false, \"string\", [list])")
    return out


@app.command("icl")
def icl_cmd(
    cls: Annotated[str, typer.Option("--class", help="Function class (see testbed.list_function_classes()).")
                   ] = "linear",
    class_arg: Annotated[list[str] | None, typer.Option(
        "--class-arg", "-c", help="Function-class parameter KEY=VALUE, e.g. -c sparsity=2; repeatable.")] = None,
    d: Annotated[int, typer.Option(help="Input dimension.")] = 5,
    points: Annotated[int, typer.Option(help="In-context examples per training prompt.")] = 20,
    noise: Annotated[float, typer.Option(help="SD of label noise in training.")] = 0.0,
    model: Annotated[str, typer.Option(help="transformer or linear_attention.")] = "transformer",
    width: Annotated[int, typer.Option(help="Transformer width.")] = 64,
    depth: Annotated[int, typer.Option(help="Transformer blocks.")] = 2,
    heads: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    steps: Annotated[int, typer.Option(help="Training updates.")] = 4000,
    batch_size: Annotated[int, typer.Option(help="Prompts per update.")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
    seeds: Annotated[int, typer.Option(help="Number of seeds.")] = 1,
    evals: Annotated[int, typer.Option(help="Evaluation points over training.")] = 3,
    curriculum_every: Annotated[int, typer.Option(
        help="Curriculum: start at d/2 dimensions and points/2 examples, add one dimension and two examples "
             "every this many updates (0: none).")] = 0,
    shift: Annotated[list[str] | None, typer.Option(help="OOD shift to evaluate on too; repeatable.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for results.")] = Path("results/icl"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")] = False,
):
    """Train a sequence model on prompts of a function class; print and plot the error against
    the number of in-context examples, beside the baselines on the same prompts."""
    import numpy as np
    import pandas as pd

    import testbed
    from testbed.analyses.icl.figures import CAPTION, PROBE_CAPTION, error_vs_n, probe_predictions
    from testbed.core.files import atomic_write_json, atomic_write_parquet
    from testbed.core.style import save
    from testbed.models.sequence import LinearAttention, Transformer
    from testbed.report.tables import markdown_table
    from testbed.training.prompt_train import Curriculum

    task = testbed.make_prompt_task(cls, d=d, points=points, noise=noise, **_key_values(class_arg or [],
                                                                                         "--class-arg"))
    if model == "transformer":
        cfg = Transformer(width=width, depth=depth, heads=heads, max_points=points + 1)
    elif model == "linear_attention":
        cfg = LinearAttention(max_points=points)
    else:
        _fail(f"--model: {model!r}; accepted: transformer, linear_attention")
    r = testbed.train_prompts(task, cfg, steps=steps, batch_size=batch_size, seeds=seeds,
                              optimizer=testbed.Optimizer(name="adam", lr=lr),
                              loss_at="last" if model == "linear_attention" else "all",
                              shifts=("none", *(shift or [])), evals=evals, quiet=quiet,
                              curriculum=Curriculum(start_d=max(1, d // 2), start_points=max(2, points // 2),
                                                    every=curriculum_every) if curriculum_every else None)
    h = r.history[r.history["step"] == steps]
    ns = sorted({max(1, d // 2), d, min(2 * d, points)})
    table = h[h["n"].isin(ns)].groupby(["shift", "n"], sort=False)["error"].mean().rename(cfg.name).reset_index()
    b = r.baselines[r.baselines["n"].isin(ns)].pivot_table(index=["shift", "n"], columns="baseline", values="error")
    table = table.merge(b.reset_index(), on=["shift", "n"], how="left")
    typer.echo(markdown_table(table, floatfmt=".3g"))
    folder = out / f"{task.name}-{cfg.name}-d{d}-k{points}"
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(folder / "history.parquet", r.history)
    atomic_write_parquet(folder / "baselines.parquet", r.baselines)
    atomic_write_parquet(folder / "probes.parquet", r.probes)
    atomic_write_json(folder / "config.json", {"config": r.config, "timing": r.timing})
    fig = error_vs_n(r.history, r.baselines, title=f"{task.name}: error against in-context examples", model=cfg.name)
    (png,) = save(fig, folder / "error_vs_n")
    typer.echo(f"{CAPTION.format(task=task.name).splitlines()[0]}: {png}")
    loss = pd.DataFrame({"seed": np.repeat(r.config["seeds"], r.loss.shape[1]),
                         "step": np.tile(np.arange(1, r.loss.shape[1] + 1), len(r.config["seeds"])),
                         "value": r.loss.ravel()})
    fig = probe_predictions(r.probes, loss, title=f"{task.name}: probe predictions over training", model=cfg.name)
    if fig is not None:
        (png,) = save(fig, folder / "probe_predictions")
        typer.echo(f"{PROBE_CAPTION.format(task=task.name).splitlines()[0]}: {png}")
    typer.echo(f"compile {r.timing['compile_s']:.1f}s, train {r.timing['wall_s']:.1f}s; wrote {folder}")


@app.command("superposition")
def superposition_cmd(
    n: Annotated[int, typer.Option(help="Sparse features.")] = 20,
    m: Annotated[int, typer.Option(help="Hidden dimensions of the toy model ReLU(W^T W x + b).")] = 5,
    sparsity: Annotated[list[float] | None, typer.Option(
        help="1 - p, the probability a feature is absent; repeatable (default 0 .. 0.997).")] = None,
    decay: Annotated[float, typer.Option(help="Importance of feature i: decay ** i.")] = 0.9,
    steps: Annotated[int, typer.Option(help="Adam updates.")] = 4000,
    seeds: Annotated[int, typer.Option(help="Seeds per sparsity.")] = 2,
    out: Annotated[Path, typer.Option(help="Folder for results.")] = Path("results/superposition"),
):
    """Capacity of features in superposition (Elhage et al. 2022; Scherlis et al. 2022): train the
    toy model at each sparsity, print each run's total capacity and features represented, and
    plot the phase change from m features (dense) to all n in superposition (sparse)."""
    from testbed.analyses.capacity.superposition import (
        SPARSITIES,
        superposition_figure,
        train_superposition,
    )
    from testbed.core.errors import TestbedError
    from testbed.core.files import atomic_write_parquet
    from testbed.core.style import save
    from testbed.report.tables import markdown_table

    try:
        table, _ = train_superposition(n, m, sparsities=sparsity or SPARSITIES, decay=decay, steps=steps,
                                       seeds=seeds)
    except TestbedError as e:
        _fail(str(e))
    summary = table.groupby("sparsity").agg(p=("p", "first"), capacity_sum=("capacity", "sum"),
                                            represented=("represented", "sum"), final_loss=("final_loss", "mean"))
    summary[["capacity_sum", "represented"]] /= table["seed"].nunique()
    typer.echo(markdown_table(summary.reset_index(), floatfmt=".3g"))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(out / "capacity.parquet", table)
    (png,) = save(superposition_figure(table, m), out / "superposition")
    typer.echo(f"wrote {out / 'capacity.parquet'} and {png}")


@app.command("reproduce")
def reproduce_cmd(
    names: Annotated[list[str] | None, typer.Argument(help="Reproductions to run (default all); see --list.")] = None,
    quick: Annotated[bool, typer.Option(help="The reduced versions (what `make test` runs): smaller, not the record.")
                     ] = False,
    list_them: Annotated[bool, typer.Option("--list", help="List the reproductions and exit.")] = False,
    out: Annotated[Path, typer.Option(help="Folder for the table, figures and report.")] = Path("results/reproduce"),
):
    """Re-measure published results: claim, source, measured value, band, verdict and seconds for
    each, a figure each, and a report (results/reproduce/report.html)."""
    from testbed.core.errors import TestbedError
    from testbed.core.files import atomic_write_json
    from testbed.core.platform import provenance
    from testbed.core.style import save
    from testbed.report.html import write_report
    from testbed.report.tables import markdown_table
    from testbed.reproduce.base import list_reproductions, make_reproduction, run_reproductions

    if list_them:
        for n in list_reproductions():
            r = make_reproduction(n)
            typer.echo(f"{n}: {r.claim} ({r.source}); band {list(r.band)} of {r.unit}")
        return

    def done(row):
        typer.echo(f"{row['verdict']:>10}  {row['name']}: {row['measured']:.4g} in {row['band']} "
                   f"({row['seconds']:.0f} s)", err=True)

    try:
        table, figures = run_reproductions(names or None, quick=quick, on_done=done)
    except TestbedError as e:
        _fail(str(e))
    shown = table[["name", "claim", "source", "measured", "band", "verdict", "seconds"]]
    typer.echo(markdown_table(shown, floatfmt=".4g"))
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "reproductions.csv", index=False)
    atomic_write_json(out / "provenance.json", {"quick": quick, **provenance()})
    figs = []
    for name, fig in figures.items():
        row = table.set_index("name").loc[name]
        (png,) = save(fig, out / name)
        figs.append((f"{name}: {row['claim']} ({row['verdict']})\n{row['details']}", png))
    page = write_report(out, {}, title="Reproductions" + (" (quick)" if quick else ""), manifest=provenance(),
                        summary="\n".join(f"- **{r.name}**: {r.verdict}, {r.measured:.4g} in {r.band} ({r.unit})"
                                          for r in table.itertuples()),
                        table_sections=[("Reproductions", table)], figures=figs)
    typer.echo(f"wrote {out / 'reproductions.csv'} and {page}")
    if (table["verdict"] == "FAIL").any():
        raise typer.Exit(1)


@app.command("bench")
def bench_cmd(
    suite: Annotated[Path, typer.Argument(help="Suite file (TOML), e.g. benchmarks/default.toml.")],
    results: Annotated[Path, typer.Option(help="Results folder; the suite writes results/<name>/.")] = Path("results"),
    force: Annotated[bool, typer.Option(help="Recompute finished cells too.")] = False,
    report: Annotated[bool, typer.Option(help="Write tables, figures and report.html at the end.")] = True,
    svg: Annotated[bool, typer.Option(help="Also write every figure as SVG.")] = False,
    redraw: Annotated[bool, typer.Option(help="Remake tables and report even when they are up to date.")] = False,
    all_tables: Annotated[bool, typer.Option("--all", help="Print every comparison table, not only the findings.")
                          ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    executor: Annotated[str, typer.Option(
        help="Where cells run: inprocess (this process), local (submitit jobs as local processes) or "
             "slurm (submitit job arrays; needs testbed[slurm]).")] = "inprocess",
    partition: Annotated[str | None, typer.Option(help="Slurm partition (--executor slurm).")] = None,
    time_min: Annotated[int, typer.Option(help="Time limit of each job, minutes (local and slurm).")] = 60,
    cpus_per_job: Annotated[int | None, typer.Option(help="CPUs per job (default: this machine's CPU devices).")
                            ] = None,
    gpus_per_job: Annotated[int, typer.Option(help="GPUs per job.")] = 0,
    max_jobs: Annotated[int | None, typer.Option(
        help="Jobs running at once (default: every group on Slurm, one locally).")] = None,
):
    """Run a suite (skipping finished cells), then print the comparison and write the report."""
    from testbed.suites.cluster import make_executor
    from testbed.suites.runner import run_suite
    from testbed.suites.spec import load_suite

    options = {} if executor in ("inprocess", "in-process") else {
        "partition": partition, "time_min": time_min, "cpus_per_job": cpus_per_job, "gpus_per_job": gpus_per_job,
        "max_jobs": max_jobs}
    try:
        ex = make_executor(executor, **options)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    s = load_suite(suite, build=False)  # the cells to run are built (and checked) by run_suite
    run = run_suite(s, results, force=force, quiet=quiet, executor=ex)
    typer.echo(f"{s.name}: ran {len(run.ran)} cells, skipped {len(run.skipped)} finished; results in {run.root}")
    if run.failed:
        for key, why in run.failed.items():
            typer.echo(f"  cell {key} did not finish: {why}", err=True)
        typer.echo(f"{len(run.failed)} cells did not finish; run the same command again to redo them "
                   "(finished cells are kept)", err=True)
        raise typer.Exit(1)
    if report:
        from testbed.report.build import build_report
        from testbed.report.compare import findings_part

        markdown, path = build_report(run.root, s, svg=svg, reuse=not (redraw or force))
        typer.echo(markdown if all_tables else findings_part(markdown))
        typer.echo(f"every table: {run.root / 'tables'} (CSV, LaTeX; `testbed compare --all` prints them)\n"
                   f"report: {path}")


@app.command("export")
def export_cmd(
    tracker: Annotated[str, typer.Argument(help="tensorboard (event files, tensorboardX) or wandb (offline runs).")],
    root: Annotated[Path, typer.Argument(help="A suite's results folder, e.g. results/default.")],
    out: Annotated[Path | None, typer.Option(help="Where to write (default: <root>/exports/<tracker>).")] = None,
):
    """Write a finished suite's histories for TensorBoard or Weights & Biases (offline): one run per
    trained model, a cell's seeds grouped. The parquet tables stay the record."""
    from testbed.report.export import TRACKERS, export_suite

    if tracker not in TRACKERS:
        raise typer.BadParameter(f"unknown tracker {tracker!r}; accepted: {', '.join(TRACKERS)}",
                                 param_hint="TRACKER")
    _need_dir(root)
    try:
        path = export_suite(root, tracker, out)
    except ImportError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    hint = f"tensorboard --logdir {path}" if tracker == "tensorboard" else f"wandb sync {path}/wandb/offline-run-*"
    typer.echo(f"{tracker}: {path}  (view: {hint})")


@app.command("compare")
def compare_cmd(
    root: Annotated[Path, typer.Argument(help="A suite's results folder, e.g. results/default.")],
    redraw: Annotated[bool, typer.Option(help="Remake the tables even when they are up to date.")] = False,
    all_tables: Annotated[bool, typer.Option("--all", help="Print every comparison table, not only the findings.")
                          ] = False,
):
    """Print the findings of a suite (every comparison table with --all); write CSV and LaTeX."""
    from testbed.report.build import compare_tables
    from testbed.report.compare import findings_part

    _need_dir(root)
    markdown, _ = compare_tables(root, reuse=not redraw)
    typer.echo(markdown if all_tables else findings_part(markdown))
    typer.echo(f"every table: {root / 'tables'} (CSV, LaTeX)" + ("" if all_tables else "; --all prints them"))


@app.command("report")
def report_cmd(
    root: Annotated[Path, typer.Argument(help="A suite's results folder, e.g. results/default.")],
    svg: Annotated[bool, typer.Option(help="Also write every figure as SVG.")] = False,
    redraw: Annotated[bool, typer.Option(help="Redraw even when the report is up to date.")] = False,
):
    """Write one self-contained report.html (tables and figures) for a suite."""
    from testbed.report.build import build_report

    _need_dir(root)
    _, path = build_report(root, svg=svg, reuse=not redraw)
    typer.echo(str(path))


def _need_dir(root: Path) -> None:
    if not (root / "manifest.json").is_file():
        _fail(f"{str(root)!r} is not a suite results folder (no manifest.json); run `testbed bench SUITE.toml` first")


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    from testbed.core.errors import TestbedError

    try:
        rc = app(standalone_mode=False)  # returns the code of a typer.Exit raised by a command
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except TestbedError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    except Exception as e:
        # Usage errors from typer's bundled click: print its message, exit 2.
        if hasattr(e, "show") and hasattr(e, "exit_code"):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
