"""`testbed export tensorboard|wandb`: a finished suite's histories, one tracker run per trained
model, read back and compared with the parquet record."""

import struct
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testbed.report.export import export_suite
from testbed.suites.runner import run_suite
from testbed.suites.spec import load_suite

SUITE = """
name = "exp"
seeds = 2

[train]
steps = 20
batch_size = 16
evals = 2
eval_size = 32
probe_points = 8

[grid]
tasks = ["two_slopes"]
methods = ["mse", "ce"]
models = [{ name = "mlp", width = 8, depth = 1 }]
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export")
    (tmp / "exp.toml").write_text(textwrap.dedent(SUITE))
    run_suite(load_suite(tmp / "exp.toml"), tmp / "results", quiet=True)
    return tmp / "results" / "exp"


def read_events(path: Path) -> list[tuple[str, int, float]]:
    """Scalars of one TensorBoard event file (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    data, out, i = path.read_bytes(), [], 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        ev = event_pb2.Event.FromString(data[i + 12:i + 12 + n])
        out += [(v.tag, ev.step, v.simple_value) for v in ev.summary.value if v.HasField("simple_value")]
        i += 12 + n + 4
    return out


def test_tensorboard_holds_every_history_value(finished):
    pytest.importorskip("tensorboardX")
    out = export_suite(finished, "tensorboard")
    h = pd.read_parquet(finished / "results.parquet")
    runs = sorted(out.glob("*/*"))
    assert len(runs) == h.groupby(["cell", "run"]).ngroups == 4
    assert {p.parent.name for p in runs} == {"two_slopes_mse_mlp_adam", "two_slopes_ce_mlp_adam"}
    import json

    cells = json.loads((finished / "manifest.json").read_text())["cells"]
    folder_of = {"_".join(v[k] for k in ("task", "method", "model", "optimizer")): c for c, v in cells.items()}
    got = []
    for run in runs:
        (events,) = run.glob("events.out.tfevents.*")
        cell, seed = folder_of[run.parent.name], int(run.name.split("=")[1])
        got += [(cell, seed, *e) for e in read_events(events)]
    got = pd.DataFrame(got, columns=["cell", "seed", "tag", "step", "value"])
    piece = h["piece"].astype(str)
    want = pd.DataFrame({"cell": h["cell"].astype(str), "seed": h["seed"],
                         "tag": h["split"].astype(str) + "/" + h["metric"].astype(str)
                         + ("/" + piece).where(piece != "all", ""), "step": h["step"], "value": h["value"]})
    key = ["cell", "seed", "tag", "step"]
    merged = want.merge(got, on=key, how="outer", suffixes=("", "_tb"), indicator=True)
    assert (merged["_merge"] == "both").all(), merged[merged["_merge"] != "both"].head()
    np.testing.assert_allclose(merged["value_tb"], merged["value"].astype(np.float32), rtol=1e-6)
    again = export_suite(finished, "tensorboard")  # writing again replaces, never doubles
    assert sum(len(read_events(e)) for e in again.glob("*/*/events.*")) == len(want)
    assert again == finished / "exports" / "tensorboard"
    run_suite(load_suite(finished.parent.parent / "exp.toml"), finished.parent, quiet=True)
    assert len(list(again.glob("*/*/events.*"))) == 4  # the next run never takes the export for a cell


def test_wandb_offline_runs_one_per_trained_model(finished, tmp_path):
    pytest.importorskip("wandb")
    out = export_suite(finished, "wandb", tmp_path / "wb")
    runs = sorted((out / "wandb").glob("offline-run-*"))
    h = pd.read_parquet(finished / "results.parquet")
    assert len(runs) == h.groupby(["cell", "run"]).ngroups
    for run in runs:
        (log,) = run.glob("*.wandb")
        data = log.read_bytes()
        assert b"train/mse" in data and b"two_slopes/" in data  # the scalars and the cell's group
    again = export_suite(finished, "wandb", tmp_path / "wb")  # writing again replaces, never doubles
    assert len(list((again / "wandb").glob("offline-run-*"))) == len(runs)
