#include "contract.h"

#include "mp_deploy/engine.h"
#include "schema.h"
#include "zip.h"

namespace mp {
namespace {

using json = nlohmann::json;

const uint64_t kMaxContractBytes = 1 << 20;

json read_contract(const std::string& artifact) {
  const json& schema = artifact_schema();
  const std::string entry = schema["contract_entry"];
  std::vector<ZipEntry> found;
  for (auto& e : zip_entries(artifact)) {  // <root>/extra/mp_deploy_contract.json, whatever the root is called
    size_t slash = e.name.find('/');
    if ((slash == std::string::npos ? e.name : e.name.substr(slash + 1)) == entry) found.push_back(e);
  }
  if (found.size() != 1)
    throw Error(artifact + " holds " + (found.empty() ? "no contract" : "several contracts") + " (" + entry +
                "): not built by mp-deploy build, or altered");
  std::string text = zip_read_stored(artifact, found[0], kMaxContractBytes);
  check_json_text(text, "the contract inside " + artifact);  // what Python's parse_json refuses too
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw Error("the contract inside " + artifact + " is not valid JSON: " + shortened(e.what()));
  }
}

}  // namespace

void check_embedded_contract(const std::string& artifact, const json& meta) {
  const json& schema = artifact_schema();
  json contract = read_contract(artifact);
  const json& names = schema["contract_fields"];
  bool same_fields = contract.is_object() && contract.size() == names.size();
  for (const auto& name : names) same_fields = same_fields && contract.contains(name.get<std::string>());
  if (!same_fields)
    throw Error("the contract inside " + artifact + " does not have the fields " + names.dump());
  try {
    check_schema({{"type", "object"}, {"fields", schema["sidecar"]["fields"]}, {"additional", false}}, contract);
  } catch (const Error& e) {
    throw Error("the contract inside " + artifact + ": " + e.what());
  }
  for (const auto& name : names) {
    const std::string key = name;
    // dump(), not ==: as Python's json.dumps comparison, 10 and 10.0 differ (keys are sorted in both)
    if (meta[key].dump() != contract[key].dump())
      throw Error(artifact + ": sidecar field '" + key + "' differs from the contract inside the artifact (" +
                  printable(meta[key].dump()) + " vs " + printable(contract[key].dump()) + ")");
  }
}

}  // namespace mp
