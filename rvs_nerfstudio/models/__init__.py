"""The plugin's models: ``rvs-nerfacto`` (``rvs_nerfacto``) and ``rvs-mc`` (``rvs_mc``)."""
