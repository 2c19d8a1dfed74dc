// Test helpers: the kind (and message) of the mms::Error a call throws.
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <utility>

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

// The kind and message of the mms::Error `f` throws; a test failure when it throws none.
inline std::pair<ErrorKind, std::string> error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return {e.kind(), e.what()};
  }
  ADD_FAILURE() << "expected an mms::Error";
  return {ErrorKind::kInternal, ""};
}

}  // namespace mms::testing
