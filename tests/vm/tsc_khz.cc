// SPDX-License-Identifier: Apache-2.0
// tsc_khz: prints this host's TSC frequency in kHz (rdtsc against CLOCK_MONOTONIC_RAW over
// 200 ms), for scripts/vm-test --bench. Under TCG the guest's TSC runs at the host's rate,
// but the test kernels (no ACPI, so no HPET or PM timer) often fail to calibrate it
// against the PIT and fall back to the 4 ms jiffies clock, too coarse to time a READ;
// tsc_early_khz= on the guest's command line hands them the rate. Exit 1 off x86.
#include <time.h>

#include <cstdio>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace {

double now() {
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC_RAW, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

}  // namespace

int main() {
#if defined(__x86_64__) || defined(__i386__)
  const double t0 = now();
  const unsigned long long c0 = __rdtsc();
  double t1 = t0;
  while (t1 - t0 < 0.2) {
    t1 = now();
  }
  const unsigned long long c1 = __rdtsc();
  std::printf("%.0f\n", static_cast<double>(c1 - c0) / (t1 - t0) / 1000.0);
  return 0;
#else
  std::fprintf(stderr, "tsc_khz: not an x86 host\n");
  return 1;
#endif
}
