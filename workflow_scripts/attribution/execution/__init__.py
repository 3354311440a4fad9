"""Sandboxed execution and scoring of generated code (HumanEval+, CRUXEval-O/I, APPS).

Entry points (also used by the pipeline's ``references``, ``execute`` and ``score`` rules):

* ``engine.execute_samples(benchmark, tasks, samples, out_path, workers=...)`` -> executions
  frame, written to ``out_path`` (Parquet), resumable after a kill;
* ``scoring.score_executions(benchmark, executions, ks)`` -> metrics dict;
* ``references.write_references`` / ``read_references`` (reference outputs and timings);
* ``python -m attribution evaluate ...`` (``attribution.execution.cli``).

Modules: ``sandbox`` (the one place untrusted code runs), ``checker`` (the ``Checker``
protocol), ``humanevalplus`` / ``cruxeval`` / ``apps`` (the official checkers), ``verdicts``
(statuses and reasons), ``options`` (limits and comparison settings), ``references`` (the
file format) and ``reference_run`` (computing them), ``engine``, ``scoring``, ``passk``,
``cli``. Nothing is
imported here, so sandbox workers (which import ``attribution.execution.sandbox``) stay small
and scoring never loads the execution engine.
"""
