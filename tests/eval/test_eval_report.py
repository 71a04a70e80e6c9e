"""RUN/report.html: every section present, pictures embedded, sections that do not apply say why."""

from __future__ import annotations

import base64
import re

import pytest
import torch

from test_eval_run import QUICK_PROBE, coca_run, mae_run  # noqa: F401  (shared fixtures)
from zir.eval.report import SECTIONS, read_metrics, training_curves_png, write_report
from zir.eval.run_eval import EvalError, evaluate_run

PNG = b"\x89PNG\r\n\x1a\n"


def _sections(page: str) -> dict[str, str]:
    """Section title -> its HTML body."""
    parts = re.findall(r"<section><h2>(.*?)</h2>(.*?)</section>", page, flags=re.S)
    return {title: body for title, body in parts}


def _pngs(body: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', body)]


def test_report_of_a_cross_modal_mae_run_has_every_section_filled(coca_run):
    evaluate_run(coca_run, limit=48, baseline=True, probe_options=QUICK_PROBE)
    path = write_report(coca_run)
    assert path == coca_run / "report.html"
    sections = _sections(path.read_text())
    assert list(sections) == list(SECTIONS)
    for title in ("Training curves", "Attention and patch features", "MAE reconstructions", "CoCa captions"):
        pngs = _pngs(sections[title])
        assert pngs and all(p.startswith(PNG) for p in pngs), title
        assert 'class="why"' not in sections[title], title
    assert len(_pngs(sections["CoCa captions"])) == 4  # one thumbnail per captioned test image
    assert "a human caption" in sections["CoCa captions"]
    results = sections["Results"]
    for row in ("zeroshot", "zeroshot_comp", "retrieval", "linear", "knn", "i2t_R@1", "random init"):
        assert row in results
    assert "2 logged steps" in sections["Training curves"]


def test_sections_that_do_not_apply_say_why(mae_run):
    (mae_run / "results.json").unlink(missing_ok=True)
    sections = _sections(write_report(mae_run).read_text())
    assert list(sections) == list(SECTIONS)
    assert "no metrics.csv" in sections["Training curves"]
    assert "Not evaluated yet" in sections["Results"]
    assert "no CoCa objective" in sections["CoCa captions"]
    assert _pngs(sections["Attention and patch features"]) and _pngs(sections["MAE reconstructions"])


def test_a_run_without_weights_still_gets_a_report(mae_run, tmp_path):
    run = tmp_path / "fresh"
    run.mkdir()
    (run / "config.yaml").write_text((mae_run / "config.yaml").read_text())
    (run / "metrics.csv").write_text("step,loss,mae_loss,lr\n1,2.0,2.0,0.001\n2,1.5,1.5,0.0005\n")
    sections = _sections(write_report(run).read_text())
    assert _pngs(sections["Training curves"])
    for title in SECTIONS[2:]:
        assert "no checkpoint" in sections[title]
    with pytest.raises(EvalError, match="not a run folder"):
        write_report(tmp_path / "nowhere")


def test_training_curves_read_metrics_with_gaps(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss,clip_loss,clip_acc,lr\n1,3.0,3.0,0.1,0.001\n2,nan,,0.2,0.0009\n3,2.0,2.0,0.4,0.0008\n")
    columns = read_metrics(path)
    assert columns["step"] == [1.0, 2.0, 3.0] and torch.tensor(columns["clip_loss"]).isnan().tolist() == [False, True, False]
    assert training_curves_png(columns).startswith(PNG)
