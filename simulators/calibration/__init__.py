"""Calibration of the simulated world: the file format, its default and its loader.

See ``schema.py`` for every section and field, ``default.toml`` for the documented default.
"""

from simulators.calibration.loader import (
    calibration_from_mapping,
    default_calibration_path,
    dump_calibration,
    load_calibration,
)
from simulators.calibration.schema import STAGES, Calibration

__all__ = [
    "STAGES",
    "Calibration",
    "calibration_from_mapping",
    "default_calibration_path",
    "dump_calibration",
    "load_calibration",
]
