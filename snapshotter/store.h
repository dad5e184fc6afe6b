// SPDX-License-Identifier: Apache-2.0
// The snapshot store: metadata in SQLite (ROOT/metadata.db) and one directory per snapshot,
// ROOT/snapshots/ID/{fs,work}, with containerd's snapshotter semantics (containerd 1.6
// snapshots/storage + snapshots/overlay):
//   - kinds active, view, committed; a parent must be committed; Commit turns an active
//     snapshot into a committed one under a new name, keeping its id and directory, with
//     the labels Commit was given (not inherited);
//   - keys and names are opaque strings (containerd's contain '/'); never used as paths.
//
// Errors carry these codes (the gRPC service maps them):
//   ENOENT  not found (snapshot, or the parent given to Prepare/View)
//   EEXIST  the key or name exists
//   EINVAL  bad argument: empty key, NUL in a key or label, key > 4096 bytes, a label over
//           containerd's limit, a parent that is not committed, a bad field path or filter
//   kErrFailedPrecondition (EBUSY)  Remove of a snapshot with children, Commit of a
//           snapshot that is not active, Mounts of a committed snapshot
//   EIO     anything else (SQLite or file system), with the cause in the text.
//
// Crash safety: the directory of a new snapshot is made as ROOT/snapshots/new-XXXXXX,
// renamed to its id inside the transaction that inserts the row, before COMMIT; Remove
// deletes the row and commits; the directory is renamed to ROOT/removing/rm-ID-N and removed
// only once that commit is synced.
// So a crash at any point leaves either a consistent pair or a directory that no row owns,
// which cleanup() removes. Ids are never reused (AUTOINCREMENT), so a row never meets a
// stale directory of an earlier snapshot; a directory left at an id whose transaction
// rolled back is moved aside when that id comes again.
//
// Durability: every call that changes metadata, except Remove, answers only once its
// transaction is on disk, but the fsync is not SQLite's inside COMMIT. The writing connection
// commits with synchronous=NORMAL (WAL: the frames are written, not synced), leaves the store's
// lock, and then fdatasync()s metadata.db-wal itself (make_durable): WAL frames are a log in commit
// order, so one fdatasync makes every transaction committed before it durable: callers whose
// transactions committed before a sync started share it (group commit), and a caller whose
// transaction came after the syncs in flight starts its own at once. Nothing that depends on a
// transaction (a Remove's renames, the reply) happens before its sync. Remove is answered after its
// COMMIT: the next fdatasync of any call makes it durable (or the store's own within
// kRemoveSyncDelay), and only then is its directory renamed and removed. After an OS crash before
// that sync the row is back with its directory: as if the Remove had not happened. containerd
// deletes a snapshot from its own database before calling Remove, and its garbage collection
// removes the backend snapshots it does not know, so such a row is removed again
// (docs/snapshotter.md, "Crash safety"). A reader may see a transaction whose caller has not been
// answered yet; after an OS crash in that window the transaction is gone, as if the call had failed
// (docs/snapshotter.md).
//
// Thread-safe: one writing connection under one mutex, one transaction per call; reads
// (Stat, Mounts, List, Usage) use a second, read-only connection under its own mutex, in a
// read transaction each, so they never wait for a writer's COMMIT. File system walks
// (usage of an active snapshot, the usage stored at Commit) run outside the mutex; whole
// directories are removed by a background thread at nice 19 and the idle I/O class (Remove
// returns once the row's delete is committed; the syncer renames the directory to
// ROOT/removing/rm-ID-N once that delete is on disk, and the remover removes it, as containerd's
// overlayfs removes asynchronously); what those threads have not renamed or removed at exit,
// Cleanup removes.
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/result.h"
#include "snapshotter/filter.h"
#include "snapshotter/mounts.h"

struct sqlite3;

