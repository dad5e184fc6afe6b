// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/crash_point.h"

#include <signal.h>
#include <stdlib.h>

#include <string>

namespace snapshotter {
namespace {
bool g_armed = false;
std::string g_point;  // written once by init_crash_points() before any thread starts
}  // namespace

void init_crash_points() {
  const char* v = ::getenv("CFN_SNAPSHOTTER_CRASH_AT");
  if (v != nullptr && *v != '\0') {
    g_point = v;
    g_armed = true;
  }
}

void crash_point(std::string_view point) {
  if (g_armed && point == g_point) {
    ::raise(SIGKILL);
  }
}

}  // namespace snapshotter
