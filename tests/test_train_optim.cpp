// AdamW, learning-rate schedules, gradient clipping and bf16 rounding. AdamW, clipping and the bf16
// rounding are checked against PyTorch (tests/fixtures/optim/*.json, written by
// tests/reference/gen_optim_fixture.py); the schedules against hand-computed values.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "grad_check.h"
#include "train/optim.h"

using namespace whale::train;
using json = nlohmann::json;

namespace {

json load_fixture(const std::string& name) {
  const std::string path = std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/optim/" + name;
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return json::parse(f);
}

// JSON floats, with "inf" / "-inf" strings for infinities.
float as_float(const json& v) {
  if (v.is_string()) return v.get<std::string>() == "inf" ? INFINITY : -INFINITY;
  return v.get<float>();
}

std::vector<float> floats(const json& a) {
  std::vector<float> out;
  for (const json& v : a) out.push_back(as_float(v));
  return out;
}

// Owns the storage of a list of ParamTensor.
struct Params {
  std::vector<std::vector<float>> data, grad;
  std::vector<ParamTensor> list;
  // Copies into the existing buffer (assigning a new vector would move the pointer).
  void set_grad(size_t i, const std::vector<float>& g) {
    ASSERT_EQ(g.size(), grad[i].size());
    std::copy(g.begin(), g.end(), grad[i].begin());
  }
  void add(const std::string& name, std::vector<int64_t> shape, std::vector<float> init,
           bool decay = true) {
    data.push_back(std::move(init));
    grad.emplace_back(data.back().size(), 0.0f);
    list.push_back({name, std::move(shape), nullptr, nullptr, int64_t(data.back().size()), decay});
    for (size_t i = 0; i < list.size(); i++) {  // vectors may have moved
      list[i].data = data[i].data();
      list[i].grad = grad[i].data();
    }
  }
};

std::vector<float> random_vector(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  return whale::testing::randn(n, rng, scale);
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
}

// |got - want| <= atol + rtol * |want|, element-wise; returns the largest relative miss.
double expect_close(std::span<const float> got, const std::vector<float>& want, double rtol,
                    double atol, const std::string& what) {
  EXPECT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  for (size_t i = 0; i < std::min(got.size(), want.size()); i++) {
    const double err = std::fabs(double(got[i]) - double(want[i]));
    EXPECT_LE(err, atol + rtol * std::fabs(double(want[i])))
        << what << "[" << i << "]: " << got[i] << " vs " << want[i];
    if (want[i] != 0) worst = std::max(worst, err / std::fabs(double(want[i])));
  }
  return worst;
}

}  // namespace

// ------------------------------------------------------------------ AdamW

TEST(TrainOptim, AdamWMatchesPyTorch) {
  const json fx = load_fixture("adamw.json");
  AdamWConfig c;
  c.beta1 = fx["beta1"].get<float>();
  c.beta2 = fx["beta2"].get<float>();
  c.eps = fx["eps"].get<float>();
  c.weight_decay = fx["weight_decay"].get<float>();
  Params ps;
  for (const json& t : fx["tensors"])
    ps.add(t["name"], t["shape"].get<std::vector<int64_t>>(), floats(t["init"]),
           t["decay"].get<bool>());
  AdamW opt(ps.list, c);
  double worst = 0;
  int64_t k = 0;
  for (const json& s : fx["steps"]) {
    for (size_t i = 0; i < ps.list.size(); i++) ps.set_grad(i, floats(s["grads"][i]));
    opt.step(s["lr"].get<float>());
    EXPECT_EQ(opt.step_count(), ++k);
    for (size_t i = 0; i < ps.list.size(); i++) {
      const std::string at = ps.list[i].name + " step " + std::to_string(k);
      // f32 arithmetic in a possibly different order than torch's: a few ulp
      worst = std::max(worst,
                       expect_close(ps.data[i], floats(s["params"][i]), 1e-6, 1e-9, "param " + at));
      expect_close(opt.exp_avg(i), floats(s["exp_avg"][i]), 1e-6, 1e-12, "exp_avg " + at);
      expect_close(opt.exp_avg_sq(i), floats(s["exp_avg_sq"][i]), 1e-6, 1e-15, "exp_avg_sq " + at);
    }
  }
  std::printf("AdamW vs torch.optim.AdamW, 6 steps: max relative parameter error %.2e\n", worst);
}

