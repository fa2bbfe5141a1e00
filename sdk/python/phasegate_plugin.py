"""Write phasegate plugins in Python (built into components with componentize-py).

A task::

    import phasegate_plugin as pg
    from phasegate_plugin import WitWorld  # componentize-py looks for this name

    @pg.task(name="shout", version="0.1.0", description="Upper-cases its input")
    def run(req: pg.Request):
        if not isinstance(req.input, str):
            raise pg.InvalidInput("expected a string")
        return {"text": req.input.upper()}

A gate::

    @pg.gate(name="no-failures", version="0.1.0")
    def check(report: pg.Report):
        failed = report.failed()
        return pg.Verdict.fail(f"{len(failed)} failed") if failed else pg.Verdict.pass_("ok")

The host sends JSON text; this module parses it the way the Rust SDK does: the rendered
input is parsed as JSON when it is JSON and offered as the raw string otherwise; the config is
a JSON object (``{}`` when the pipeline gives none); what a task returns is serialised to JSON.
"""

import json
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

from componentize_py_types import Err
from wit_world.imports import host as _host
from wit_world.imports import types as _types

__all__ = [
    "task", "gate", "Request", "Report", "Outcome", "Verdict",
    "Failed", "InvalidInput", "InvalidConfig", "log", "progress", "WitWorld",
]


class Failed(Exception):
    """The work failed; the host retries it (up to the task's ``retries``)."""


class InvalidInput(Exception):
    """The input is not acceptable; retrying cannot help."""


class InvalidConfig(Exception):
    """The config is not acceptable; retrying cannot help."""


@dataclass
class Request:
    """One attempt of a task."""
    run_id: str
    phase: str
    task: str
    attempt: int
    input: Any
    raw_input: str
    # The whole context with the pipeline's `grants = { context = true }` for this task;
    # otherwise only {"run": {"id"}, "pipeline": {"name"}}.
    context: Any
    config: Any


@dataclass
class Outcome:
    """One task's outcome, as a gate sees it. ``error`` is ``(kind, message)`` or ``None``."""
    task: str
    output: Any
    error: Optional[tuple]
    attempts: int
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.error is None

    def usage(self):
        """What the task's last attempt used, as the host measured it: an object with
        ``wall_us``, ``fuel`` (None without a fuel budget), ``memory``, ``log_bytes``,
        ``written`` (bytes into read-write grants) and ``opened``; None for a task that never
        ran."""
        from wit_world.imports import usage as _usage  # gates only: tasks do not import it
        return _usage.of_task(self.task)


@dataclass
class Report:
    """The phase a gate judges."""
    run_id: str
    phase: str
    outcomes: List[Outcome]
    context: Any
    config: Any

    def failed(self) -> List[Outcome]:
        return [o for o in self.outcomes if not o.succeeded]


@dataclass
class Verdict:
    """A gate's decision. Build one with ``Verdict.pass_``, ``Verdict.warn`` or ``Verdict.fail``."""
    kind: str
    reason: str
    evidence: Any = None

    @staticmethod
    def pass_(reason: str, evidence: Any = None) -> "Verdict":
        return Verdict("pass", reason, evidence)

    @staticmethod
    def warn(reason: str, evidence: Any = None) -> "Verdict":
        return Verdict("warn", reason, evidence)

    @staticmethod
    def fail(reason: str, evidence: Any = None) -> "Verdict":
        return Verdict("fail", reason, evidence)


class log:
    """Structured log lines, kept with the task's result in the progress file."""

    @staticmethod
    def trace(message: str) -> None:
        _host.log(_host.Level.TRACE, message)

    @staticmethod
    def debug(message: str) -> None:
        _host.log(_host.Level.DEBUG, message)

    @staticmethod
    def info(message: str) -> None:
        _host.log(_host.Level.INFO, message)

    @staticmethod
    def warn(message: str) -> None:
        _host.log(_host.Level.WARN, message)

    @staticmethod
    def error(message: str) -> None:
        _host.log(_host.Level.ERROR, message)


def progress(done: int, total: int, message: str = "") -> None:
    """Reports progress of long work: ``done`` of ``total`` units."""
    _host.progress(done, total, message)


@dataclass
class _Plugin:
    kind: str
    name: str
    version: str
    description: str
    config_schema: Optional[str]
    handler: Callable


