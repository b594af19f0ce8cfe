// The contract an artifact carries inside: for a .pt2 (AOTInductor, torch-tensorrt), the stored zip entry
// <archive root>/extra/mp_deploy_contract.json written by embed_contract_pt2 (mp_deploy/artifacts.py).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace mp {

// Reads the contract inside the .pt2 `artifact` and checks that the sidecar `meta` (already schema-checked)
// agrees with it field by field; throws mp::Error naming the first field that differs, or saying why the
// contract cannot be read (missing: not built by `mp-deploy build`, or altered).
void check_embedded_contract(const std::string& artifact, const nlohmann::json& meta);

}  // namespace mp
