"""The errors hwnas raises on purpose. `HwnasError` is the root of all of them: the CLI prints its
message as one `error:` line and exits with code 2, never a traceback.

- `HwnasError` itself: a problem with the user's input (a file, an argument, a profile, a table).
- `BackendUnavailable`: a device backend that cannot run on this machine (the message says why).
- `DeviceError`: a device or runtime failed while running (an adb command, a TensorRT inference).
- `NotFittedError`: a predictor used before `fit` (or loaded from an incomplete file).

Anything else that escapes is a bug in hwnas.
"""


class HwnasError(ValueError):
    """A problem with the user's input (a file, an argument, a profile), with a clear message."""


class BackendUnavailable(HwnasError):
    """A backend used where it cannot run; the message says why (missing runtime, no GPU, ...)."""


class DeviceError(HwnasError):
    """A device or its runtime failed while measuring or running an artifact."""


class NotFittedError(HwnasError):
    """A predictor used before it was fitted."""
