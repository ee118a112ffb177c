"""What to compute: the model, its reference, and the task graphs and programs of a step."""

from .config import ModelConfig, param_counts, step_bytes
from .errors import (CheckpointError, ConfigError, DeviceError, DeviceTimeoutError, GraphError, InputError,
                     QuantizationError, TilewarpError)
from .presets import PRESETS, preset

__all__ = [
    "ModelConfig", "param_counts", "step_bytes", "PRESETS", "preset", "TilewarpError", "ConfigError",
    "CheckpointError", "QuantizationError", "InputError", "GraphError", "DeviceError", "DeviceTimeoutError",
]
