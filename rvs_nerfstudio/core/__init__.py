"""The sampling core: density splines along rays and reparameterized inverse-transform sampling, in pure torch.

Imports no nerfstudio and no other part of the plugin.
"""
