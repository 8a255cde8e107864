#include "model/norm.h"

#include <cmath>

namespace whale {

void RMSNorm::forward(const float* x, int64_t n, float* y) const {
  const int64_t d = int64_t(weight.size());
  for (int64_t t = 0; t < n; t++) {
    const float* xt = x + t * d;
    float* yt = y + t * d;
    double ss = 0.0;
    for (int64_t i = 0; i < d; i++) ss += double(xt[i]) * double(xt[i]);
    const float r = float(1.0 / std::sqrt(ss / double(d) + double(eps)));
    for (int64_t i = 0; i < d; i++) yt[i] = weight[size_t(i)] * (xt[i] * r);
  }
}

}  // namespace whale
