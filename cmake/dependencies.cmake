# Finds every third-party dependency once and exposes each as one imported target, so a
# module links what it wraps and nothing else.

find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

# Debian's FAISS CMake config refers to OpenMP::OpenMP_CXX without finding it.
find_package(OpenMP REQUIRED)
find_package(faiss REQUIRED)

# LibTorch's config prepends its own flags; only LibTorch-heavy targets link it.
find_package(Torch REQUIRED)
if(MMSEARCH_CUDA AND NOT TORCH_CUDA_LIBRARIES)
  message(FATAL_ERROR "MMSEARCH_CUDA=ON but this LibTorch has no CUDA support")
endif()

pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
pkg_check_modules(SQLITE3 REQUIRED IMPORTED_TARGET sqlite3)
find_package(nlohmann_json 3 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(spdlog REQUIRED)
find_package(Boost 1.74 REQUIRED)

# Debian splits OpenCV into per-module packages without a CMake config; find the three
# modules we use directly.
find_path(OPENCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4 REQUIRED)
foreach(module core imgproc imgcodecs)
  find_library(OPENCV_${module}_LIBRARY opencv_${module} REQUIRED)
endforeach()
add_library(mms_opencv INTERFACE)
target_include_directories(mms_opencv SYSTEM INTERFACE ${OPENCV_INCLUDE_DIR})
target_link_libraries(mms_opencv INTERFACE
  ${OPENCV_imgcodecs_LIBRARY} ${OPENCV_imgproc_LIBRARY} ${OPENCV_core_LIBRARY})

find_path(HTTPLIB_INCLUDE_DIR httplib.h REQUIRED)

add_library(mms_torch INTERFACE)
target_link_libraries(mms_torch INTERFACE ${TORCH_LIBRARIES})
target_compile_options(mms_torch INTERFACE -Wno-unused-parameter)

# Compiles TARGET with LibTorch's main header precompiled; only for LibTorch-heavy targets.
function(mms_torch_pch target)
  target_precompile_headers(${target} PRIVATE <torch/torch.h>)
endfunction()