namespace snapshotter {

inline constexpr int kErrFailedPrecondition = EBUSY;
// containerd's labels.Validate: key and value together at most 4096 bytes.
inline constexpr size_t kMaxLabelSize = 4096;
// Our own bound on one snapshot's labels (keys + values), so one row cannot grow the
// database without limit. containerd has none; 64 KiB is 16 labels at containerd's limit.
inline constexpr size_t kMaxLabelsTotal = 64 * 1024;
inline constexpr size_t kMaxKeySize = 4096;

using Labels = std::map<std::string, std::string>;

struct Info {
  std::string name;
  std::string parent;  // "" when none
  Kind kind = Kind::kActive;
  int64_t created_ns = 0;  // UTC, ns since the epoch
  int64_t updated_ns = 0;
  Labels labels;
};

// One snapshot of a parent chain.
struct ChainEntry {
  int64_t id = 0;
  std::string name;
  Labels labels;
  int64_t parent_id = 0;  // 0: none
};

struct Usage {
  int64_t size = 0;    // bytes of allocated blocks (st_blocks * 512), each inode once
  int64_t inodes = 0;  // distinct inodes, the fs dir itself included
};

// What mounts need: the id, kind, parents (nearest first) and the volatile label.
struct Snapshot {
  int64_t id = 0;
  Kind kind = Kind::kActive;
  std::vector<int64_t> parent_ids;
  bool volatile_ = false;
};

// EINVAL unless key is non-empty, at most kMaxKeySize bytes and free of NUL. `what` names
// the argument in the message ("key", "parent", "name").
[[nodiscard]] base::Status validate_key(std::string_view what, std::string_view key);
// EINVAL for a label with an empty key, a NUL, key+value over kMaxLabelSize, or a map over
// kMaxLabelsTotal.
[[nodiscard]] base::Status validate_labels(const Labels& labels);

// Disk usage of a directory tree, like containerd's fs.DiskUsage (hard links once).
[[nodiscard]] base::Result<Usage> disk_usage(const std::string& dir);

class Store {
 public:
  // Makes ROOT (0700), ROOT/snapshots and the database when missing. EINVAL for a root
  // that is not absolute or holds ':' or ',' (they would break overlay options).
  [[nodiscard]] static base::Result<std::unique_ptr<Store>> open(const std::string& root);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  [[nodiscard]] const std::string& root() const { return root_; }

  // Prepare (kind active) or View (kind view). Labels with empty values are dropped, as
  // containerd does.
  [[nodiscard]] base::Result<Snapshot> create(Kind kind, std::string_view key,
                                              std::string_view parent, Labels labels);
  // An active snapshot or a view, for Mounts.
  [[nodiscard]] base::Result<Snapshot> get(std::string_view key);
  [[nodiscard]] base::Status commit(std::string_view name, std::string_view key, Labels labels);
  [[nodiscard]] base::Status remove(std::string_view key);
  [[nodiscard]] base::Result<Info> stat(std::string_view key);
  // fieldpaths: "labels" (replace all), "labels.KEY" (set or, with an empty value, delete
  // one); none = replace all labels. Anything else is EINVAL. Kind, parent, name and the
  // creation time never change; the update time does.
  [[nodiscard]] base::Result<Info> update(const Info& info,
                                          std::span<const std::string> fieldpaths);
  [[nodiscard]] base::Result<std::vector<Info>> list(const Filter& filter);
  // The snapshot `key` alone, as lineage() gives it: ENOENT when it does not exist.
  [[nodiscard]] base::Result<ChainEntry> entry(std::string_view key);
  // The snapshot `name` and its parents, nearest first: id, name and labels of each.
  // ENOENT when name does not exist.
  [[nodiscard]] base::Result<std::vector<ChainEntry>> lineage(std::string_view name);
  [[nodiscard]] base::Result<Usage> usage(std::string_view key);
  // Remove every entry of ROOT/snapshots that no row owns and every entry of ROOT/removing
  // (a crash's leftovers), and wait for the background thread's removals. Returns the paths
  // this call removed itself.
  [[nodiscard]] base::Result<std::vector<std::string>> cleanup();
  // Wait until the background thread has removed every directory handed to it (tests).
  void drain_removals();

  struct Statements;

