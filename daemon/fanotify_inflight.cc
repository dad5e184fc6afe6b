// SPDX-License-Identifier: Apache-2.0
#include "daemon/fanotify_inflight.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>

#include "base/bytes.h"
#include "base/file.h"
#include "base/unique_fd.h"

namespace cfnd {
namespace {

constexpr char kMagic[8] = {'C', 'F', 'N', 'F', 'A', 'N', 'I', 'F'};
constexpr std::uint32_t kInFlight = 1;

// Offsets inside the header and a slot.
constexpr std::size_t kHdrVersion = 8;
constexpr std::size_t kHdrSlotSize = 12;
constexpr std::size_t kHdrSlots = 16;
constexpr std::size_t kHdrFdBound = 24;
constexpr std::size_t kSlotState = 0;
constexpr std::size_t kSlotCheck = 4;
constexpr std::size_t kSlotFd = 8;
constexpr std::size_t kSlotDev = 16;
constexpr std::size_t kSlotIno = 24;
constexpr std::size_t kSlotOffset = 32;
constexpr std::size_t kSlotCount = 40;
static_assert(kSlotCount + 8 == kInflightSlotSize);
static_assert(kHdrFdBound + 8 <= kInflightHeaderSize);

template <typename T>
void put(std::byte* p, std::size_t at, T v) {
  std::memcpy(p + at, &v, sizeof v);
}

// Catches a slot whose fields were half-written when the daemon died.
std::uint32_t slot_check(const InflightRecord& r) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const std::uint64_t v : {static_cast<std::uint64_t>(static_cast<std::uint32_t>(r.fd)), r.dev,
                                r.ino, r.offset, r.count}) {
    h = (h ^ v) * 0x100000001b3ULL;
    h ^= h >> 29;
  }
  return static_cast<std::uint32_t>(h ^ (h >> 32));
}

std::size_t file_size(std::uint32_t slots) {
  return kInflightHeaderSize + std::size_t{slots} * kInflightSlotSize;
}

void write_fields(std::byte* slot, const InflightRecord& r) {
  put<std::int32_t>(slot, kSlotFd, r.fd);
  put<std::uint32_t>(slot, kSlotFd + 4, 0);
  put<std::uint64_t>(slot, kSlotDev, r.dev);
  put<std::uint64_t>(slot, kSlotIno, r.ino);
  put<std::uint64_t>(slot, kSlotOffset, r.offset);
  put<std::uint64_t>(slot, kSlotCount, r.count);
  put<std::uint32_t>(slot, kSlotCheck, slot_check(r));
}

}  // namespace

base::Result<InflightFile> parse_inflight(std::span<const std::byte> bytes) {
  if (bytes.size() < kInflightHeaderSize) {
    return base::errorf(EINVAL, "in-flight record: {} bytes, shorter than its header",
                        bytes.size());
  }
  if (std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    return base::make_error(EINVAL, "in-flight record: bad magic");
  }
  if (base::load<std::uint32_t>(bytes, kHdrVersion) != kInflightVersion) {
    return base::errorf(EINVAL, "in-flight record: version {} (this daemon reads {})",
                        base::load<std::uint32_t>(bytes, kHdrVersion), kInflightVersion);
  }
  if (base::load<std::uint32_t>(bytes, kHdrSlotSize) != kInflightSlotSize) {
    return base::errorf(EINVAL, "in-flight record: slot size {}",
                        base::load<std::uint32_t>(bytes, kHdrSlotSize));
  }
  InflightFile f;
  f.slots = base::load<std::uint32_t>(bytes, kHdrSlots);
  f.fd_bound = base::load<std::uint64_t>(bytes, kHdrFdBound);
  if (bytes.size() != file_size(f.slots)) {
    return base::errorf(EINVAL, "in-flight record: {} bytes for {} slots", bytes.size(), f.slots);
  }
  if (f.fd_bound == 0) {
    return base::make_error(EINVAL, "in-flight record: fd bound 0");
  }
  for (std::uint32_t i = 0; i < f.slots; ++i) {
    const auto slot =
        bytes.subspan(kInflightHeaderSize + std::size_t{i} * kInflightSlotSize, kInflightSlotSize);
    const auto state = base::load<std::uint32_t>(slot, kSlotState);
    if (state == 0) {
      continue;
    }
    InflightRecord r;
    r.fd = base::load<std::int32_t>(slot, kSlotFd);
    r.dev = base::load<std::uint64_t>(slot, kSlotDev);
    r.ino = base::load<std::uint64_t>(slot, kSlotIno);
    r.offset = base::load<std::uint64_t>(slot, kSlotOffset);
    r.count = base::load<std::uint64_t>(slot, kSlotCount);
    if (state != kInFlight || r.fd != static_cast<std::int32_t>(i) ||
        base::load<std::uint32_t>(slot, kSlotCheck) != slot_check(r) ||
        r.count > UINT64_MAX - r.offset) {
      ++f.torn;
      continue;
    }
    f.records.push_back(r);
  }
  return f;
}

