"""Sweeps: many runs at once, on this machine (a thin process pool) or a Ray cluster.

A sweep file (:mod:`harness.sweep.spec`) names run configs, a matrix of overrides and seeds; the
sweep directory holds its own append-only record (``sweep.jsonl``, :mod:`harness.sweep.record`:
which runs exist, where each ran, how each ended), the resolved config of every run, and every run
as an ordinary run directory under ``runs/`` (so ``report``, ``replay``, ``resume`` work on each).
:mod:`harness.sweep.sweep` decides what to do with each run (start, resume, leave alone) and hands
the work to an executor: :mod:`harness.sweep.local` (processes on this machine) or
:mod:`harness.sweep.ray_executor` (one Ray task per run, the head keeping a copy of every run).
"""
