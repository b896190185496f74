"""Nerfstudio ``Sampler`` adapters of the RVS core: proposal levels (``proposal``) and Monte Carlo points
(``monte_carlo``)."""