// A restored optimiser (moments and step count copied, as from a checkpoint) continues exactly.
TEST(TrainOptim, AdamWResumesExactly) {
  auto run = [](int steps_before, bool restore, Params& ps) {
    ps.add("a", {300}, random_vector(300, 1));
    ps.add("b", {7}, random_vector(7, 2), false);
    AdamW opt(ps.list);
    auto grads = [&](int s) {
      for (size_t i = 0; i < ps.list.size(); i++)
        ps.set_grad(i, random_vector(ps.data[i].size(), 100 + uint32_t(s) * 7 + uint32_t(i)));
    };
    for (int s = 0; s < steps_before; s++) grads(s), opt.step(1e-2f * float(s + 1));
    std::unique_ptr<AdamW> resumed;
    AdamW* o = &opt;
    if (restore) {
      resumed = std::make_unique<AdamW>(ps.list);
      for (size_t i = 0; i < ps.list.size(); i++) {
        std::copy(opt.exp_avg(i).begin(), opt.exp_avg(i).end(), resumed->exp_avg(i).begin());
        std::copy(opt.exp_avg_sq(i).begin(), opt.exp_avg_sq(i).end(),
                  resumed->exp_avg_sq(i).begin());
      }
      resumed->set_step_count(opt.step_count());
      o = resumed.get();
    }
    for (int s = steps_before; s < 6; s++) grads(s), o->step(1e-2f * float(s + 1));
    EXPECT_EQ(o->step_count(), 6);
  };
  Params straight, resumed, broken;
  run(3, false, straight);
  run(3, true, resumed);
  for (size_t i = 0; i < 2; i++) EXPECT_TRUE(bit_equal(straight.data[i], resumed.data[i]));
  // and the comparison can fail: the bias correction depends on the step count
  broken.add("a", {300}, random_vector(300, 1));
  broken.add("b", {7}, random_vector(7, 2), false);
  {
    AdamW opt(broken.list);
    for (int s = 0; s < 6; s++) {
      for (size_t i = 0; i < 2; i++)
        broken.set_grad(i,
                        random_vector(broken.data[i].size(), 100 + uint32_t(s) * 7 + uint32_t(i)));
      if (s == 3) opt.set_step_count(0);
      opt.step(1e-2f * float(s + 1));
    }
  }
  EXPECT_FALSE(bit_equal(straight.data[0], broken.data[0]));
}

