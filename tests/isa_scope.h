// Selects an instruction set (kernels/cpu.h) for the duration of a scope, for tests that run every
// kernel path on one machine.
#pragma once

#include "kernels/cpu.h"

namespace whale {

class IsaScope {
 public:
  explicit IsaScope(Isa isa) : saved_(active_isa()) { set_isa(isa); }
  ~IsaScope() { set_isa(saved_); }
  IsaScope(const IsaScope&) = delete;
  IsaScope& operator=(const IsaScope&) = delete;

 private:
  Isa saved_;
};

}  // namespace whale
