// SPDX-License-Identifier: Apache-2.0
// The fanotify front end's record of the permission events it has read and not yet
// answered, kept where a successor finds it: <cache_dir>/state/fanotify-inflight.
//
// Why. The group fd outlives a dead daemon (fd store / fd holder), and so do the events
// it had read: their readers wait. The kernel matches a response only by the fd number
// written in it, whoever writes it (reference/fanotify-precontent.md, last section), so
// a successor that knows an event's number, blob and range can fill the range and
// answer FAN_ALLOW; an event it does not know it must deny (never ALLOW over a hole).
//
// How. A file of fixed slots, one per event fd number below `slots` (the kernel gives an
// event the lowest free number of the reader's table), mapped MAP_SHARED: recording and
// clearing an event are a few stores into the page cache, no syscall. The failure this
// guards against is the process, not the machine, so nothing is synced: the pages of a
// dead process's shared mapping are the file's. A slot is written fields first, then a
// check word, then its state word (release order), and cleared (state 0) after the
// answer, before the event fd is closed; a slot half-written when the daemon died fails
// its check and counts as unrecorded.
//
// Layout (little-endian, this host's order): a 64-byte header {magic "CFNFANIF",
// u32 version 1, u32 slot size 48, u32 slots, u32 0, u64 fd_bound: every event fd
// number of the daemon is below it (its RLIMIT_NOFILE), 32 bytes 0}, then `slots` slots
// {u32 state (1 = in flight), u32 check, i32 fd (= the slot index), u32 0, u64 dev,
// u64 ino (the blob cache file), u64 offset, u64 count}.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"

namespace cfnd {

inline constexpr std::uint32_t kInflightVersion = 1;
inline constexpr std::size_t kInflightHeaderSize = 64;
inline constexpr std::size_t kInflightSlotSize = 48;
// Event fd numbers at or above this are not recorded (a successor denies their events).
inline constexpr std::uint32_t kInflightSlots = 16384;

struct InflightRecord {
  int fd = -1;  // the event's fd number in the daemon that read it
  std::uint64_t dev = 0;
  std::uint64_t ino = 0;
  std::uint64_t offset = 0;
  std::uint64_t count = 0;
  bool operator==(const InflightRecord&) const = default;
};

struct InflightFile {
  std::uint32_t slots = 0;
  std::uint64_t fd_bound = 0;
  std::vector<InflightRecord> records;  // valid in-flight slots, by fd number
  std::size_t torn = 0;                 // slots in flight that fail their check
};

// Pure. The file's bytes as written by InflightLog. EINVAL: shorter than its header,
// another magic, version or slot size, a size that is not header + slots * slot size,
// fd_bound 0.
[[nodiscard]] base::Result<InflightFile> parse_inflight(std::span<const std::byte> bytes);
// Pure. A file with these records (tests; InflightLog::open writes the same bytes).
[[nodiscard]] std::vector<std::byte> format_inflight(std::uint32_t slots, std::uint64_t fd_bound,
                                                     std::span<const InflightRecord> records);

// <cache_dir>/state/fanotify-inflight.
[[nodiscard]] std::string inflight_path(const std::string& cache_dir);
// Read and parse the file. Errors name the path (ENOENT when there is none).
[[nodiscard]] base::Result<InflightFile> load_inflight(const std::string& path);

class InflightLog {
 public:
  // Write a fresh file at path (a temporary and a rename: mode 0600, its directory
  // 0700) holding `keep` (a dead daemon's events still to settle), and map it.
  // Errors name the path.
  [[nodiscard]] static base::Result<std::unique_ptr<InflightLog>> open(
      const std::string& path, std::uint64_t fd_bound, std::span<const InflightRecord> keep = {});
  ~InflightLog();
  InflightLog(const InflightLog&) = delete;
  InflightLog& operator=(const InflightLog&) = delete;

  // Record an event about to be answered (no-op when r.fd is out of range). Thread-safe
  // for distinct fds; an fd's record and clear are ordered by the fd's own life.
  void record(const InflightRecord& r) noexcept;
  // The event of that fd number is answered (no-op when out of range).
  void clear(int fd) noexcept;

 private:
  InflightLog(std::byte* map, std::size_t size) : map_(map), size_(size) {}
  std::byte* map_;
  std::size_t size_;
};

}  // namespace cfnd