// The multi-threaded path (large tensors) equals the single-threaded one bit for bit, and a
// plain double-precision loop to f32 accuracy.
TEST(TrainOptim, AdamWThreadsAndLargeTensors) {
  const size_t n = 100003;
  std::vector<float> out[2];
  const int saved = omp_get_max_threads();
  for (int threads : {1, 2}) {
    omp_set_num_threads(threads);
    Params ps;
    ps.add("big", {int64_t(n)}, random_vector(n, 3));
    AdamW opt(ps.list, {0.8f, 0.99f, 1e-6f, 0.05f});
    for (int s = 0; s < 3; s++) {
      ps.set_grad(0, random_vector(n, 10 + uint32_t(s), 0.1f));
      opt.step(0.01f);
    }
    out[threads - 1] = ps.data[0];
  }
  omp_set_num_threads(saved);
  EXPECT_TRUE(bit_equal(out[0], out[1]));
  // independent reference in double
  std::vector<double> p(n), m(n, 0), v(n, 0);
  const std::vector<float> p0 = random_vector(n, 3);
  for (size_t j = 0; j < n; j++) p[j] = p0[j];
  for (int s = 0; s < 3; s++) {
    const std::vector<float> g = random_vector(n, 10 + uint32_t(s), 0.1f);
    const double t = s + 1, b1 = 0.8f, b2 = 0.99f, lr = 0.01f, eps = 1e-6f, wd = 0.05f;
    for (size_t j = 0; j < n; j++) {
      p[j] -= lr * wd * p[j];
      m[j] = b1 * m[j] + (1 - b1) * g[j];
      v[j] = b2 * v[j] + (1 - b2) * double(g[j]) * g[j];
      const double mhat = m[j] / (1 - std::pow(b1, t)), vhat = v[j] / (1 - std::pow(b2, t));
      p[j] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
  double worst = 0;
  // in units of (one ulp of the parameter + 1e-8, for the f32 rounding of the ~0.01 updates):
  // each step rounds twice (decay, update)
  for (size_t j = 0; j < n; j++)
    worst = std::max(worst, std::fabs(out[0][j] - p[j]) / (std::fabs(p[j]) * 0x1p-23 + 1e-8));
  EXPECT_LT(worst, 4.0);
  std::printf("AdamW vs a double-precision loop: max error %.2f units\n", worst);
}

TEST(TrainOptim, AdamWRejectsBadSettings) {
  Params ps;
  ps.add("w", {2}, {1, 2});
  auto msg = [&](AdamWConfig c) {
    try {
      AdamW opt(ps.list, c);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(msg({1.0f, 0.95f, 1e-8f, 0.1f}).find("beta1 1"), std::string::npos);
  EXPECT_NE(msg({0.9f, -0.1f, 1e-8f, 0.1f}).find("beta2"), std::string::npos);
  EXPECT_NE(msg({0.9f, 0.95f, -1.0f, 0.1f}).find("eps"), std::string::npos);
  EXPECT_NE(msg({0.9f, 0.95f, 1e-8f, NAN}).find("weight_decay"), std::string::npos);
  AdamW opt(ps.list);
  EXPECT_THROW(opt.step(NAN), std::invalid_argument);
  EXPECT_THROW(opt.step(-1e-3f), std::invalid_argument);
  EXPECT_THROW(opt.set_step_count(-1), std::invalid_argument);
  EXPECT_EQ(opt.step_count(), 0);
}

// ------------------------------------------------------------------ schedules

TEST(TrainOptim, CosineSchedule) {
  LrSchedule s;
  s.kind = ScheduleKind::cosine;
  s.max_lr = 1.0f;
  s.min_lr = 0.1f;
  s.warmup_steps = 4;
  s.total_steps = 14;
  s.validate();
  EXPECT_FLOAT_EQ(s.at(0), 0.25f);  // linear warm-up from max/4
  EXPECT_FLOAT_EQ(s.at(1), 0.5f);
  EXPECT_FLOAT_EQ(s.at(3), 1.0f);
  // after the warm-up, p = (step + 1 - 4) / 10: step 8 -> p = 0.5 -> midway
  EXPECT_FLOAT_EQ(s.at(8), 0.55f);
  EXPECT_FLOAT_EQ(s.at(4), float(0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI * 0.1))));
  EXPECT_FLOAT_EQ(s.at(13), 0.1f);  // the last step at min_lr
  EXPECT_FLOAT_EQ(s.at(100), 0.1f);
  for (int64_t i = 4; i < 13; i++) EXPECT_GT(s.at(i), s.at(i + 1)) << i;
  s.warmup_steps = 0;
  EXPECT_FLOAT_EQ(s.at(0), float(0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI / 14))));
}

