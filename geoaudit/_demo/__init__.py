"""The parts of :mod:`geoaudit.demo`, one idea each (the public names live in ``geoaudit.demo``).

``plan`` (the comparisons and their tests), ``settings`` (sizes, presets, the paper's settings),
``methods`` (how each population is trained), ``folder`` (resuming), ``attack_quality``,
``assemble`` (the report) and ``run`` (:func:`geoaudit.demo.run_demo`).
"""
