"""The microcontroller target: the TFLM op table against the real TFLite schema."""

from __future__ import annotations

import re

from edgemaas.packaging.mcu.tflite_graph import builtin_operator_names
from edgemaas.packaging.mcu.tflm_ops import AVOID, TFLM_BUILTIN_OPS, TFLM_CUSTOM_OPS


def test_op_table_names_real_schema_ops_and_methods() -> None:
    schema_ops = builtin_operator_names()
    assert set(TFLM_BUILTIN_OPS) <= schema_ops
    assert set(AVOID) <= schema_ops and not set(AVOID) & set(TFLM_BUILTIN_OPS)
    methods = [*TFLM_BUILTIN_OPS.values(), *TFLM_CUSTOM_OPS.values()]
    assert len(methods) == len(set(methods))
    assert all(re.fullmatch(r"Add[A-Z][A-Za-z0-9]*", m) for m in methods)
