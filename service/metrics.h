// Counters and histograms of the HTTP service, rendered in the Prometheus text format
// (version 0.0.4) by GET /metrics. Label values come from a fixed set (route patterns,
// batch kinds), never from raw request paths, so the series count stays bounded.
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace mms {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double value);
  // Appends the _bucket / _sum / _count lines of `name` with `labels` ("" or `k="v",...`).
  void render(const std::string& name, const std::string& labels, std::string& out) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // one per bound, plus +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

class ServiceMetrics {
 public:
  void record_request(const std::string& route, const std::string& method, int status,
                      double seconds);
  void record_batch(const std::string& kind, int64_t size);
  // Everything recorded, followed by the gauges given here.
  std::string render(int64_t queue_depth, int64_t image_vectors, int64_t text_vectors) const;

 private:
  mutable std::mutex mutex_;
  std::map<std::tuple<std::string, std::string, int>, uint64_t> requests_;
  std::map<std::string, Histogram> latency_;  // by route
  std::map<std::string, Histogram> batches_;  // by kind
};

}  // namespace mms
