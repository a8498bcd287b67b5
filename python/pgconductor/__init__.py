"""pgconductor: durable task execution inside Postgres."""

from .conductor import EXTENSION_VERSION, Conductor
from .context import AbortSignal, BatchContext, TaskContext, TaskEvent
from .errors import (
    Cancelled,
    ChildFailed,
    ChildTimeout,
    ExecutionCancelled,
    ExecutionFailed,
    ExtensionNotAvailable,
    FakeTimeNotAllowed,
    InvalidInput,
    InvalidResult,
    LeaseExpired,
    NotSupported,
    PgConductorError,
    Released,
    UnknownExecution,
    UnknownTask,
    WaitTimeout,
    WindowClosed,
)
from .orchestrator import Orchestrator
from .sql import ExecutionInfo, QueueStats
from .task import Invocable, Task, TaskDefinition, define_task
from .worker import Worker, WorkerConfig

__version__ = "0.1.0"

__all__ = [
    "EXTENSION_VERSION",
    "AbortSignal",
    "BatchContext",
    "Cancelled",
    "ChildFailed",
    "ChildTimeout",
    "Conductor",
    "ExecutionCancelled",
    "ExecutionFailed",
    "ExecutionInfo",
    "ExtensionNotAvailable",
    "FakeTimeNotAllowed",
    "InvalidInput",
    "InvalidResult",
    "Invocable",
    "LeaseExpired",
    "NotSupported",
    "Orchestrator",
    "PgConductorError",
    "QueueStats",
    "Released",
    "Task",
    "TaskContext",
    "TaskDefinition",
    "TaskEvent",
    "UnknownExecution",
    "UnknownTask",
    "WaitTimeout",
    "WindowClosed",
    "Worker",
    "WorkerConfig",
    "define_task",
]
