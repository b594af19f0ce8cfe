// The artifact schema (mp_deploy/artifact_schema.json, compiled in) and its validator: the C++ twin of
// check_schema / check_consistency in mp_deploy/artifacts.py. Every problem is one mp::Error naming the field.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace mp {

// The parsed schema document (its constants too: format, max_pixels, contract_fields, ...).
const nlohmann::json& artifact_schema();

// Throws mp::Error when `value` does not match the schema node; `where` is the field path ("" for the root).
void check_schema(const nlohmann::json& node, const nlohmann::json& value, const std::string& where = "");

// What the schema cannot say: fields that must agree with each other (a sidecar that passed check_schema).
void check_consistency(const nlohmann::json& meta);

// A value for an error message: at most 80 bytes, control characters replaced, so the message stays one line.
std::string printable(const std::string& text);

}  // namespace mp
