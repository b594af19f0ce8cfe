"""The artifact contract's format: the one schema (mp_deploy/artifact_schema.json, which the C++ library compiles
in), its constants, the contract's JSON form and the GPU description sidecars carry. Imports nothing of ours but
errors, so that every backend module can read it (mp_deploy.artifacts reads and checks whole sidecars)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

SCHEMA = json.loads((Path(__file__).parent / "artifact_schema.json").read_text())
FORMAT = SCHEMA["format"]
CONTRACT_FIELDS = tuple(SCHEMA["contract_fields"])
CONTRACT_ENTRY = SCHEMA["contract_entry"]  # inside the .pt2 archive's root folder
ONNX_METADATA_KEY = SCHEMA["onnx_metadata_key"]
MAX_PIXELS = SCHEMA["max_pixels"]  # per image, checked before any conversion (Python and C++ alike)
MAX_SIDECAR_BYTES = 1 << 20


def contract_json(contract: dict) -> str:
    return json.dumps(contract, sort_keys=True, separators=(",", ":"))


def gpu_info(device=None) -> dict | None:
    if not torch.cuda.is_available():
        return None
    i = torch.device(device or "cuda").index or 0
    major, minor = torch.cuda.get_device_capability(i)
    return {"name": torch.cuda.get_device_name(i), "compute_capability": f"{major}.{minor}"}
