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

// A parser's message cut to 200 characters (nlohmann's quotes the token it stopped at, a 1 MB number included).
std::string shortened(const std::string& message);

// What Python's parse_json (mp_deploy/files.py) refuses before or while parsing and nlohmann's parser takes, so
// that both sides refuse the same documents: nesting deeper than 64 brackets (MAX_JSON_DEPTH: a linear scan
// outside strings, as its _depth), an integer literal of more than 4300 digits (what Python's int() converts by
// default), a leading UTF-8 byte order mark (json.loads: "Unexpected UTF-8 BOM"). mp::Error names `where`.
void check_json_text(const std::string& text, const std::string& where);

}  // namespace mp