_registered: List[_Plugin] = []


def _register(kind: str, name: str, version: str, description: str, config_schema: Any):
    if isinstance(config_schema, dict):
        config_schema = json.dumps(config_schema)

    def decorate(handler: Callable) -> Callable:
        if _registered:
            raise RuntimeError(
                f"phasegate_plugin: `{handler.__name__}` is a second plugin in one component; "
                f"`{_registered[0].handler.__name__}` is already registered"
            )
        _registered.append(_Plugin(kind, name, version, description, config_schema, handler))
        return handler

    return decorate


def task(name: str, version: str, description: str = "", config_schema: Any = None):
    """Registers ``fn(request: Request) -> JSON-serialisable`` as the component's task."""
    return _register("task", name, version, description, config_schema)


def gate(name: str, version: str, description: str = "", config_schema: Any = None):
    """Registers ``fn(report: Report) -> Verdict`` as the component's gate."""
    return _register("gate", name, version, description, config_schema)


def _plugin(kind: str) -> _Plugin:
    if not _registered:
        raise RuntimeError(f"phasegate_plugin: no @{kind} function is registered")
    return _registered[0]


def _parse_input(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _parse_object(raw: str) -> Any:
    return json.loads(raw) if raw.strip() else {}


class WitWorld:
    """The exports componentize-py binds; import this name into your app module."""

    def metadata(self) -> _types.PluginMetadata:
        p = _plugin("task or gate")
        kind = _types.PluginKind.TASK if p.kind == "task" else _types.PluginKind.GATE
        return _types.PluginMetadata(p.name, p.version, p.description, kind, p.config_schema)

    def run(self, request: _types.TaskRequest) -> str:
        p = _plugin("task")
        try:
            config = _parse_object(request.config)
        except ValueError as e:
            raise Err(_types.TaskError_InvalidConfig(f"cannot read config: {e}"))
        context = json.loads(request.context) if request.context.strip() else None
        req = Request(request.run_id, request.phase, request.task, request.attempt,
                      _parse_input(request.input), request.input, context, config)
        try:
            output = p.handler(req)
        except InvalidInput as e:
            raise Err(_types.TaskError_InvalidInput(str(e)))
        except InvalidConfig as e:
            raise Err(_types.TaskError_InvalidConfig(str(e)))
        except Failed as e:
            raise Err(_types.TaskError_Failed(str(e)))
        except Exception as e:  # any other exception is a retryable failure, like `?` in Rust
            raise Err(_types.TaskError_Failed(f"{type(e).__name__}: {e}"))
        try:
            return json.dumps(output)
        except (TypeError, ValueError) as e:
            raise Err(_types.TaskError_Failed(f"cannot serialise output: {e}"))

    def check(self, report: _types.PhaseReport) -> _types.Verdict:
        p = _plugin("gate")
        try:
            config = _parse_object(report.config)
        except ValueError as e:
            return _types.Verdict(_types.VerdictKind.FAIL, f"gate config is invalid: {e}", None)
        outcomes = [
            Outcome(
                o.task,
                _parse_input(o.output) if o.output is not None else None,
                (o.error.kind.name.lower().replace("_", "-"), o.error.message) if o.error else None,
                o.attempts,
                o.duration_ms,
            )
            for o in report.outcomes
        ]
        context = json.loads(report.context) if report.context.strip() else None
        try:
            verdict = p.handler(Report(report.run_id, report.phase, outcomes, context, config))
        except Exception as e:
            return _types.Verdict(_types.VerdictKind.FAIL, f"gate raised {type(e).__name__}: {e}", None)
        if not isinstance(verdict, Verdict):
            return _types.Verdict(_types.VerdictKind.FAIL,
                                  f"gate returned {type(verdict).__name__}, not a phasegate_plugin.Verdict", None)
        kind = {"pass": _types.VerdictKind.PASS, "warn": _types.VerdictKind.WARN,
                "fail": _types.VerdictKind.FAIL}[verdict.kind]
        try:
            evidence = None if verdict.evidence is None else json.dumps(verdict.evidence)
        except (TypeError, ValueError) as e:
            return _types.Verdict(_types.VerdictKind.FAIL,
                                  f"cannot serialise evidence: {e} (the verdict was {verdict.kind}: {verdict.reason})",
                                  None)
        return _types.Verdict(kind, verdict.reason, evidence)