 private:
  Store(std::string root, sqlite3* db);
  // f(the readers' statements) under rmu_, in one read transaction on the readers'
  // connection (rolled back when f returns: it writes nothing): what Stat, Mounts, List,
  // Usage and the lineage lookups read is one consistent state. f's result, or the BEGIN's
  // error.
  template <typename F>
  auto read(F&& f) -> std::invoke_result_t<F, Statements&>;
  [[nodiscard]] base::Status init_schema();
  // At open: an active snapshot or a view whose directory is missing gets it again, empty
  // (docs/snapshotter.md, "Crash safety"); a committed one's is logged.
  [[nodiscard]] base::Status repair_directories();
  // Under mu_, right after a COMMIT: the sequence number make_durable() waits for.
  uint64_t committed();
  // Returns once every transaction up to seq is on disk: fdatasync of the WAL, shared by
  // every caller whose transaction committed before it started; a caller whose
  // transaction came after the syncs in flight starts its own at once. The fdatasync's
  // errno when it fails (EIO when the WAL is no longer the file it synced: holds_wal), and
  // EIO for every later call: after a failed fsync what reached the disk is unknown, so the
  // store refuses to go on.
  [[nodiscard]] base::Status make_durable(uint64_t seq);
  // wal_fd_ is still the file ROOT/metadata.db-wal names (same device and inode, not
  // unlinked). SQLite itself never changes it while the store is open (init_schema); this
  // catches a hand from outside (a removed or replaced WAL), after which a restart would
  // not find the frames make_durable() synced.
  [[nodiscard]] bool holds_wal() const;
  // EIO for a change refused because a sync failed earlier (sync_failed_): what reached
  // the disk is unknown. The message says what failed (sync_failure_: the fdatasync's
  // error, or the WAL removed or replaced from outside) and `refusal` what the store does
  // not do. Called with sync_mu_ held.
  [[nodiscard]] base::Unexpected failed_sync_error(std::string_view refusal) const;
  // Writes zeros past the end of metadata.db-wal up to the size at which SQLite starts it
  // again (store.cc says why). Logs and goes on when it cannot.
  void prefill_wal(const std::string& wal);
  // The ancestors of snapshot id (nearest first), from parents_ as far as it knows them,
  // else from st's connection in the caller's transaction (which fills parents_ in).
  [[nodiscard]] base::Result<std::vector<int64_t>> ancestors(Statements& st, int64_t id);

  std::string root_;
  std::string snapshots_dir_;
  // ROOT/removing: trees no row owns, renamed here from snapshots/ to be removed. A tree's
  // removal takes this directory's lock, not that of snapshots/, where a Prepare's mkdir and
  // rename wait for it (bench/snapgc: a removal's rmdirs, at nice 19, held it).
  std::string removing_dir_;
  std::mutex mu_;
  sqlite3* db_;
  std::unique_ptr<Statements> st_;
  std::mutex rmu_;  // the readers' connection
  sqlite3* rdb_ = nullptr;
  std::unique_ptr<Statements> rst_;

  // id -> parent id (0: none) of committed rows met by ancestors(), so that Mounts of a
  // 50-deep chain is not a recursive query each time. A row's parent never changes, and
  // ids of committed rows are never reused (AUTOINCREMENT; only an id whose INSERT rolled
  // back comes again, and such a row is never read), so an entry is right for as long as
  // its row lives; Remove drops it. (A reader that read a row just before its Remove
  // committed may put it back: a stale entry for an id that never comes again.)
  std::mutex parents_mu_;
  std::unordered_map<int64_t, int64_t> parents_;

  // Group commit of Remove: concurrent Removes (containerd's GC, `ctr image rm` of many
  // images at once) queue here and whichever caller finds no batch running deletes every
  // queued row in one transaction, one fsync for all, then wakes the others. Without it
  // each Remove held mu_ across its own fsync, and a Prepare or Commit waited behind all
  // of them (bench/snapgc).
  struct RemoveReq {
    std::string key;
    base::Status status;
    bool done = false;
  };
  void remove_batch(std::vector<std::shared_ptr<RemoveReq>>& batch);
  // mu_ for Prepare/View and Commit: counted in waiting_writers_ while waiting, so that a
  // Remove batch about to start lets them go first (for at most kYieldToWriters).
  std::unique_lock<std::mutex> writer_lock();
  // Counts a Prepare/View or Commit in active_writers_ from its start until it returns
  // (after its fdatasync), and when the last one ended.
  class ActiveWriter {
   public:
    explicit ActiveWriter(Store& s);
    ~ActiveWriter();
    ActiveWriter(const ActiveWriter&) = delete;
    ActiveWriter& operator=(const ActiveWriter&) = delete;

