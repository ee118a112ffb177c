"""The exceptions tilewarp raises.

Every bad input becomes one of these, with a message that names the tensor, key,
argument or task at fault and what was expected. Each class also derives from the
builtin a caller would naturally catch (ValueError, RuntimeError, ...), so code that
embeds tilewarp does not have to know our hierarchy to handle the common cases.
"""

from __future__ import annotations

import operator


class TilewarpError(Exception):
    """Base of every error tilewarp raises on purpose."""


class ConfigError(TilewarpError, ValueError):
    """A model config key is unknown, missing, contradictory or out of range."""


class CheckpointError(TilewarpError, ValueError):
    """A checkpoint is malformed: missing/extra tensors, wrong shape or dtype, bad values."""


class QuantizationError(TilewarpError, ValueError):
    """Quantised data cannot be decoded (e.g. an E8M0 scale byte of 255 = NaN)."""


class InputError(TilewarpError, ValueError):
    """A request is invalid: token ids out of range, prompt past the context, bad sampling."""


class GraphError(TilewarpError, ValueError):
    """A task graph or lowered program breaks one of its invariants."""


class DeviceError(TilewarpError, RuntimeError):
    """The GPU side failed: build, launch, or an error record written by the megakernel."""


def int_arg(name: str, value: object) -> int:
    """`value` as a Python int (any integer type, numpy's included), or an InputError naming
    `name`; a bool is refused (True is not a length or an index)."""
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise InputError(f"{name}: must be an int, got {value!r}") from None


def nonfinite_message(what: str, token: int) -> str:
    """The one wording of a NaN / inf refusal (ROUTE's scores, LM head logits), on the CPU
    executor and the megakernel alike."""
    return f"{what} of token {token} hold NaN or inf (an activation overflowed, or a weight is not finite)"


class DeviceTimeoutError(DeviceError):
    """A megakernel task waited past its bound on an event that never reached its count."""
