// whale: one binary, one subcommand per job.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"whale: run DeepSeek-architecture models on CPU"};
  app.require_subcommand(1);
  whale::cli::register_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  try {
    return whale::cli::run_selected(app);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "whale: error: %s\n", e.what());
    return 1;
  }
}
