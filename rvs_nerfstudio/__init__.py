"""Reparameterized Volume Sampling (RVS) for nerfstudio.

Morozov, Rakitin, Desheulin, Vetrov, Struminsky. *Differentiable Rendering with Reparameterized
Volume Sampling*. AISTATS 2024, arXiv:2302.10970.

Layers: ``rvs_nerfstudio.spline`` (pure torch, no nerfstudio import) → ``rvs_nerfstudio.sampler``
(nerfstudio adapter) → models and method configs.
"""
