"""Load test of `mp-deploy serve` on loopback (mp_deploy/serve/load.py): concurrency 1, 8 and 32 for a fixed number
of requests each; throughput, p50/p95/p99 latency and the server's memory into benchmarks/results/serve-*.

    python benchmarks/load_test.py --engine artifacts/depth-nyu-tiny-fp32.onnx [--requests 96] [--concurrency 1,8,32]

The server runs in the serve venv (.venv-serve, or $MP_DEPLOY_SERVE_PYTHON: README, Serving); this script in the
main one. Exit 1 when a request failed, a level ran out of time or the server's memory grew beyond the margin.
"""
import sys

from mp_deploy.serve.load import main

if __name__ == "__main__":
    sys.exit(main())
