"""metrics.csv keeps every value: a column that first appears late (an objective with `start`) is added."""

import csv

from zir.train.metrics_log import MetricsLog


def test_a_late_column_is_added_and_earlier_rows_keep_their_values(tmp_path):
    path = tmp_path / "metrics.csv"
    log = MetricsLog(path, resume_step=None)
    log.write({"step": 1, "loss": 2.5, "clip_loss": 2.5})
    log.write({"step": 2, "loss": 3.0, "clip_loss": 2.0, "mae_loss": 1.0})
    log.write({"step": 3, "loss": 2.8, "clip_loss": 1.9, "mae_loss": 0.9})
    log.close()
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows] == ["1", "2", "3"]
    assert [r["mae_loss"] for r in rows] == ["", "1", "0.9"] and rows[0]["clip_loss"] == "2.5"
    resumed = MetricsLog(path, resume_step=2)  # a resume keeps the widened header and drops step 3
    resumed.write({"step": 3, "loss": 2.7, "clip_loss": 1.8, "mae_loss": 0.8})
    resumed.close()
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["step"], r["mae_loss"]) for r in rows] == [("1", ""), ("2", "1"), ("3", "0.8")]
