"""Latency of one task network per backend, per stage and end to end: `mp-deploy bench` (mp_deploy/latency.py).

    python benchmarks/latency.py --task depth --batches 1,8 --height 480 --width 480
"""
import sys

from mp_deploy import cli

if __name__ == "__main__":
    sys.exit(cli.main(["bench", *sys.argv[1:]]))
