// Test helper: the kind of mms::Error a call throws.
#pragma once

#include <gtest/gtest.h>

#include <functional>

#include "common/error.h"

namespace mms::testing {

// The kind of the mms::Error `f` throws; a test failure when it throws none.
inline ErrorKind kind_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.kind();
  }
  ADD_FAILURE() << "expected an mms::Error";
  return ErrorKind::kInternal;
}

}  // namespace mms::testing
