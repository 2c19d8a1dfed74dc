// The dual encoder as the trainer and the embedder use it: shapes, normalization, masking,
// the loss on a hand-computed case, gradient flow, and weights through safetensors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "common/error.h"
#include "encoders/nn/dual_encoder.h"
#include "encoders/nn/weights.h"

namespace {

using mms::ModelConfig;
using mms::nn::DualEncoder;

ModelConfig tiny_config() {
  ModelConfig c;
  c.image.image_size = 32;
  c.image.stem_channels = {8, 16};
  c.image.width = 32;
  c.image.depth = 2;
  c.image.heads = 2;
  c.text.vocab_size = 50;
  c.text.width = 32;
  c.text.depth = 2;
  c.text.heads = 2;
  c.text.window = 4;
  c.embed_dim = 24;
  return c;
}

TEST(DualEncoder, EmbeddingsHaveTheConfiguredDimensionAndUnitNorm) {
  torch::manual_seed(0);
  DualEncoder model(tiny_config());
  model->eval();
  auto img = model->encode_images(torch::rand({3, 3, 32, 32}));
  auto ids = torch::randint(4, 50, {2, 9});
  auto txt = model->encode_texts(ids, torch::tensor({9, 5}));
  EXPECT_EQ(img.sizes(), (std::vector<int64_t>{3, 24}));
  EXPECT_EQ(txt.sizes(), (std::vector<int64_t>{2, 24}));
  EXPECT_TRUE(torch::allclose(img.norm(2, 1), torch::ones({3}), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(txt.norm(2, 1), torch::ones({2}), 1e-5, 1e-5));
}

TEST(DualEncoder, PaddingDoesNotChangeATextsEmbedding) {
  torch::manual_seed(1);
  DualEncoder model(tiny_config());
  model->eval();
  auto short_ids = torch::randint(4, 50, {1, 6});
  auto alone = model->encode_texts(short_ids, torch::tensor({6}));
  // The same text padded to 40 tokens beside a long text (banded path, several blocks).
  auto padded = torch::zeros({2, 40}, torch::kLong);
  padded.index_put_({0, torch::indexing::Slice(0, 6)}, short_ids[0]);
  padded.index_put_({1}, torch::randint(4, 50, {40}));
  auto batched = model->encode_texts(padded, torch::tensor({6, 40}));
  EXPECT_LE((alone[0] - batched[0]).abs().max().item<double>(), 1e-5);
}

TEST(DualEncoder, LongTextsAreEncodedWhole) {
  torch::manual_seed(2);
  DualEncoder model(tiny_config());
  model->eval();
  torch::NoGradGuard no_grad;
  auto ids = torch::randint(4, 50, {1, 5000});
  auto a = model->encode_texts(ids, torch::tensor({5000}));
  // Changing the very last token still moves the embedding: nothing was cut off.
  auto changed = ids.clone();
  changed.index_put_({0, 4999}, (ids[0][4999].item<int64_t>() + 1 - 4) % 46 + 4);
  auto b = model->encode_texts(changed, torch::tensor({5000}));
  EXPECT_GT((a - b).abs().max().item<double>(), 1e-7);
}

TEST(ContrastiveLoss, MatchesAHandComputedValue) {
  // Orthonormal pairs at scale 1: each row's logits are [1, 0], so the loss is
  // -log(e / (e + 1)) = log(1 + 1/e) in both directions.
  auto emb = torch::eye(2);
  auto loss = mms::nn::contrastive_loss(emb, emb, torch::tensor(1.0), {});
  EXPECT_NEAR(loss.item<double>(), std::log(1 + std::exp(-1.0)), 1e-6);
  // With every pair marked positive, the target is uniform: log(2) - mean logit... = the
  // cross-entropy of [0.5, 0.5] against softmax([1, 0]).
  auto all = torch::ones({2, 2}, torch::kBool);
  auto p = torch::softmax(torch::tensor({1.0, 0.0}), 0);
  double expected = -0.5 * (std::log(p[0].item<double>()) + std::log(p[1].item<double>()));
  EXPECT_NEAR(mms::nn::contrastive_loss(emb, emb, torch::tensor(1.0), all).item<double>(), expected,
              1e-6);
}

TEST(ContrastiveLoss, GradientsReachEveryParameterOfBothTowers) {
  torch::manual_seed(3);
  DualEncoder model(tiny_config());
  model->train();
  auto img = model->encode_images(torch::rand({4, 3, 32, 32}));
  auto txt = model->encode_texts(torch::randint(4, 50, {4, 12}), torch::tensor({12, 7, 3, 10}));
  mms::nn::contrastive_loss(img, txt, model->scale(), {}).backward();
  for (const auto& item : model->named_parameters(true)) {
    ASSERT_TRUE(item.value().grad().defined()) << item.key();
    EXPECT_GT(item.value().grad().abs().sum().item<double>(), 0.0) << item.key();
  }
}

TEST(ModelWeights, RoundTripThroughSafetensorsGivesIdenticalOutputs) {
  torch::manual_seed(4);
  DualEncoder a(tiny_config()), b(tiny_config());
  a->eval();
  b->eval();
  const auto file = std::filesystem::temp_directory_path() / "mms_model_roundtrip.safetensors";
  mms::write_safetensors(file.string(), mms::nn::model_to_safetensors(a));
  mms::nn::load_model_weights(b, mms::read_safetensors(file.string()), file.string());
  auto pixels = torch::rand({2, 3, 32, 32});
  EXPECT_TRUE(torch::equal(a->encode_images(pixels), b->encode_images(pixels)));
  std::filesystem::remove(file);
}

TEST(ModelWeights, AMismatchedConfigIsRefusedNamingTheTensor) {
  DualEncoder a(tiny_config());
  ModelConfig other = tiny_config();
  other.text.vocab_size = 60;
  DualEncoder b(other);
  try {
    mms::nn::load_model_weights(b, mms::nn::model_to_safetensors(a), "w.safetensors");
    FAIL() << "expected a mismatch";
  } catch (const mms::Error& e) {
    EXPECT_EQ(e.kind(), mms::ErrorKind::kMismatch);
    EXPECT_NE(std::string(e.what()).find("text.embed.weight"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("w.safetensors"), std::string::npos) << e.what();
  }
}

}  // namespace

namespace {

TEST(ImageEncoder, GradientsAreExactAndRepeatable) {
  // With no transformer layers the output is the class token alone, so the stem's gradients
  // must be exactly zero. (LibTorch 1.13's CPU conv/BatchNorm backward once returned garbage
  // here for transposed-stride gradients; see ContiguousGrad in towers.cc.)
  ModelConfig c = tiny_config();
  c.image.depth = 0;
  torch::manual_seed(6);
  mms::nn::ImageEncoder no_layers(c.image, c.embed_dim, c.mlp_ratio);
  no_layers->forward(torch::rand({4, 3, 32, 32})).pow(2).sum().backward();
  for (const auto& item : no_layers->named_parameters(true)) {
    if (item.key().rfind("stem.", 0) == 0) {
      EXPECT_EQ(item.value().grad().abs().sum().item<double>(), 0.0) << item.key();
    }
  }
  // And the same inputs give the same gradients, run after run.
  auto pixels = torch::rand({4, 3, 32, 32});
  std::vector<double> sums;
  for (int run = 0; run < 3; ++run) {
    torch::manual_seed(7);
    mms::nn::ImageEncoder enc(tiny_config().image, c.embed_dim, c.mlp_ratio);
    enc->forward(pixels).pow(2).sum().backward();
    double s = 0;
    for (const auto& p : enc->parameters()) s += p.grad().abs().sum().item<double>();
    sums.push_back(s);
  }
  EXPECT_EQ(sums[0], sums[1]);
  EXPECT_EQ(sums[0], sums[2]);
}

}  // namespace

namespace {

TEST(ImageEncoder, AGroupNormStemDoesNotDependOnTheBatch) {
  // In training mode a BatchNorm stem normalizes by the batch's statistics, so an image's
  // embedding depends on its batch mates; a GroupNorm stem's does not.
  auto pixels = torch::rand({4, 3, 32, 32});
  for (const std::string norm : {"batch", "group"}) {
    ModelConfig c = tiny_config();
    c.image.stem_norm = norm;
    torch::manual_seed(8);
    DualEncoder model(c);
    model->train();
    const torch::Tensor together = model->encode_images(pixels).select(0, 0);
    const torch::Tensor with_others =
        model->encode_images(torch::cat({pixels.narrow(0, 0, 1), torch::rand({3, 3, 32, 32})}))
            .select(0, 0);
    const double diff = (together - with_others).abs().max().item<double>();
    if (norm == "group") {
      EXPECT_LT(diff, 1e-5);
    } else {
      EXPECT_GT(diff, 1e-3);
    }
  }
}

TEST(ModelConfig, StemNormIsCheckedAndWrittenBack) {
  const std::string base = R"({"image": {"stem_channels": [16, 32]}, "text": {"vocab_size": 50}})";
  EXPECT_EQ(mms::parse_model_config(base, "c").image.stem_norm, "batch");
  ModelConfig g = tiny_config();
  g.image.stem_norm = "group";
  EXPECT_EQ(mms::parse_model_config(mms::model_config_to_json(g), "c").image.stem_norm, "group");
  for (const std::string bad :
       {R"({"image": {"stem_norm": "layer"}})",
        R"({"image": {"stem_norm": "group", "stem_channels": [12, 32]}})"}) {
    try {
      mms::parse_model_config(bad, "cfg.json");
      FAIL() << "accepted " << bad;
    } catch (const mms::Error& e) {
      EXPECT_NE(std::string(e.what()).find("stem_norm"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << e.what();
    }
  }
}

}  // namespace

namespace {

TEST(ModelConfig, ViewsAreCheckedAndWrittenOnlyWhenSeveral) {
  ModelConfig c = tiny_config();
  // A single-view config is written as before views existed (older programs read it).
  EXPECT_EQ(mms::model_config_to_json(c).find("view"), std::string::npos);
  c.image.views = 5;
  c.image.view_crop = 0.75f;
  const ModelConfig back = mms::parse_model_config(mms::model_config_to_json(c), "c");
  EXPECT_EQ(back.image.views, 5);
  EXPECT_FLOAT_EQ(back.image.view_crop, 0.75f);
  for (const std::string bad : {R"({"image": {"views": 2}})", R"({"image": {"views": 0}})",
                                R"({"image": {"views": 5, "view_crop": 1.0}})",
                                R"({"image": {"views": 3, "view_crop": 0.3}})"}) {
    try {
      mms::parse_model_config(bad, "cfg.json");
      FAIL() << "accepted " << bad;
    } catch (const mms::Error& e) {
      EXPECT_NE(std::string(e.what()).find("image.view"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("cfg.json"), std::string::npos) << e.what();
    }
  }
}

TEST(ImageEncoder, StemBlocksAddResidualConvsAndKeepTheOneBlockNames) {
  ModelConfig one = tiny_config();
  ModelConfig two = tiny_config();
  two.image.stem_blocks = 2;
  DualEncoder a(one), b(two);
  const mms::SafeTensors wa = mms::nn::model_to_safetensors(a);
  const mms::SafeTensors wb = mms::nn::model_to_safetensors(b);
  // Every tensor of the one-block stem keeps its name (shipped weights still load); the
  // second block adds a conv and its norm in each of the two stages.
  for (const auto& [name, tensor] : wa.tensors) EXPECT_TRUE(wb.tensors.count(name)) << name;
  EXPECT_TRUE(wb.tensors.count("image.stem.0.conv2.weight"));
  EXPECT_TRUE(wb.tensors.count("image.stem.1.bn3.running_mean"));
  EXPECT_FALSE(wa.tensors.count("image.stem.0.conv2.weight"));
  // A one-block model refuses two-block weights, naming the second block's tensors.
  try {
    mms::nn::load_model_weights(a, wb, "two.safetensors");
    FAIL() << "loaded two-block weights into a one-block model";
  } catch (const mms::Error& e) {
    EXPECT_EQ(e.kind(), mms::ErrorKind::kMismatch);
    EXPECT_NE(std::string(e.what()).find("unexpected tensors 'image.stem.0.bn3."),
              std::string::npos)
        << e.what();
  }
  // The deeper stem still trains: every parameter of both stages gets a gradient.
  b->train();
  auto img = b->encode_images(torch::rand({4, 3, 32, 32}));
  auto txt = b->encode_texts(torch::randint(4, 50, {4, 7}), torch::tensor({7, 7, 5, 3}));
  mms::nn::contrastive_loss(img, txt, b->scale(), {}).backward();
  for (const auto& p : b->named_parameters()) {
    if (p.key().rfind("image.stem.", 0) != 0) continue;
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_GT(p.value().grad().abs().sum().item<double>(), 0) << p.key();
  }
}

TEST(ModelConfig, StemBlocksAreCheckedAndWrittenBack) {
  ModelConfig c = tiny_config();
  c.image.stem_blocks = 3;
  EXPECT_EQ(mms::parse_model_config(mms::model_config_to_json(c), "c").image.stem_blocks, 3);
  EXPECT_EQ(mms::parse_model_config(R"({"image": {}})", "c").image.stem_blocks, 1);
  try {
    mms::parse_model_config(R"({"image": {"stem_blocks": 0}})", "cfg.json");
    FAIL() << "accepted stem_blocks 0";
  } catch (const mms::Error& e) {
    EXPECT_NE(std::string(e.what()).find("image.stem_blocks"), std::string::npos) << e.what();
  }
}

}  // namespace
