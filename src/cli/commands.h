// Subcommands of the `whale` binary.
#pragma once

#include <CLI/CLI.hpp>

namespace whale::cli {

void register_commands(CLI::App& app);
int run_selected(CLI::App& app);

}  // namespace whale::cli
