"""`mp-deploy build` (its own main) with an ONNX export that writes part of its file and then hangs: the test
kills it with SIGTERM and checks that no temporary is left. argv[1]: the output folder."""
import sys
import time

from mp_deploy import cli
from mp_deploy.backends import onnx as onnx_backend
from mp_deploy.files import atomic_write


def hang(network, path, contract=None, **kw):
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half")
        time.sleep(600)

    atomic_write(path, write)


onnx_backend.export_onnx = hang
sys.exit(cli.main(["build", "--task", "pose", "--backend", "onnx", "--output", sys.argv[1]]))
