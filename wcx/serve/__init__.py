"""Serving a calibrated cascade from NVIDIA Triton Inference Server.

* :mod:`wcx.serve.contract`: the tensors a served cascade takes and returns, and their checks;
* :mod:`wcx.serve.metrics`: per-stage pass fractions, accept rate and latency quantiles;
* :mod:`wcx.serve.server`: ``wcx serve``, the cascade behind Triton through PyTriton.

PyTriton and Triton's clients are imported only where they are used (the ``serve`` extra).
"""
