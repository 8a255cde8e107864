// Request-parsing helpers of serve/api.cpp that the Anthropic route (serve/anthropic.cpp) shares:
// typed field access whose errors are 400 ApiErrors naming the field.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "serve/api.h"

namespace whale::serve::detail {

[[noreturn]] void fail(const std::string& param, const std::string& message);
[[noreturn]] void wrong_type(const std::string& param, const char* expected,
                             const nlohmann::json& j);
// The value of `key`, or nullptr when it is absent or null.
const nlohmann::json* field(const nlohmann::json& obj, const char* key);
bool get_bool(const nlohmann::json& j, const std::string& param);
const std::string& get_string(const nlohmann::json& j, const std::string& param);
double get_number(const nlohmann::json& j, const std::string& param, double lo, double hi,
                  bool lo_open = false);
int64_t get_int(const nlohmann::json& j, const std::string& param);
std::string index_param(const std::string& base, size_t i);
std::string excerpt(std::string_view s);
std::shared_ptr<const JsonSchema> compile_schema(const nlohmann::json& schema,
                                                 const std::string& param);
std::string describe_json_error(const nlohmann::json::exception& e);
bool valid_function_name(const std::string& n);
// A tool's name: a valid function name not yet in req.tools.
std::string tool_name(const nlohmann::json& name, const GenRequest& req, const std::string& param);
// tool_choice names one of req.tools.
void check_tool_named(const GenRequest& req, const std::string& param);

}  // namespace whale::serve::detail
