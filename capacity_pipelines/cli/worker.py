"""The run worker: executes one Dagster run of a job for the `capacity` command, printing progress.

`capacity demo|extract|run` (the supervisor, `runs.py`) starts this module in a process of its
own with a JSON spec: which job, which partitions, which assets, which settings. The worker
creates the run in the Dagster instance (so it shows in the UI like a scheduled run), executes
the same job definition the schedule launches, and prints one line per finished step.

It dies with its supervisor: on Linux the kernel sends it SIGTERM when the supervisor exits for
any reason (a SIGKILL included), and Dagster turns that into a clean interruption of the run
(which fails it: nobody asked for a cancel). SIGTERM and SIGINT outside a run's execution (while
the definitions load) end the worker quietly; the supervisor closes the run it leaves open.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import dagster as dg

from capacity_pipelines.common.formatting import safe_text

DAILY_JOB = "daily_capacity_pipeline"
WEEKLY_JOB = "weekly_capacity_report_job"
PR_SET_PDEATHSIG = 1


def _definitions() -> dg.Definitions:
    from capacity_pipelines.definitions import defs

    return defs()


def daily_capacity_pipeline() -> dg.JobDefinition:
    """The daily job, as step processes reconstruct it."""
    return _definitions().resolve_job_def(DAILY_JOB)


def weekly_capacity_report_job() -> dg.JobDefinition:
    """The weekly report job, as step processes reconstruct it."""
    return _definitions().resolve_job_def(WEEKLY_JOB)


JOBS = {DAILY_JOB: daily_capacity_pipeline, WEEKLY_JOB: weekly_capacity_report_job}


@dataclass
class RunSpec:
    """What the supervisor asks for: one run of one job."""

    run_id: str
    job: str
    tags: dict[str, str]
    title: str = ""  # printed before the run's progress lines
    assets: list[str] | None = None
    resources: dict = field(default_factory=dict)  # resource key -> config (run config form)
    executor: dict = field(default_factory=dict)  # run config `execution` section


def specs_to_json(specs: list[RunSpec]) -> str:
    """The worker's argument: the runs to execute, in order."""
    return json.dumps([s.__dict__ for s in specs])


def specs_from_json(text: str) -> list[RunSpec]:
    return [RunSpec(**item) for item in json.loads(text)]


