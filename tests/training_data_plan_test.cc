// The training data order as the trainer's loader asks for it: batch b of a DataPlan. Mixed
// plans spread sources over batches; by-source plans keep each batch to one source. Either way
// an epoch uses each drawn sample once and a fresh plan reproduces any batch from the seed.
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "training/data_plan.h"

namespace {

// Three sources whose sizes do not divide by the batch size; the last is capped per epoch.
std::vector<mms::TrainSource> sources() {
  std::vector<mms::TrainSource> out;
  const std::vector<std::pair<std::string, int>> sizes = {{"a", 53}, {"b", 37}, {"c", 120}};
  int32_t image = 0;
  for (const auto& [name, n] : sizes) {
    mms::TrainSource s;
    s.name = name;
    for (int i = 0; i < n; ++i)
      s.samples.push_back({image++, name + std::to_string(i), "", "", {}, {}});
    out.push_back(s);
  }
  out[2].max_per_epoch = 40;
  return out;
}

// Which source a sample belongs to: its caption's first letter.
char source_of(const mms::TrainSample* s) {
  return s->caption[0];
}

std::vector<std::vector<const mms::TrainSample*>> epoch(mms::DataPlan& plan, int64_t e) {
  std::vector<std::vector<const mms::TrainSample*>> out;
  for (int64_t b = 0; b < plan.batches_per_epoch(); ++b) {
    out.push_back(plan.batch(e * plan.batches_per_epoch() + b));
  }
  return out;
}

TEST(DataPlan, BySourceBatchesHoldOneSourceSaveForTheLeftovers) {
  const std::vector<mms::TrainSource> data = sources();
  const int64_t batch_size = 8;
  mms::DataPlan plan(data, batch_size, 7, /*by_source=*/true);
  EXPECT_EQ(plan.samples_per_epoch(), 53 + 37 + 40);
  EXPECT_EQ(plan.batches_per_epoch(), (53 + 37 + 40) / batch_size);

  for (int64_t e = 0; e < 3; ++e) {
    int mixed = 0;
    std::set<const mms::TrainSample*> seen;
    std::map<char, int> per_source;
    for (const auto& batch : epoch(plan, e)) {
      ASSERT_EQ(static_cast<int64_t>(batch.size()), batch_size);
      std::set<char> kinds;
      for (const mms::TrainSample* s : batch) {
        kinds.insert(source_of(s));
        EXPECT_TRUE(seen.insert(s).second) << "sample used twice in epoch " << e;
        ++per_source[source_of(s)];
      }
      if (kinds.size() > 1) ++mixed;
    }
    // Leftovers are 53 % 8 + 37 % 8 + 40 % 8 = 10 samples: one mixed batch at most.
    EXPECT_LE(mixed, 1) << "epoch " << e;
    // Every whole batch's worth of each source is used; the cap holds.
    EXPECT_GE(per_source['a'], 48);
    EXPECT_GE(per_source['b'], 32);
    EXPECT_GE(per_source['c'], 40 - 7);
    EXPECT_LE(per_source['c'], 40);
  }
}

TEST(DataPlan, MixedBatchesSpreadSources) {
  const std::vector<mms::TrainSource> data = sources();
  mms::DataPlan plan(data, 8, 7);
  int mixed = 0;
  std::set<const mms::TrainSample*> seen;
  for (const auto& batch : epoch(plan, 0)) {
    std::set<char> kinds;
    for (const mms::TrainSample* s : batch) {
      kinds.insert(source_of(s));
      EXPECT_TRUE(seen.insert(s).second);
    }
    if (kinds.size() > 1) ++mixed;
  }
  // 16 batches from three shuffled-together sources: nearly all of them mix.
  EXPECT_GE(mixed, 12);
}

TEST(DataPlan, AnyBatchIsReproducibleFromTheSeedAlone) {
  const std::vector<mms::TrainSource> data = sources();
  for (bool by_source : {false, true}) {
    mms::DataPlan straight(data, 8, 99, by_source);
    std::vector<std::vector<const mms::TrainSample*>> all;
    for (int64_t b = 0; b < 3 * straight.batches_per_epoch(); ++b) all.push_back(straight.batch(b));

    // A resumed run builds a new plan and starts mid-epoch; it must see the same batches.
    mms::DataPlan resumed(data, 8, 99, by_source);
    for (int64_t b = 20; b < 3 * resumed.batches_per_epoch(); ++b) {
      EXPECT_EQ(resumed.batch(b), all[b]) << "batch " << b << " by_source " << by_source;
    }
    // Epochs differ, and another seed gives another order.
    EXPECT_NE(all[0], all[straight.batches_per_epoch()]);
    mms::DataPlan other(data, 8, 100, by_source);
    EXPECT_NE(other.batch(0), all[0]);
  }
}

// A source with repeats = 2 is drawn twice an epoch, each sample exactly twice; the capped
// source is capped per pass, and the others keep one pass.
TEST(DataPlan, RepeatsDrawEachSampleThatManyTimesAnEpoch) {
  for (bool by_source : {false, true}) {
    auto data = sources();
    data[0].repeats = 2;
    data[2].repeats = 3;
    mms::DataPlan plan(data, 8, 7, by_source);
    EXPECT_EQ(plan.samples_per_epoch(), 53 * 2 + 37 + 40 * 3);
    std::map<const mms::TrainSample*, int> seen;
    for (const auto& batch : epoch(plan, 1)) {
      for (const mms::TrainSample* s : batch) ++seen[s];
    }
    int a_twice = 0, c_drawn = 0;
    for (const auto& [s, count] : seen) {
      if (source_of(s) == 'a') a_twice += count == 2;
      if (source_of(s) == 'b') EXPECT_EQ(count, 1) << s->caption;
      if (source_of(s) == 'c') {
        EXPECT_LE(count, 3) << s->caption;
        c_drawn += count;
      }
    }
    // An epoch's last partial batch is dropped: at most 7 draws go missing.
    EXPECT_GE(a_twice, 53 - 7) << "by_source " << by_source;
    EXPECT_GE(c_drawn, 120 - 7) << "by_source " << by_source;
  }
}

}  // namespace
