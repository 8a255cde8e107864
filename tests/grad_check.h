// Gradient checks by central finite differences, shared by the training-op and layer tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace whale::testing {

// n draws of N(mean, stddev^2) from rng, in order: the tests' random tensors.
inline std::vector<float> randn(size_t n, std::mt19937& rng, float stddev = 1.0f,
                                float mean = 0.0f) {
  std::normal_distribution<float> d(mean, stddev);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// The scalar loss sum_i y_i r_i, whose gradient with respect to y is r.
inline double project(const std::vector<float>& y, const std::vector<float>& r) {
  double s = 0.0;
  for (size_t i = 0; i < y.size(); i++) s += double(y[i]) * double(r[i]);
  return s;
}

// Compares the analytic gradient `grad` of `loss` with respect to `x` with central differences,
// perturbing each element of `x` by +-h in turn.
inline void expect_grad_matches(std::vector<float>& x, const std::vector<float>& grad,
                                const std::function<double()>& loss, const std::string& what,
                                float h = 1e-2f) {
  ASSERT_EQ(x.size(), grad.size()) << what;
  std::vector<float> numeric(x.size());
  double largest = 0.0;
  for (size_t i = 0; i < x.size(); i++) {
    const float saved = x[i];
    const float hi = saved + h, lo = saved - h;
    x[i] = hi;
    const double lp = loss();
    x[i] = lo;
    const double lm = loss();
    x[i] = saved;
    numeric[i] = float((lp - lm) / (double(hi) - double(lo)));
    largest = std::max(largest, std::fabs(double(numeric[i])));
  }
  ASSERT_GT(largest, 1e-3) << what << ": the loss does not depend on it, nothing is checked";
  for (size_t i = 0; i < x.size(); i++)
    EXPECT_NEAR(grad[i], numeric[i], 1e-2 * std::fabs(numeric[i]) + 1e-3 * largest)
        << what << "[" << i << "]";
}

}  // namespace whale::testing
