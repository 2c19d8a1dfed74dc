// Reading a JSON value into a C++ field without undefined behaviour: nlohmann's get<int>() of
// 1e300 converts a double out of the int's range (undefined; found by fuzzing the config
// parsers). Integral fields, alone or in arrays, must hold integers within the type's range;
// floating-point fields finite numbers within theirs (a float given 1e300 became infinity,
// which a config written back could not say: found by fuzzing too).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "common/error.h"

namespace mms {

template <typename T>
struct IsNumberVector : std::false_type {};
template <typename U>
struct IsNumberVector<std::vector<U>>
    : std::bool_constant<std::is_arithmetic_v<U> && !std::is_same_v<U, bool>> {};

// `value` as T; Error::invalid_argument naming `what` for an integral T given a non-integer
// or a number outside T's range, and for a floating-point T given a number that is not
// finite in T. Other types (and a number field given another JSON type) convert as nlohmann
// does (json::type_error, for the caller to report).
template <typename T>
T json_get(const nlohmann::json& value, const std::string& what) {
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    const bool fits =
        value.is_number_unsigned()
            ? value.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max())
            : value.is_number_integer() &&
                  value.get<int64_t>() >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
                  (std::is_unsigned_v<T> ||
                   value.get<int64_t>() <= static_cast<int64_t>(std::numeric_limits<T>::max()));
    if (!fits) {
      throw Error::invalid_argument(
          "'" + what + "' must be an integer in " + std::to_string(std::numeric_limits<T>::min()) +
          ".." + std::to_string(std::numeric_limits<T>::max()) + ", got " + value.dump());
    }
    return value.get<T>();
  } else if constexpr (std::is_floating_point_v<T>) {
    if (!value.is_number()) return value.get<T>();
    const double d = value.get<double>();
    if (!std::isfinite(d) || std::fabs(d) > static_cast<double>(std::numeric_limits<T>::max())) {
      char limit[32];
      std::snprintf(limit, sizeof limit, "%g", static_cast<double>(std::numeric_limits<T>::max()));
      throw Error::invalid_argument("'" + what + "' must be a finite number of magnitude at most " +
                                    limit + ", got " + value.dump());
    }
    return static_cast<T>(d);
  } else if constexpr (IsNumberVector<T>::value) {
    if (!value.is_array()) throw Error::invalid_argument("'" + what + "' must be an array");
    T out;
    for (const nlohmann::json& v : value) out.push_back(json_get<typename T::value_type>(v, what));
    return out;
  } else {
    return value.get<T>();
  }
}

}  // namespace mms
