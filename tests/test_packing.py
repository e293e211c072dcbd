"""`sdcaff packing`: k units side by side, timed with the real training path (here on the CPU, tiny model)."""

import json

import pytest

import fake_study
from sdcaff import cli, packing
from sdcaff.errors import SdcaffError

pytestmark = pytest.mark.usefixtures("restore_threads")


def test_unit_grid_uses_as_few_seeds_as_the_folds_allow():
    assert packing.unit_grid(1, 5, 5) == (1, 1)
    assert packing.unit_grid(4, 5, 5) == (1, 4)
    assert packing.unit_grid(8, 5, 5) == (2, 4)
    with pytest.raises(SdcaffError, match="k = 7 units cannot be laid out"):
        packing.unit_grid(7, 5, 5)


def test_packing_times_one_then_two_units_and_writes_json_and_a_table(in_tmp):
    fake_study.write_study(in_tmp)
    fake_study.write_params(in_tmp / "params.yaml", experiments={"honest": {
        "protocol": "honest", "features": {"train": "iemocap", "test": "iemocap"}, "group": "headline"}})
    assert cli.main(["packing", "--experiment", "honest", "--ks", "1", "2", "--epochs", "2", "--threads", "1",
                     "--device", "cpu"]) == 0
    record = json.loads((in_tmp / "results/bench/packing-cpu.json").read_text())
    assert [r["k"] for r in record["rows"]] == [1, 2] and record["schedule_epochs"] == 3
    for row in record["rows"]:
        assert row["timed_epochs"] == 2 * row["k"] and row["units_per_hour"] > 0 and row["wall_s"] > 0
    assert record["rows"][0]["speedup_vs_first"] == 1.0
    table = (in_tmp / "results/tables/packing-cpu.md").read_text()
    assert "| 2 |" in table and "units/hour" in table
    # Two units were trained side by side, each on the params the workspace wrote.
    assert len(list((in_tmp / "artifacts/packing/k2/artifacts/runs/honest/seed_7").iterdir())) == 2
