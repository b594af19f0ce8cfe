#include "schema.h"

#include <cmath>

#include "artifact_schema.h"  // generated from mp_deploy/artifact_schema.json
#include "mp_deploy/engine.h"
#include "pattern.h"

namespace mp {
namespace {

using json = nlohmann::json;

std::string label(const std::string& where) { return where.empty() ? "the JSON" : where; }

std::string join(const json& items) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + item.get<std::string>();
  return out;
}

std::string number_text(const json& node, const char* key, const char* fallback) {
  return node.contains(key) ? node[key].dump() : fallback;
}

void check_number(const json& node, const json& value, const std::string& where) {
  bool integer = node["type"] == "integer";
  if (!value.is_number() || (integer && !value.is_number_integer()))
    throw Error(label(where) + (integer ? " must be an integer" : " must be a number") + ", got " +
                (value.is_number() ? value.dump() : value.type_name()));
  double v = value.get<double>();
  if (!std::isfinite(v)) throw Error(label(where) + " must be finite");
  bool below = node.contains("min") && v < node["min"].get<double>();
  if (below || (node.contains("max") && v > node["max"].get<double>()))
    throw Error(label(where) + " is " + value.dump() + ", outside [" + number_text(node, "min", "-inf") + ", " +
                number_text(node, "max", "inf") + "]");
}

void check_string(const json& node, const json& value, const std::string& where) {
  if (!value.is_string()) throw Error(label(where) + " must be a string, got " + value.type_name());
  const std::string& s = value.get_ref<const std::string&>();
  if (node.contains("enum")) {
    bool known = false;
    for (const auto& option : node["enum"]) known |= option == value;
    if (!known) throw Error(label(where) + " is '" + printable(s) + "', not one of " + join(node["enum"]));
  }
  if (node.contains("pattern") && !pattern_match(node["pattern"].get<std::string>(), s))
    throw Error(label(where) + " '" + printable(s) + "' does not match " + node["pattern"].get<std::string>());
}

void check_array(const json& node, const json& value, const std::string& where) {
  if (!value.is_array()) throw Error(label(where) + " must be a list, got " + value.type_name());
  if (node.contains("length") && value.size() != node["length"].get<size_t>())
    throw Error(label(where) + " must have " + node["length"].dump() + " items, got " + std::to_string(value.size()));
  if (node.contains("max_items") && value.size() > node["max_items"].get<size_t>())
    throw Error(label(where) + " has " + std::to_string(value.size()) + " items, at most " + node["max_items"].dump() +
                " allowed");
  for (size_t i = 0; i < value.size(); ++i)
    check_schema(node["items"], value[i], where + "[" + std::to_string(i) + "]");
}

void check_object(const json& node, const json& value, const std::string& where) {
  if (!value.is_object()) throw Error(label(where) + " must be an object, got " + value.type_name());
  std::string missing;
  for (const auto& key : node.value("required", json::array()))
    if (!value.contains(key.get<std::string>())) missing += (missing.empty() ? "" : ", ") + key.get<std::string>();
  if (!missing.empty()) throw Error(label(where) + " lacks " + missing);
  static const json no_fields = json::object();
  const json& fields = node.contains("fields") ? node["fields"] : no_fields;
  const json additional = node.value("additional", json(false));
  for (const auto& [key, item] : value.items()) {
    std::string path = where.empty() ? key : where + "." + key;
    if (fields.contains(key))
      check_schema(fields[key], item, path);
    else if (additional == false)
      throw Error(label(where) + " has an unknown field '" + printable(key) + "'");
    else
      check_schema(additional, item, path);
  }
}

// Every pattern of the schema, tried once: one this validator cannot read fails every load, not only those
// of the (rarer) sidecars that use its field.
void check_patterns(const json& node) {
  if (node.is_object() && node.contains("pattern")) pattern_match(node["pattern"].get<std::string>(), "");
  if (node.is_structured())
    for (const auto& child : node) check_patterns(child);
}

}  // namespace

const json& artifact_schema() {
  static const json schema = [] {
    json parsed = json::parse(kArtifactSchemaJson);  // valid: CMake compiled it in from the file
    check_patterns(parsed);
    return parsed;
  }();
  return schema;
}

std::string printable(const std::string& text) {
  std::string out = text.substr(0, 80);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return text.size() > 80 ? out + "..." : out;
}

std::string shortened(const std::string& message) {
  return message.size() > 200 ? message.substr(0, 200) + "..." : message;
}