std::vector<std::byte> format_inflight(std::uint32_t slots, std::uint64_t fd_bound,
                                       std::span<const InflightRecord> records) {
  std::vector<std::byte> out(file_size(slots));
  std::memcpy(out.data(), kMagic, sizeof kMagic);
  put<std::uint32_t>(out.data(), kHdrVersion, kInflightVersion);
  put<std::uint32_t>(out.data(), kHdrSlotSize, kInflightSlotSize);
  put<std::uint32_t>(out.data(), kHdrSlots, slots);
  put<std::uint64_t>(out.data(), kHdrFdBound, fd_bound);
  for (const auto& r : records) {
    if (r.fd < 0 || static_cast<std::uint64_t>(r.fd) >= slots) {
      continue;
    }
    std::byte* slot = out.data() + kInflightHeaderSize + std::size_t(r.fd) * kInflightSlotSize;
    write_fields(slot, r);
    put<std::uint32_t>(slot, kSlotState, kInFlight);
  }
  return out;
}

std::string inflight_path(const std::string& cache_dir) {
  return cache_dir + "/state/fanotify-inflight";
}

base::Result<InflightFile> load_inflight(const std::string& path) {
  CFN_ASSIGN_OR_RETURN(auto bytes, base::read_file(path));
  auto f = parse_inflight(bytes);
  if (!f) {
    return base::Unexpected(f.error().wrap(path));
  }
  return f;
}

base::Result<std::unique_ptr<InflightLog>> InflightLog::open(const std::string& path,
                                                             std::uint64_t fd_bound,
                                                             std::span<const InflightRecord> keep) {
  const std::string dir = std::filesystem::path(path).parent_path();
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return base::errno_error("mkdir " + dir);
  }
  // Written whole (no hole: a store into the mapping never allocates a block, so a full
  // disk cannot turn a record into SIGBUS), then renamed into place.
  const auto bytes = format_inflight(kInflightSlots, fd_bound, keep);
  CFN_TRY(base::write_file_atomic(path, bytes, 0600));
  CFN_ASSIGN_OR_RETURN(auto fd, base::UniqueFd::open(path, O_RDWR));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return base::errno_error("fstat " + path);
  }
  if (static_cast<std::uint64_t>(st.st_size) != bytes.size()) {
    return base::errorf(EIO, "{}: {} bytes after writing {}", path, st.st_size, bytes.size());
  }
  void* m = ::mmap(nullptr, bytes.size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (m == MAP_FAILED) {
    return base::errno_error("mmap " + path);
  }
  return std::unique_ptr<InflightLog>(new InflightLog(static_cast<std::byte*>(m), bytes.size()));
}

InflightLog::~InflightLog() {
  ::munmap(map_, size_);
}

void InflightLog::record(const InflightRecord& r) noexcept {
  if (r.fd < 0 || static_cast<std::uint64_t>(r.fd) >= kInflightSlots) {
    return;
  }
  std::byte* slot = map_ + kInflightHeaderSize + std::size_t(r.fd) * kInflightSlotSize;
  std::atomic_ref<std::uint32_t> state(*reinterpret_cast<std::uint32_t*>(slot + kSlotState));
  state.store(0, std::memory_order_relaxed);
  std::atomic_signal_fence(std::memory_order_release);
  write_fields(slot, r);
  state.store(kInFlight, std::memory_order_release);
}

void InflightLog::clear(int fd) noexcept {
  if (fd < 0 || static_cast<std::uint64_t>(fd) >= kInflightSlots) {
    return;
  }
  std::byte* slot = map_ + kInflightHeaderSize + std::size_t(fd) * kInflightSlotSize;
  std::atomic_ref<std::uint32_t> state(*reinterpret_cast<std::uint32_t*>(slot + kSlotState));
  state.store(0, std::memory_order_release);
}

}  // namespace cfnd
