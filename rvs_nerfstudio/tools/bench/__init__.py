"""``rvs-bench``: benchmarks of the methods (``quality``), their training steps (``steps``) and the sampler
(``sampler``), sharing one preset table, method parser, report caption and overwrite check (``common``)."""
