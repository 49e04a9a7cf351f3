"""The exception tree of adcast. Every error adcast raises on purpose derives from AdcastError.

AdcastError
├── ConfigError            bad or missing settings; fatal, the message says what to set
├── DependencyMissing      an optional extra is not installed; says which to install
├── ServiceError           a local service (broker, redis-server) could not be managed
│   └── OffsetsUnreadable  the broker did not answer a consumer group's offsets read
├── Rejected               one input refused: it goes to the dead-letter topic (stage, reason, detail)
│   ├── SerdeError         bytes that are not a valid record of the expected schema (stage "decode")
│   ├── InvalidEvent       a decoded record that breaks the contract (stage "validate")
│   ├── StoreKeyError      one key's Redis command failed (wrong type, unreadable record): that key only
│   └── EngineFailure      an engine call raised or timed out (stage "infer"; also a RecoverableError)
├── BadRequest             a lookup request the HTTP service refuses (a 400, with a reason code)
├── TrainingInterrupted    training stopped early on purpose; its checkpoint resumes it
├── Interrupted            a worker told to stop while it waited to retry: its batch stays uncommitted
├── RecoverableError       transient: retry with backoff
│   ├── StoreUnavailable   Redis unreachable, or refusing writes server-wide (out of memory, read-only)
│   └── EngineFailure      (see Rejected): retried before its input is dead-lettered
└── FatalError             stop the worker loudly
    ├── ModelError         the model cannot be loaded or served
    └── EngineDead         the engine failed every request of several micro-batches in a row
"""

from __future__ import annotations

import importlib.util


class AdcastError(Exception):
    """Root of every error adcast raises on purpose."""


class ConfigError(AdcastError):
    pass


class DependencyMissing(AdcastError):
    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module!r} is not installed in this environment. This command needs the "
            f"{extra!r} extra: pip install 'adcast[{extra}]' (each tier has its own "
            "virtual environment; see README, 'Two environments')."
        )
        self.module = module
        self.extra = extra


class ServiceError(AdcastError):
    pass


class OffsetsUnreadable(ServiceError):
    """The broker did not answer an offsets read (not a missing topic)."""


class Rejected(AdcastError):
    """One input the pipeline refuses: it goes to the dead-letter topic, with `stage` (where it was
    refused), `reason` (a short code, counted by adcast_dead_letters_total) and `detail` (what to
    fix), and the worker goes on. Handlers raise it; the tier's dead-letter sink sends it."""

    stage = "process"

    def __init__(self, reason: str, detail: str, stage: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        if stage is not None:
            self.stage = stage


class SerdeError(Rejected):
    """Bytes that cannot be decoded as the expected record."""

    stage = "decode"


class InvalidEvent(Rejected):
    """A decoded record that breaks the contract (an event's fields, the partitioning, a request's
    version range)."""

    stage = "validate"


class StoreKeyError(Rejected):
    """One key's command failed while the others of its batch ran (a key of another type, a record
    the write script cannot read): that user's write or read fails, nobody else's."""

    stage = "store"


class BadRequest(AdcastError):
    """A request the lookup service refuses; `code` is the reason in its 400 answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TrainingInterrupted(AdcastError):
    """Training stopped early on purpose; the checkpoint lets `--resume` continue."""


class Interrupted(AdcastError):
    """A worker was told to stop while it waited to retry: the batch it held stays uncommitted,
    for the next worker."""


class RecoverableError(AdcastError):
    pass


class StoreUnavailable(RecoverableError):
    pass


class EngineFailure(RecoverableError, Rejected):
    """An engine call raised or timed out: retried, and dead-lettered when the retries fail."""

    stage = "infer"


class FatalError(AdcastError):
    pass


class ModelError(FatalError):
    pass


class EngineDead(FatalError):
    """The engine failed every request of several micro-batches in a row: stop, do not spin."""


def require(module: str, extra: str) -> None:
    """Raise DependencyMissing, naming the extra to install, unless `module` can be imported."""
    if importlib.util.find_spec(module) is None:
        raise DependencyMissing(module, extra)
