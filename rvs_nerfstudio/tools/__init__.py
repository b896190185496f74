"""Research tooling beside the plugin: in-process runner, presets, ``rvs-bench``, ``rvs-demo``, the one-ray study.

Nothing outside this package imports it.
"""
