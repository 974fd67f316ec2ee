"""``dcsbm sweep``: a sweep file (a base config and axes) expanded into validated points, each run
as train → gate → analyze in its own results folder through submitit (local processes, SLURM
job arrays, or inline), with a status table in ``sweeps/<name>/``."""

from .execute import (
    EXECUTORS,
    ExecutorUnavailable,
    PointJob,
    SlurmSettings,
    SweepOutcome,
    SweepSettings,
    assess_all,
    executor_problem,
    make_executor,
    point_job,
    print_plan,
    run_sweep,
)
from .plan import Point, SweepError, SweepPlan, load_sweep, sweep_from_dict
from .status import assess, read_status

__all__ = [
    "EXECUTORS",
    "ExecutorUnavailable",
    "Point",
    "PointJob",
    "SlurmSettings",
    "SweepError",
    "SweepOutcome",
    "SweepPlan",
    "SweepSettings",
    "assess",
    "assess_all",
    "executor_problem",
    "load_sweep",
    "make_executor",
    "point_job",
    "print_plan",
    "read_status",
    "run_sweep",
    "sweep_from_dict",
]
