#include "service/metrics.h"

#include <cstdio>
#include <tuple>

namespace mms {
namespace {

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

const std::vector<double> kLatencyBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                            0.25,  0.5,    1,     2.5,  5,     10};
const std::vector<double> kBatchBounds = {1, 2, 4, 8, 16, 32, 64, 128, 256};

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double value) {
  size_t i = 0;
  while (i < bounds_.size() && value > bounds_[i]) ++i;
  ++counts_[i];
  sum_ += value;
  ++count_;
}

void Histogram::render(const std::string& name, const std::string& labels, std::string& out) const {
  const std::string sep = labels.empty() ? "" : ",";
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += counts_[i];
    const std::string le = i < bounds_.size() ? number(bounds_[i]) : "+Inf";
    out += name + "_bucket{" + labels + sep + "le=\"" + le + "\"} " + std::to_string(cumulative) +
           "\n";
  }
  const std::string braces = labels.empty() ? "" : "{" + labels + "}";
  out += name + "_sum" + braces + " " + number(sum_) + "\n";
  out += name + "_count" + braces + " " + std::to_string(count_) + "\n";
}

void ServiceMetrics::record_request(const std::string& route, const std::string& method, int status,
                                    double seconds) {
  std::lock_guard<std::mutex> lock(mutex_);
  ++requests_[{route, method, status}];
  latency_.try_emplace(route, kLatencyBounds).first->second.observe(seconds);
}

void ServiceMetrics::record_batch(const std::string& kind, int64_t size) {
  std::lock_guard<std::mutex> lock(mutex_);
  batches_.try_emplace(kind, kBatchBounds).first->second.observe(static_cast<double>(size));
}

std::string ServiceMetrics::render(int64_t queue_depth, int64_t image_vectors,
                                   int64_t text_vectors) const {
  std::lock_guard<std::mutex> lock(mutex_);
  std::string out;
  out +=
      "# HELP mmsearch_http_requests_total HTTP requests answered, by route, method and status.\n";
  out += "# TYPE mmsearch_http_requests_total counter\n";
  for (const auto& [key, count] : requests_) {
    const auto& [route, method, status] = key;
    out += "mmsearch_http_requests_total{route=\"" + route + "\",method=\"" + method +
           "\",status=\"" + std::to_string(status) + "\"} " + std::to_string(count) + "\n";
  }
  out += "# HELP mmsearch_http_request_duration_seconds Time from request start to response.\n";
  out += "# TYPE mmsearch_http_request_duration_seconds histogram\n";
  for (const auto& [route, h] : latency_) {
    h.render("mmsearch_http_request_duration_seconds", "route=\"" + route + "\"", out);
  }
  out += "# HELP mmsearch_batch_size Jobs per micro-batch, by kind (text, image, search).\n";
  out += "# TYPE mmsearch_batch_size histogram\n";
  for (const auto& [kind, h] : batches_) {
    h.render("mmsearch_batch_size", "kind=\"" + kind + "\"", out);
  }
  out += "# HELP mmsearch_queue_depth Jobs queued or running in the batcher.\n";
  out += "# TYPE mmsearch_queue_depth gauge\n";
  out += "mmsearch_queue_depth " + std::to_string(queue_depth) + "\n";
  out += "# HELP mmsearch_index_vectors Vectors in the loaded search index, by target.\n";
  out += "# TYPE mmsearch_index_vectors gauge\n";
  out += "mmsearch_index_vectors{target=\"images\"} " + std::to_string(image_vectors) + "\n";
  out += "mmsearch_index_vectors{target=\"texts\"} " + std::to_string(text_vectors) + "\n";
  return out;
}

}  // namespace mms
