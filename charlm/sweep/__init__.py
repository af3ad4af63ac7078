"""Hyperparameter sweeps on Optuna: a YAML file in, ordinary run directories and a results table out.

- ``spec``: reading and checking a sweep file (``load_sweep``, ``SweepSpec``, ``describe``);
- ``study``: the study in its storage, the one module that speaks Optuna;
- ``scheduler``: ``run_sweep``, which runs trials as processes, ``workers`` at a time, and resumes;
- ``trial``: one trial's process (``python -m charlm.sweep.trial JOB``), training with the pruner;
- ``results``: the results table, results.csv and the ``best`` link.
"""

from charlm.sweep.results import TrialRow, results_table, write_results
from charlm.sweep.scheduler import report, run_sweep
from charlm.sweep.spec import SweepSpec, describe, load_sweep

__all__ = ["SweepSpec", "TrialRow", "describe", "load_sweep", "report", "results_table", "run_sweep",
           "write_results"]
