"""Serving on NVIDIA Triton Inference Server: `mp-deploy serve` (PyTriton, one machine) and `mp-deploy triton-repo`
(a model repository for NVIDIA's Triton container, clusters). PyTriton pins numpy<2: it lives in a venv of its own
(the `serve` extra; README), and only mp_deploy.serve.server imports it."""