TEST(TrainOptim, WsdAndConstantSchedules) {
  LrSchedule s;
  s.kind = ScheduleKind::wsd;
  s.max_lr = 2.0f;
  s.min_lr = 0.0f;
  s.warmup_steps = 2;
  s.total_steps = 10;
  s.decay_fraction = 0.4f;  // the last 4 steps (6..9) decay linearly to 0
  s.validate();
  EXPECT_EQ(s.wsd_decay_steps(), 4);
  const float want[] = {1.0f, 2.0f, 2.0f, 2.0f, 2.0f, 2.0f, 1.5f, 1.0f, 0.5f, 0.0f};
  for (int64_t i = 0; i < 10; i++) EXPECT_FLOAT_EQ(s.at(i), want[i]) << i;
  s.kind = ScheduleKind::constant;
  EXPECT_FLOAT_EQ(s.at(0), 1.0f);
  EXPECT_FLOAT_EQ(s.at(9), 2.0f);
  EXPECT_FLOAT_EQ(s.at(50), 2.0f);
}

TEST(TrainOptim, ScheduleErrors) {
  EXPECT_EQ(parse_schedule_kind("wsd"), ScheduleKind::wsd);
  EXPECT_STREQ(schedule_kind_name(parse_schedule_kind("cosine")), "cosine");
  EXPECT_EQ(parse_schedule_kind("constant"), ScheduleKind::constant);
  try {
    parse_schedule_kind("linear");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'linear'"), std::string::npos) << e.what();
  }
  auto msg = [](LrSchedule s) {
    try {
      s.validate();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  LrSchedule ok;
  ok.total_steps = 100;
  ok.warmup_steps = 10;
  EXPECT_EQ(msg(ok), "");
  LrSchedule s = ok;
  s.warmup_steps = 101;
  EXPECT_NE(msg(s).find("warmup_steps 101"), std::string::npos);
  s = ok;
  s.min_lr = 1.0f;
  EXPECT_NE(msg(s).find("min_lr 1"), std::string::npos);
  s = ok;
  s.max_lr = 0;
  EXPECT_NE(msg(s).find("max_lr 0"), std::string::npos);
  s = ok;
  s.total_steps = 0;
  EXPECT_NE(msg(s).find("total_steps 0"), std::string::npos);
  s = ok;
  s.kind = ScheduleKind::wsd;
  s.decay_fraction = 1.5f;
  EXPECT_NE(msg(s).find("decay_fraction 1.5"), std::string::npos);
  s.decay_fraction = 0.95f;  // 95 decay steps overlap the 10 warm-up steps
  EXPECT_NE(msg(s).find("exceed total_steps"), std::string::npos);
  s.decay_fraction = 0.001f;
  EXPECT_NE(msg(s).find("no decay step"), std::string::npos);
}

// ------------------------------------------------------------------ clipping, finiteness, bf16

TEST(TrainOptim, ClipGradNormMatchesPyTorch) {
  const json fx = load_fixture("clip.json");
  for (const json& c : fx["cases"]) {
    Params ps;
    for (size_t i = 0; i < fx["grads"].size(); i++) {
      std::vector<float> g = floats(fx["grads"][i]);
      ps.add(std::string("t").append(std::to_string(i)), {int64_t(g.size())},
             std::vector<float>(g.size(), 0.0f));
      ps.set_grad(i, g);
    }
    const double max_norm = c["max_norm"].get<double>();
    const double norm = clip_grad_norm(ps.list, max_norm);
    EXPECT_NEAR(norm, c["norm"].get<double>(), 1e-6 * norm) << max_norm;  // torch sums in f32
    for (size_t i = 0; i < ps.list.size(); i++)
      expect_close(ps.grad[i], floats(c["clipped"][i]), 1e-6, 1e-9, "clipped grad");
  }
}

TEST(TrainOptim, ClipGradNormEdgeCases) {
  Params ps;
  ps.add("a", {2}, {0, 0});
  ps.add("b", {1}, {0});
  ps.set_grad(0, {3, 0});
  ps.set_grad(1, {4});
  EXPECT_DOUBLE_EQ(clip_grad_norm(ps.list, 0), 5.0);  // no clipping, still the norm
  EXPECT_EQ(ps.grad[0][0], 3.0f);
  EXPECT_DOUBLE_EQ(clip_grad_norm(ps.list, 10), 5.0);  // below the limit: untouched
  EXPECT_EQ(ps.grad[1][0], 4.0f);
  EXPECT_DOUBLE_EQ(clip_grad_norm(ps.list, 1), 5.0);
  EXPECT_NEAR(ps.grad[0][0], 0.6f, 1e-6);
  EXPECT_NEAR(ps.grad[1][0], 0.8f, 1e-6);
  EXPECT_TRUE(all_finite(ps.list));
  // a non-finite gradient: the norm says so, nothing is scaled
  ps.set_grad(0, {3, NAN});
  EXPECT_TRUE(std::isnan(clip_grad_norm(ps.list, 1)));
  EXPECT_FALSE(all_finite(ps.list));
  EXPECT_NEAR(ps.grad[1][0], 0.8f, 1e-6);
  ps.set_grad(0, {3, 0});
  ps.set_grad(1, {-INFINITY});
  EXPECT_TRUE(std::isinf(clip_grad_norm(ps.list, 1)));
  EXPECT_FALSE(all_finite(ps.list));
  // f32 overflow of the squares would be Inf; the sum is taken in double
  ps.set_grad(0, {3e38f, 3e38f});
  ps.set_grad(1, {0});
  EXPECT_NEAR(clip_grad_norm(ps.list, 0), 3e38 * std::sqrt(2.0), 1e32);
}

// Bit-identical norms for 1, 2 and 3 threads on tensors spanning many blocks.
TEST(TrainOptim, ClipGradNormDeterministic) {
  const int saved = omp_get_max_threads();
  double norms[3];
  for (int threads = 1; threads <= 3; threads++) {
    omp_set_num_threads(threads);
    Params ps;
    ps.add("a", {200001}, std::vector<float>(200001));
    ps.add("b", {33}, std::vector<float>(33));
    ps.add("c", {70000}, std::vector<float>(70000));
    for (size_t i = 0; i < 3; i++)
      ps.set_grad(i, random_vector(ps.grad[i].size(), 40 + uint32_t(i)));
    norms[threads - 1] = clip_grad_norm(ps.list, 0);
    EXPECT_TRUE(all_finite(ps.list));
    ps.grad[2][69999] = NAN;
    EXPECT_FALSE(all_finite(ps.list));
  }
  omp_set_num_threads(saved);
  EXPECT_EQ(std::memcmp(&norms[0], &norms[1], 8), 0);
  EXPECT_EQ(std::memcmp(&norms[0], &norms[2], 8), 0);
  EXPECT_NEAR(norms[0], std::sqrt(270034.0), 2.0);  // ~ sqrt(n) for unit normals
}

TEST(TrainOptim, RoundToBf16MatchesPyTorch) {
  const json fx = load_fixture("bf16.json");
  const std::vector<float> in = floats(fx["inputs"]), want = floats(fx["outputs"]);
  std::vector<float> out(in.size());
  round_to_bf16(out.data(), in.data(), int64_t(in.size()));
  EXPECT_TRUE(bit_equal(out, want));
  for (size_t i = 0; i < in.size(); i++) EXPECT_EQ(out[i], want[i]) << "input " << in[i];
  // in place, large (parallel path), NaN stays NaN
  std::vector<float> big = random_vector(50000, 9);
  big[123] = NAN;
  std::vector<float> copy = big;
  round_to_bf16(big.data(), big.data(), int64_t(big.size()));
  EXPECT_TRUE(std::isnan(big[123]));
  for (size_t i = 0; i < big.size(); i++) {
    if (i == 123) continue;
    uint32_t u;
    std::memcpy(&u, &big[i], 4);
    ASSERT_EQ(u & 0xffffu, 0u);
    ASSERT_LE(std::fabs(big[i] - copy[i]), std::fabs(copy[i]) * (1.0f / 256)) << i;
  }
}
