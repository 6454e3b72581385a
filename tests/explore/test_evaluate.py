"""Design-point evaluation: which device model priced a point is reported, and the roofline switch works."""

from __future__ import annotations

from dataclasses import replace

from explore.design_point import DesignPoint
from explore.rows import device_label, normalize_row

POINT = DesignPoint(model="llama-2-7b", device="h100-sxm", batch=1, prompt=64, output=4)


def test_calibrated_column_and_roofline_switch(evaluator):
    calibrated = evaluator.evaluate(POINT).metrics
    roofline = evaluator.evaluate(replace(POINT, use_calibration=False)).metrics
    assert calibrated["calibrated"] is True and roofline["calibrated"] is False
    # Fitted fractions are at most 1 and add a latency: the datasheet roofline is always the faster prediction.
    assert roofline["tpot_s"] < calibrated["tpot_s"] and roofline["ttft_s"] < calibrated["ttft_s"]
    assert evaluator.evaluate(replace(POINT, device="l40s")).metrics["calibrated"] is False  # no fit shipped


def test_uncalibrated_devices_are_marked_in_labels_from_csv_rows():
    assert device_label(normalize_row({"device": "l40s", "calibrated": "False"})) == "l40s (uncalibrated)"
    assert device_label(normalize_row({"device": "h100-sxm", "calibrated": "True"})) == "h100-sxm"