   private:
    Store& s_;
  };
  // Removal work (a Remove batch, a tree) waits until no Prepare/View or Commit is under
  // way or waiting and none ended within kWriterPause, for at most kYieldToWriters, or
  // until go_now(). So a removal of many snapshots goes in the pauses between those calls,
  // and one step per kYieldToWriters while they never pause: each Remove adds about 40 KB
  // of WAL frames, which the next call's fdatasync wrote and flushed (bench/snapgc: 38 MB
  // in a 0.4 s removal, Prepare + Commit p50 2x).
  void yield_to_writers(const std::function<bool()>& go_now);
  static constexpr std::chrono::milliseconds kYieldToWriters{20};
  static constexpr std::chrono::milliseconds kWriterPause{3};
  std::atomic<int> waiting_writers_{0};
  std::atomic<int> active_writers_{0};
  std::atomic<std::chrono::steady_clock::rep> last_writer_end_{0};
  std::atomic<int> draining_{0};  // drain_removals() callers: the remover does not yield
  std::mutex turn_mu_;
  std::condition_variable turn_cv_;
  std::mutex batch_mu_;  // taken before mu_, never after
  std::condition_variable batch_cv_;
  std::vector<std::shared_ptr<RemoveReq>> batch_pending_;
  bool batch_running_ = false;

  // Group commit (make_durable). wal_fd_ is -1 when metadata.db-wal could not be opened:
  // then SQLite syncs inside COMMIT (synchronous=FULL) and make_durable has nothing to do.
  int wal_fd_ = -1;
  std::atomic<uint64_t> committed_seq_{0};  // written under mu_
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  uint64_t synced_seq_ = 0;   // every transaction up to this one is on disk
  uint64_t started_seq_ = 0;  // the highest target of an fdatasync started (done or not)
  bool sync_failed_ = false;
  std::string sync_failure_;  // what failed first, once sync_failed_ (failed_sync_error)

  // Removed rows not yet known to be on disk: a Remove is answered after its COMMIT, and
  // its directory is renamed only once a later fdatasync of the WAL covers it (so that a
  // row an OS crash brings back still finds its directory). syncer_loop() waits for any
  // call's sync to cover them, at most kRemoveSyncDelay, then syncs itself: a removal of
  // many snapshots costs one fdatasync per period, or none while Prepares and Commits sync.
  struct Unsynced {
    uint64_t seq = 0;  // the COMMIT that deleted the row
    int64_t id = 0;
  };
  static constexpr std::chrono::milliseconds kRemoveSyncDelay{20};
  void syncer_loop();

  // The background removal of directories the syncer renamed to ROOT/removing/rm-ID-N.
  void remover_loop();
  std::mutex rm_mu_;                         // taken after mu_, never before
  std::condition_variable rm_cv_;            // work queued (for either thread), or stopping
  std::condition_variable idle_cv_;          // rm_busy_ became empty
  std::deque<Unsynced> rm_unsynced_;         // in commit order
  std::deque<std::string> rm_queue_;         // names under ROOT/snapshots
  std::unordered_set<std::string> rm_busy_;  // unsynced ("ID"), queued or being removed
  bool rm_stop_ = false;
  std::atomic<bool> stopping_{false};  // set under sync_mu_ too: wakes the syncer's wait
  std::thread syncer_;
  std::thread remover_;
};

// The field lookup of containerd's snapshot filter adaptor (kind, name, parent, labels.K).
[[nodiscard]] FieldLookup info_fields(const Info& info);

}  // namespace snapshotter
