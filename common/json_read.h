// Reading a JSON value into a C++ field without undefined behaviour: nlohmann's get<int>() of
// 1e300 converts a double out of the int's range (undefined; found by fuzzing the config
// parsers). Integral fields, alone or in arrays, must hold integers within the type's range.
#pragma once

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "common/error.h"

namespace mms {

template <typename T>
struct IsIntVector : std::false_type {};
template <typename U>
struct IsIntVector<std::vector<U>> : std::bool_constant<std::is_integral_v<U>> {};

// `value` as T; Error::invalid_argument naming `what` for an integral T given a non-integer
// or a number outside T's range. Other types convert as nlohmann does (json::type_error for
// the wrong JSON type, for the caller to report).
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
  } else if constexpr (IsIntVector<T>::value) {
    if (!value.is_array()) throw Error::invalid_argument("'" + what + "' must be an array");
    T out;
    for (const nlohmann::json& v : value) out.push_back(json_get<typename T::value_type>(v, what));
    return out;
  } else {
    return value.get<T>();
  }
}

}  // namespace mms