void check_json_text(const std::string& text, const std::string& where) {
  const int kMaxDepth = 64;          // mp_deploy.files.MAX_JSON_DEPTH
  const size_t kMaxIntDigits = 4300;  // sys.get_int_max_str_digits()'s default
  if (text.compare(0, 3, "\xEF\xBB\xBF") == 0)
    throw Error(where + " is not valid JSON: it starts with a UTF-8 byte order mark");
  auto digit = [&](size_t i) { return i < text.size() && text[i] >= '0' && text[i] <= '9'; };
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char ch = text[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > kMaxDepth)
        throw Error(where + ": JSON nested deeper than " + std::to_string(kMaxDepth) + " levels");
    } else if (ch == ']' || ch == '}') {
      --depth;
    } else if (ch == '-' || digit(i)) {  // a number: -?digits(.digits)?([eE][+-]?digits)?, consumed whole
      size_t end = i + (ch == '-');
      while (digit(end)) ++end;
      size_t int_digits = end - i - (ch == '-');
      bool integer = true;
      if (end < text.size() && text[end] == '.') {
        integer = false;
        for (++end; digit(end);) ++end;
      }
      if (end < text.size() && (text[end] == 'e' || text[end] == 'E')) {
        integer = false;
        if (++end < text.size() && (text[end] == '+' || text[end] == '-')) ++end;
        while (digit(end)) ++end;
      }
      if (integer && int_digits > kMaxIntDigits)
        throw Error(where + " is not valid JSON: an integer of " + std::to_string(int_digits) + " digits, more than " +
                    std::to_string(kMaxIntDigits) + " (Python's int() limit)");
      i = end - 1;  // end > i: at least the '-' or one digit
    }
  }
}

void check_schema(const json& node, const json& value, const std::string& where) {
  if (value.is_null()) {
    if (node.value("nullable", false)) return;
    throw Error(label(where) + " must not be null");
  }
  const std::string type = node.at("type").get<std::string>();
  if (type == "any") return;
  if (type == "string")
    check_string(node, value, where);
  else if (type == "integer" || type == "number")
    check_number(node, value, where);
  else if (type == "boolean") {
    if (!value.is_boolean()) throw Error(label(where) + " must be true or false, got " + value.type_name());
  } else if (type == "array")
    check_array(node, value, where);
  else if (type == "object")
    check_object(node, value, where);
  else  // a schema file newer than this code
    throw Error("schema node type '" + type + "' at " + label(where) + " is unknown to this mp_deploy_cpp");
}

void check_consistency(const json& meta) {
  const json& schema = artifact_schema();
  const std::string task = meta["task"];
  if (meta["preset"]["task"] != task)
    throw Error("preset.task '" + meta["preset"]["task"].get<std::string>() + "' differs from task '" + task + "'");
  const json& out = meta["output"];
  if (out["name"] != schema["output_names"].value(task, "") || out["kind"] != schema["output_kinds"].value(task, ""))
    throw Error("output.name / output.kind '" + out["name"].get<std::string>() + "' (" +
                out["kind"].get<std::string>() + ") is not a " + task + " output");
  // the task-specific output fields (the schema's output_fields, as check_consistency in mp_deploy/artifacts.py)
  for (const auto& key : schema["output_fields"][task])
    if (!out.contains(key.get<std::string>()))
      throw Error("output." + key.get<std::string>() + " is missing: a " + task + " output needs it");
  if (meta["device"] == "cuda" && meta["gpu"].is_null()) throw Error("gpu is null: a cuda artifact must name its gpu");
  const json& range = meta["input"]["range"];
  if (!(range[0].get<double>() < range[1].get<double>())) throw Error("input.range " + range.dump() + " is empty");
  const json& shapes = meta["shapes"];
  for (const char* name : {"batch", "height", "width"}) {
    const json& r = shapes[name];
    int64_t lo = r[0], opt = r[1], hi = r[2], m = shapes["multiple_of"];
    if (!(lo <= opt && opt <= hi))
      throw Error("shapes." + std::string(name) + " " + r.dump() + " is not min <= opt <= max");
    if (std::string(name) != "batch" && lo != hi && (lo % m || opt % m || hi % m))
      throw Error("shapes." + std::string(name) + " " + r.dump() + " is dynamic: its sizes must be multiples of "
                  "shapes.multiple_of (" + std::to_string(m) + ")");
  }
}

}  // namespace mp
