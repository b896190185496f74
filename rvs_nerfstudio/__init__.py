"""Reparameterized Volume Sampling (RVS) for nerfstudio.

Morozov, Rakitin, Desheulin, Vetrov, Struminsky. *Differentiable Rendering with Reparameterized
Volume Sampling*. AISTATS 2024, arXiv:2302.10970.

The plugin, bottom to top; a subpackage imports only the ones listed before it (``tests/test_layering.py``
reads every import and enforces this):

- ``core``: the sampling math in pure torch (density splines, reparameterized inverse CDF). No nerfstudio.
- ``engine``: fixes for nerfstudio's traps (``compat``) and the crash-safe trainer with its loss guard.
- ``data``: data parsers (LLFF, layout auto-detection) and the synthetic scene generator.
- ``samplers``: nerfstudio ``Sampler`` adapters of the core (proposal levels, Monte Carlo points). Imports ``core``.
- ``models``: ``rvs-nerfacto`` and ``rvs-mc``. Imports ``core``, ``samplers``, ``engine``, ``data`` (the metadata
  that parsers hand to models).
- ``method_configs``: the entry points that every ``ns-*`` command imports; cheap, and never imports
  ``nerfstudio.configs.method_configs``. Imports ``models``, ``data``, ``engine``.

Beside the plugin, ``tools`` holds research tooling: the in-process runner, presets, ``rvs-bench``, ``rvs-demo``
and the one-ray study. It may import anything; nothing outside ``tools`` imports it.
"""