@dataclass
class Progress:
    """Prints one line per finished step: `[3/14] load_forecasts ok (1,008 rows, 6.4 s)`."""

    total: int
    done: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    checks: dict[str, list[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)  # "<step> failed: <why>", in order

    def step_name(self, event: dg.DagsterEvent) -> str:
        return (event.step_key or "").removesuffix("_op")

    def record(self, event: dg.DagsterEvent) -> None:
        kind = event.event_type_value
        if kind == "ASSET_MATERIALIZATION":
            materialization = event.step_materialization_data.materialization
            count = materialization.metadata.get("dagster/row_count")
            if count is not None:
                name = materialization.asset_key.to_user_string()
                self.rows[name] = max(self.rows.get(name, 0), int(count.value))
        elif kind == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            if not evaluation.passed:
                blocking = evaluation.severity == dg.AssetCheckSeverity.ERROR
                severity = "failed" if blocking else "warn"
                text = evaluation.description or ""
                self.checks.setdefault(evaluation.asset_key.to_user_string(), []).append(
                    f"{severity}: {evaluation.check_name}: {safe_text(text)[:160]}"
                )
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"):
            self.done += 1
            name = self.step_name(event)
            seconds = getattr(event.event_specific_data, "duration_ms", None)
            took = f"{seconds / 1000:.1f} s" if seconds is not None else ""
            if kind == "STEP_SUCCESS":
                count = self.rows.get(name)
                detail = f"{count:,} rows, {took}" if count else took
                status = f"ok ({detail})"
            elif kind == "STEP_SKIPPED":
                status = "skipped (an upstream step failed)"
            else:
                status = f"failed: {_failure_message(event)}"
                self.failures.append(f"{name} {status}")
            print(f"[{self.done}/{self.total}] {name} {status}", flush=True)
            for line in self.checks.pop(name, []):
                print(f"      check {line}", flush=True)


INTERRUPTS = ("DagsterExecutionInterruptedError", "KeyboardInterrupt")


def _ended_by_interrupts(events: Iterable[dg.DagsterEvent]) -> Iterator[dg.DagsterEvent]:
    """The run's events, with an interrupt ending the run even inside a step that has a
    RetryPolicy.

    Dagster's in-process executor turns an interrupt inside such a step into a retry
    (dagster-io/dagster#15026, open), so a canceled run went on with its other steps until the
    supervisor's grace period ran out and killed it, or finished as SUCCESS although the
    command said it was canceled. Thrown back in where the retry was announced, the interrupt
    ends the run the way Dagster ends any interrupted run: CANCELED once the supervisor has
    marked it CANCELING, failed when nobody asked (the supervisor died).
    """
    from dagster._core.errors import DagsterExecutionInterruptedError

    stream = iter(events)
    try:
        event = next(stream)
        while True:
            yield event
            retry = event.event_specific_data if event.is_step_up_for_retry else None
            if retry is not None and _caused_by_interrupt(retry.error):
                event = stream.throw(DagsterExecutionInterruptedError())
            else:
                event = next(stream)
    except StopIteration:
        return


def _caused_by_interrupt(error) -> bool:
    while error is not None:
        if error.cls_name in INTERRUPTS:
            return True
        error = error.cause
    return False


def _failure_message(event: dg.DagsterEvent) -> str:
    """The innermost cause of a step failure, one line (Dagster wraps the asset's exception)."""
    error = event.step_failure_data.error if event.step_failure_data else None
    while error is not None and error.cause is not None:
        error = error.cause
    if error is None:
        return "see the run in the Dagster UI"
    if error.cls_name in INTERRUPTS:
        return "interrupted"
    return safe_text(error.message.strip().split(": ", 1)[-1].splitlines()[0])


def process_start_ticks(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), to tell a reused pid apart;
    None when it is gone or a zombie. A zombie is dead but keeps its pid and start time until
    its parent reaps it, and a worker orphaned by a SIGKILLed supervisor is reaped by whoever
    adopted it: a container's init may never do so, and the run must not wait on a corpse."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _die_with_parent(supervisor_pid: int | None) -> None:
    """Ask the kernel for SIGTERM when the supervisor exits (Linux); elsewhere nothing."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        return
    # The supervisor died before we asked: we were adopted, by init or by a subreaper (a
    # systemd user instance, a container's init), so the parent's pid is no longer its own.
    if os.getppid() == 1 or (supervisor_pid is not None and os.getppid() != supervisor_pid):
        os.kill(os.getpid(), signal.SIGTERM)


def execute(spec: RunSpec, failures: list[str]) -> int:
    """Create and execute the run; 0 when it succeeded, 1 when it failed or was canceled.

    Why it failed (the first step failures, one line each) is appended to `failures`.
    """
    from dagster._core.execution.api import execute_run_iterator

    if spec.title:
        print(spec.title, flush=True)
    recon = dg.reconstructable(JOBS[spec.job])
    job_def = recon.get_definition()
    selection = {dg.AssetKey.from_user_string(a) for a in spec.assets} if spec.assets else None
    run_config = {
        "resources": {k: {"config": v} for k, v in spec.resources.items()},
        # The run's log stays in the Dagster instance; the terminal shows progress lines only.
        "loggers": {"console": {"config": {"log_level": "CRITICAL"}}},
    }
    if spec.executor:
        run_config["execution"] = spec.executor
    with dg.DagsterInstance.get() as instance:
        run = instance.create_run_for_job(
            job_def=job_def,
            run_id=spec.run_id,
            run_config=run_config,
            tags=spec.tags
            | {
                "capacity/worker_pid": str(os.getpid()),
                "capacity/worker_started": process_start_ticks(os.getpid()) or "",
            },
            asset_selection=frozenset(selection) if selection else None,
            job_code_origin=recon.get_python_origin(),
        )
        steps = job_def.get_subset(asset_selection=selection) if selection else job_def
        progress = Progress(total=len(steps.nodes_in_topological_order))
        began = time.monotonic()
        for event in _ended_by_interrupts(execute_run_iterator(recon, run, instance)):
            progress.record(event)
        final = instance.get_run_by_id(run.run_id)
    status = final.status if final else dg.DagsterRunStatus.FAILURE
    failures.extend(progress.failures)
    if status != dg.DagsterRunStatus.SUCCESS:
        print(
            f"run {run.run_id} {status.value.lower()} after {time.monotonic() - began:.1f} s",
            flush=True,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m capacity_pipelines.cli.worker '<JSON list of RunSpec>' [FAILURES_FD]`: the
    runs in order, in one process (the definitions load once); stops at the first run that does
    not succeed and writes why to the open file FAILURES_FD (one line per failed step) for the
    supervisor. Interrupted (SIGINT, SIGTERM) outside a run's execution, it exits 130 quietly."""
    args = sys.argv[1:] if argv is None else argv
    specs = specs_from_json(args[0])
    supervisor = specs[0].tags.get("capacity/supervisor_pid") if specs else None
    _die_with_parent(int(supervisor) if supervisor else None)
    # As Dagster does while it executes a run: SIGTERM (the supervisor's death) is an interrupt.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    failures: list[str] = []
    try:
        for spec in specs:
            code = execute(spec, failures)
            if code:
                return code
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the supervisor, not a traceback
        text = str(exc).strip().splitlines()
        failures.append(f"{type(exc).__name__}: {safe_text(text[0] if text else '')}")
        print(f"the run could not start: {failures[-1]}", file=sys.stderr)
        return 1
    finally:
        if len(args) > 1 and failures:
            with os.fdopen(int(args[1]), "w", encoding="utf-8", closefd=False) as out:
                out.write("\n".join(failures) + "\n")


if __name__ == "__main__":
    sys.exit(main())
