"""``geoaudit demo``: the paper's experiment on GeoShapes, with a truth known both ways.

Three GeoShapes datasets differ only in the bias planted in them:

* ``capture``: image capture quality falls with income (blur, low light, sensor noise, JPEG);
  a bias robust training can be expected to reduce;
* ``colour``: a colour shortcut holds in rich countries only; small perturbations cannot
  remove it;
* ``null``: no bias at all.

On each, populations of models that differ only in their training method are trained with
the same seeds (paired): plain, PGD-DRO and perceptual-DRO (Algorithm 2 then Algorithm 3),
and, on ``capture``, an *oracle* trained with the capture corruption itself as augmentation
(Algorithm 3 on the training images plus capture-corrupted copies at severities drawn from
U(0, 1)), the standard remedy for that bias.  Every model is audited (GLS slope of per-country accuracy on log
GDP), and the comparisons named up front in :data:`COMPARISON_PLAN` are tested: the primary
one (the paper's claim) at alpha, the others with Holm's adjustment.  The oracle is the
positive control (the test must see an improvement that is there), a check of the experiment
rather than a claim, tested alone at alpha; the ``null`` (and, as an expectation rather than a
certainty, ``colour``) comparisons are negative checks (it should stay silent).

Stages (each resumes when the command is run again with the same settings)::

    OUT/
      settings.json                      what this run was asked to do (a re-run must match)
      data/<mechanism>/                  GeoShapes (Parquet + dataset card)
      populations/<mechanism>/<method>/  one population (Algorithm 2's D, then K checkpoints)
      audits/<mechanism>/<method>/       report.json + report.html of each population
      attacks/                           attack quality on a sample of test images
      figures/                           the report's figures as PNG
      report.html, report.json           the combined report

The parts, one idea each: :mod:`geoaudit._demo.plan` (the comparisons and their tests),
:mod:`geoaudit._demo.settings` (sizes, presets, the paper's settings),
:mod:`geoaudit._demo.methods` (how each population is trained), :mod:`geoaudit._demo.folder`
(resuming), :mod:`geoaudit._demo.attack_quality`, :mod:`geoaudit._demo.assemble` (the report)
and :mod:`geoaudit._demo.run` (:func:`run_demo`).
"""
from geoaudit._demo.assemble import DemoResult
from geoaudit._demo.methods import oracle_training_data
from geoaudit._demo.plan import (
    ALPHA,
    COMPARISON_PLAN,
    MECHANISMS,
    METHOD_LABELS,
    METHODS,
    PlannedComparison,
    comparison_plan,
    holm_adjust,
    paired_difference_ci,
    run_comparisons,
)
from geoaudit._demo.run import run_demo
from geoaudit._demo.settings import (
    ORACLE_COPIES,
    PAPER_SETTINGS,
    PRESETS,
    DemoSettings,
    demo_settings,
    pieapp_available,
    settings_table,
)

__all__ = [
    "ALPHA",
    "COMPARISON_PLAN",
    "MECHANISMS",
    "METHODS",
    "METHOD_LABELS",
    "ORACLE_COPIES",
    "PAPER_SETTINGS",
    "PRESETS",
    "DemoResult",
    "DemoSettings",
    "PlannedComparison",
    "comparison_plan",
    "demo_settings",
    "holm_adjust",
    "oracle_training_data",
    "paired_difference_ci",
    "pieapp_available",
    "run_comparisons",
    "run_demo",
    "settings_table",
]
