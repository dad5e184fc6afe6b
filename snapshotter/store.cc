// SPDX-License-Identifier: Apache-2.0
#include "snapshotter/store.h"

#include <dirent.h>
#include <fcntl.h>
#include <fts.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include "base/defer.h"
#include "base/unique_fd.h"
#include "snapshotter/crash_point.h"

namespace snapshotter {
namespace {

int64_t now_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

base::Unexpected sql_error(sqlite3* db, std::string_view what) {
  return base::errorf(EIO, "sqlite: {}: {}", what, ::sqlite3_errmsg(db));
}

// A prepared statement, reset and unbound after each use (Use).
class Stmt {
 public:
  Stmt() = default;
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() { ::sqlite3_finalize(s_); }

  base::Status prepare(sqlite3* db, const char* sql) {
    db_ = db;
    if (::sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr) != SQLITE_OK) {
      return sql_error(db, sql);
    }
    return {};
  }

  // Binds and steps through one use; the destructor of Use resets the statement.
  class Use {
   public:
    explicit Use(Stmt& s) : s_(s) {}
    ~Use() {
      ::sqlite3_reset(s_.s_);
      ::sqlite3_clear_bindings(s_.s_);
    }
    Use(const Use&) = delete;
    Use& operator=(const Use&) = delete;
    Use& bind(int i, int64_t v) {
      ::sqlite3_bind_int64(s_.s_, i, v);
      return *this;
    }
    Use& bind(int i, std::string_view v) {
      ::sqlite3_bind_text(s_.s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
      return *this;
    }
    Use& bind_null(int i) {
      ::sqlite3_bind_null(s_.s_, i);
      return *this;
    }
    // true: a row; false: done. Errors are EIO.
    base::Result<bool> step() {
      int rc = ::sqlite3_step(s_.s_);
      if (rc == SQLITE_ROW) {
        return true;
      }
      if (rc == SQLITE_DONE) {
        return false;
      }
      return sql_error(s_.db_, ::sqlite3_sql(s_.s_));
    }
    base::Status run() {
      CFN_ASSIGN_OR_RETURN(bool row, step());
      (void)row;
      return {};
    }
    int64_t i64(int col) { return ::sqlite3_column_int64(s_.s_, col); }
    bool is_null(int col) { return ::sqlite3_column_type(s_.s_, col) == SQLITE_NULL; }
    std::string text(int col) {
      const auto* p = ::sqlite3_column_text(s_.s_, col);
      int n = ::sqlite3_column_bytes(s_.s_, col);
      return p == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(p), n);
    }

   private:
    Stmt& s_;
  };

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* s_ = nullptr;
};

base::Status exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (::sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = err != nullptr ? err : "?";
    ::sqlite3_free(err);
    return base::errorf(EIO, "sqlite: {}: {}", sql, msg);
  }
  return {};
}

// BEGIN IMMEDIATE ... COMMIT; rolls back when destroyed uncommitted.
base::Unexpected not_found(std::string_view key) {
  return base::errorf(ENOENT, "snapshot {} does not exist", key);
}

// Remove a directory tree; failures are logged (the row is already gone).
void remove_tree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) {
    spdlog::warn("removing {}: {}", path, ec.message());
  }
}

// The calling thread to nice 19 and the idle I/O class (ioprio_set(2), for this thread:
// both are per thread on Linux). Failures are harmless: the work runs, only sooner.
void lower_priority() {
  const pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
  if (::setpriority(PRIO_PROCESS, static_cast<id_t>(tid), 19) != 0) {
    spdlog::debug("setpriority for the removal thread: {}", std::strerror(errno));
  }
  constexpr int kIoprioWhoProcess = 1;  // IOPRIO_WHO_PROCESS
  constexpr int kIoprioClassIdle = 3;   // IOPRIO_CLASS_IDLE
  constexpr int kIoprioClassShift = 13;
  if (::syscall(SYS_ioprio_set, kIoprioWhoProcess, tid, kIoprioClassIdle << kIoprioClassShift) !=
      0) {
    spdlog::debug("ioprio_set for the removal thread: {}", std::strerror(errno));
  }
}

// Rename dir/name to a fresh to_dir/rm-NAME-N (never replacing anything). Returns the new
// name, or "" when the rename failed (logged).
std::string move_aside(const std::string& dir, const std::string& name, const std::string& to_dir) {
  std::string base = name.rfind("rm-", 0) == 0 ? name : "rm-" + name;
  for (int n = 0; n < 1000; ++n) {
    std::string to = base + "-" + std::to_string(n);
    if (::renameat2(AT_FDCWD, (dir + "/" + name).c_str(), AT_FDCWD, (to_dir + "/" + to).c_str(),
                    RENAME_NOREPLACE) == 0) {
      return to;
    }
    if (errno == ENOENT) {
      return "";  // gone already (Cleanup moved it aside first)
    }
    if (errno != EEXIST) {
      spdlog::warn("renaming {}/{} to {}: {}", dir, name, to, std::strerror(errno));
      return "";
    }
  }
  return "";
}

// The names in dir but "." and "..".
base::Result<std::vector<std::string>> list_dir(const std::string& dir) {
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    return base::errno_error("opendir " + dir);
  }
  auto close = base::defer([&] { ::closedir(d); });
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") {
      names.emplace_back(n);
    }
  }
  return names;
}

bool parse_id(std::string_view s, int64_t* id) {
  if (s.empty() || s.size() > 18 || s[0] == '0') {
    return false;
  }
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *id);
  return ec == std::errc() && p == s.data() + s.size();
}

Labels without_empty_values(Labels labels) {
  std::erase_if(labels, [](const auto& kv) { return kv.second.empty(); });
  return labels;
}

}  // namespace

struct Store::Statements {
  Stmt begin_read;
  Stmt begin_write;
  Stmt commit;
  Stmt rollback;
  Stmt by_key;        // key -> id, kind, parent_id, parent key, created, updated, size, inodes
  Stmt labels_of;     // id -> name, value
  Stmt insert;        // key, parent_id, kind, created, updated
  Stmt insert_label;  // id, name, value
  Stmt delete_labels;
  Stmt chain;  // id -> ancestor ids, nearest first
  Stmt has_child;
  Stmt delete_row;
  Stmt commit_row;  // id, name, now, size, inodes
  Stmt touch;       // id, now
  Stmt all_rows;
  Stmt all_labels;
  Stmt all_ids;
  Stmt has_label;     // id, name
  Stmt labeled_rows;  // name, value -> the rows of all_rows carrying that label

  base::Status prepare(sqlite3* db) {
    CFN_TRY(begin_read.prepare(db, "BEGIN"));
    CFN_TRY(begin_write.prepare(db, "BEGIN IMMEDIATE"));
    CFN_TRY(commit.prepare(db, "COMMIT"));
    CFN_TRY(rollback.prepare(db, "ROLLBACK"));
    CFN_TRY(by_key.prepare(db,
                           "SELECT s.id, s.kind, s.parent_id, p.key, s.created_ns, s.updated_ns, "
                           "s.size, s.inodes FROM snapshots s LEFT JOIN snapshots p ON "
                           "p.id = s.parent_id WHERE s.key = ?1"));
    CFN_TRY(labels_of.prepare(db, "SELECT name, value FROM labels WHERE snapshot_id = ?1"));
    CFN_TRY(insert.prepare(db,
                           "INSERT INTO snapshots (key, parent_id, kind, created_ns, updated_ns) "
                           "VALUES (?1, ?2, ?3, ?4, ?4)"));
    CFN_TRY(insert_label.prepare(
        db, "INSERT OR REPLACE INTO labels (snapshot_id, name, value) VALUES (?1, ?2, ?3)"));
    CFN_TRY(delete_labels.prepare(db, "DELETE FROM labels WHERE snapshot_id = ?1"));
    CFN_TRY(chain.prepare(db,
                          "WITH RECURSIVE c(id, parent_id, depth) AS ("
                          " SELECT id, parent_id, 0 FROM snapshots WHERE id = ?1"
                          " UNION ALL SELECT s.id, s.parent_id, c.depth + 1 FROM snapshots s"
                          " JOIN c ON s.id = c.parent_id)"
                          " SELECT id FROM c WHERE depth > 0 ORDER BY depth"));
    CFN_TRY(has_child.prepare(db, "SELECT 1 FROM snapshots WHERE parent_id = ?1 LIMIT 1"));
    CFN_TRY(delete_row.prepare(db, "DELETE FROM snapshots WHERE id = ?1"));
    CFN_TRY(commit_row.prepare(db,
                               "UPDATE snapshots SET key = ?2, kind = 3, created_ns = ?3, "
                               "updated_ns = ?3, size = ?4, inodes = ?5 WHERE id = ?1"));
    CFN_TRY(touch.prepare(db, "UPDATE snapshots SET updated_ns = ?2 WHERE id = ?1"));
    CFN_TRY(all_rows.prepare(db,
                             "SELECT s.id, s.key, s.kind, p.key, s.created_ns, s.updated_ns "
                             "FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id"));
    CFN_TRY(all_labels.prepare(db, "SELECT snapshot_id, name, value FROM labels"));
    CFN_TRY(all_ids.prepare(db, "SELECT id FROM snapshots"));
    CFN_TRY(has_label.prepare(db, "SELECT 1 FROM labels WHERE snapshot_id = ?1 AND name = ?2"));
    CFN_TRY(labeled_rows.prepare(
        db,
        "SELECT s.id, s.key, s.kind, p.key, s.created_ns, s.updated_ns FROM labels l "
        "JOIN snapshots s ON s.id = l.snapshot_id LEFT JOIN snapshots p ON p.id = s.parent_id "
        "WHERE l.name = ?1 AND l.value = ?2"));
    return {};
  }
};

namespace {

// One transaction on the connection of st, with st's prepared BEGIN / COMMIT / ROLLBACK
// (no SQL parsed per call); rolled back unless committed.
class Txn {
 public:
  explicit Txn(Store::Statements& st) : st_(st) {}
  ~Txn() {
    if (open_) {
      (void)Stmt::Use(st_.rollback).run();
    }
  }
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  // BEGIN IMMEDIATE: takes the write lock at once.
  base::Status begin() { return start(st_.begin_write); }
  // A plain BEGIN: a read transaction.
  base::Status begin_read() { return start(st_.begin_read); }
  base::Status commit() {
    auto st = Stmt::Use(st_.commit).run();
    if (st) {
      open_ = false;
    }
    return st;
  }

 private:
  base::Status start(Stmt& begin) {
    CFN_TRY(Stmt::Use(begin).run());
    open_ = true;
    return {};
  }

  Store::Statements& st_;
  bool open_ = false;
};

struct Row {
  int64_t id = 0;
  Kind kind = Kind::kActive;
  int64_t parent_id = 0;  // 0: none
  std::string parent;
  int64_t created_ns = 0;
  int64_t updated_ns = 0;
  Usage usage;
};

// The row of key, or nullopt.
base::Result<std::optional<Row>> find(Store::Statements& st, std::string_view key) {
  Stmt::Use q(st.by_key);
  q.bind(1, key);
  CFN_ASSIGN_OR_RETURN(bool row, q.step());
  if (!row) {
    return std::optional<Row>();
  }
  Row r;
  r.id = q.i64(0);
  r.kind = static_cast<Kind>(q.i64(1));
  r.parent_id = q.is_null(2) ? 0 : q.i64(2);
  r.parent = q.is_null(3) ? std::string() : q.text(3);
  r.created_ns = q.i64(4);
  r.updated_ns = q.i64(5);
  r.usage = Usage{q.i64(6), q.i64(7)};
  return std::optional<Row>(std::move(r));
}

base::Result<Labels> labels_of(Store::Statements& st, int64_t id) {
  Labels labels;
  Stmt::Use q(st.labels_of);
  q.bind(1, id);
  for (;;) {
    CFN_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row) {
      break;
    }
    labels.emplace(q.text(0), q.text(1));
  }
  return labels;
}

// The row of key with its labels; NotFound when there is none.
base::Result<std::pair<Row, Labels>> find_labelled(Store::Statements& st, std::string_view key) {
  CFN_ASSIGN_OR_RETURN(auto r, find(st, key));
  if (!r) {
    return not_found(key);
  }
  CFN_ASSIGN_OR_RETURN(auto labels, labels_of(st, r->id));
  return std::pair<Row, Labels>(std::move(*r), std::move(labels));
}

base::Status write_labels(Store::Statements& st, int64_t id, const Labels& labels) {
  {
    Stmt::Use d(st.delete_labels);
    d.bind(1, id);
    CFN_TRY(d.run());
  }
  for (const auto& [k, v] : labels) {
    Stmt::Use q(st.insert_label);
    q.bind(1, id).bind(2, k).bind(3, v);
    CFN_TRY(q.run());
  }
  return {};
}

base::Result<std::vector<int64_t>> chain_of(Store::Statements& st, int64_t id) {
  std::vector<int64_t> ids;
  Stmt::Use q(st.chain);
  q.bind(1, id);
  for (;;) {
    CFN_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row) {
      break;
    }
    ids.push_back(q.i64(0));
  }
  return ids;
}

base::Result<bool> has_label(Store::Statements& st, int64_t id, std::string_view name) {
  Stmt::Use q(st.has_label);
  q.bind(1, id).bind(2, name);
  return q.step();
}

Info info_of(std::string name, const Row& r, Labels labels) {
  return Info{std::move(name), r.parent, r.kind, r.created_ns, r.updated_ns, std::move(labels)};
}

}  // namespace

base::Status validate_key(std::string_view what, std::string_view key) {
  if (key.empty()) {
    return base::errorf(EINVAL, "{} must not be empty", what);
  }
  if (key.size() > kMaxKeySize) {
    return base::errorf(EINVAL, "{} is {} bytes, more than {}", what, key.size(), kMaxKeySize);
  }
  if (key.find('\0') != std::string_view::npos) {
    return base::errorf(EINVAL, "{} contains a NUL byte", what);
  }
  return {};
}

base::Status validate_labels(const Labels& labels) {
  size_t total = 0;
  for (const auto& [k, v] : labels) {
    if (k.empty()) {
      return base::errorf(EINVAL, "label key must not be empty");
    }
    if (k.find('\0') != std::string::npos || v.find('\0') != std::string::npos) {
      return base::errorf(EINVAL, "label {:?} contains a NUL byte", k.substr(0, 64));
    }
    if (k.size() + v.size() > kMaxLabelSize) {
      return base::errorf(EINVAL,
                          "label key and value greater than maximum size ({} bytes), key: {}",
                          kMaxLabelSize, k.substr(0, 256));
    }
    total += k.size() + v.size();
  }
  if (total > kMaxLabelsTotal) {
    return base::errorf(EINVAL, "labels total {} bytes, more than {}", total, kMaxLabelsTotal);
  }
  return {};
}

base::Result<Usage> disk_usage(const std::string& dir) {
  char* paths[] = {const_cast<char*>(dir.c_str()), nullptr};
  FTS* fts = ::fts_open(paths, FTS_PHYSICAL | FTS_NOCHDIR, nullptr);
  if (fts == nullptr) {
    return base::errno_error("fts_open " + dir);
  }
  auto close = base::defer([&] { ::fts_close(fts); });
  struct Key {
    dev_t dev;
    ino_t ino;
    bool operator==(const Key& o) const { return dev == o.dev && ino == o.ino; }
  };
  struct Hash {
    size_t operator()(const Key& k) const { return std::hash<uint64_t>()(k.ino * 31 + k.dev); }
  };
  std::unordered_set<Key, Hash> seen;
  Usage u;
  errno = 0;
  while (FTSENT* e = ::fts_read(fts)) {
    switch (e->fts_info) {
      case FTS_DP:
        continue;
      case FTS_DNR:
      case FTS_ERR:
      case FTS_NS:
        return base::errno_error(e->fts_errno, std::string("reading ") + e->fts_path);
      default:
        break;
    }
    const struct stat* s = e->fts_statp;
    if (seen.insert(Key{s->st_dev, s->st_ino}).second) {
      u.size += static_cast<int64_t>(s->st_blocks) * 512;
    }
  }
  if (errno != 0) {  // fts_read ends with NULL and errno 0, or NULL and the error
    return base::errno_error("reading " + dir);
  }
  u.inodes = static_cast<int64_t>(seen.size());
  return u;
}

FieldLookup info_fields(const Info& info) {
  return [&info](std::span<const std::string> fp) -> std::optional<std::string_view> {
    if (fp.empty()) {
      return std::nullopt;
    }
    if (fp[0] == "kind") {
      switch (info.kind) {
        case Kind::kActive:
          return "active";
        case Kind::kView:
          return "view";
        case Kind::kCommitted:
          return "committed";
      }
      return std::nullopt;
    }
    if (fp[0] == "name") {
      return info.name;
    }
    if (fp[0] == "parent") {
      return info.parent;
    }
    if (fp[0] == "labels") {
      if (info.labels.empty()) {
        return std::nullopt;
      }
      std::string key;
      for (size_t i = 1; i < fp.size(); ++i) {
        if (i > 1) {
          key.push_back('.');
        }
        key += fp[i];
      }
      auto it = info.labels.find(key);
      if (it == info.labels.end()) {
        return std::nullopt;
      }
      return std::string_view(it->second);
    }
    return std::nullopt;
  };
}

Store::Store(std::string root, sqlite3* db)
    : root_(std::move(root)),
      snapshots_dir_(root_ + "/snapshots"),
      removing_dir_(root_ + "/removing"),
      db_(db),
      st_(std::make_unique<Statements>()),
      syncer_([this] { syncer_loop(); }),
      remover_([this] { remover_loop(); }) {}

Store::~Store() {
  rst_.reset();
  ::sqlite3_close_v2(rdb_);
  {
    std::lock_guard lk(rm_mu_);
    rm_stop_ = true;  // what is still queued or unsynced stays for Cleanup
  }
  {
    std::lock_guard lk(sync_mu_);
    stopping_ = true;
  }
  sync_cv_.notify_all();
  rm_cv_.notify_all();
  syncer_.join();
  remover_.join();
  st_.reset();
  ::sqlite3_close_v2(db_);
  if (wal_fd_ >= 0) {
    ::close(wal_fd_);
  }
}

void Store::syncer_loop() {
  std::unique_lock lk(rm_mu_);
  for (;;) {
    rm_cv_.wait(lk, [this] { return rm_stop_ || !rm_unsynced_.empty(); });
    if (rm_stop_) {
      // Not renamed: each directory stays under its id, which no row owns once the delete
      // reaches the disk (SQLite's checkpoint at close syncs it): Cleanup's to remove.
      return;
    }
    const uint64_t seq = rm_unsynced_.back().seq;
    lk.unlock();
    {
      // Any call's fdatasync that starts after seq's COMMIT covers it (group commit); only
      // when none comes within kRemoveSyncDelay does this thread sync.
      std::unique_lock s(sync_mu_);
      sync_cv_.wait_for(s, kRemoveSyncDelay,
                        [&] { return synced_seq_ >= seq || sync_failed_ || stopping_; });
    }
    base::Status st;
    if (!stopping_) {
      crash_point("remove-before-sync");
      st = make_durable(seq);
    }
    lk.lock();
    std::vector<int64_t> ids;
    while (!rm_unsynced_.empty() && rm_unsynced_.front().seq <= seq) {
      ids.push_back(rm_unsynced_.front().id);
      rm_unsynced_.pop_front();
    }
    for (int64_t id : ids) {
      const std::string name = std::to_string(id);
      rm_busy_.erase(name);
      // A failed sync leaves the directory under its id (Cleanup refuses to remove anything
      // after it); so does stopping.
      if (!st || stopping_) {
        continue;
      }
      // Renamed under rm_mu_ with the hand-over to the remover: Cleanup, which reads
      // rm_busy_ under mu_ after listing the directory, sees each one either as "ID" held
      // here or as a name the remover holds. A failed rename leaves a directory no row owns:
      // Cleanup's to take.
      if (auto g = move_aside(snapshots_dir_, name, removing_dir_); !g.empty()) {
        rm_busy_.insert(g);
        rm_queue_.push_back(std::move(g));
      }
    }
    rm_cv_.notify_all();
    if (rm_busy_.empty()) {
      idle_cv_.notify_all();
    }
  }
}

void Store::remover_loop() {
  // Removing a directory tree is no caller's business (the row is gone): it runs at the
  // lowest CPU priority and the idle I/O class, so that its unlinks and their journal
  // writes yield to the calls that wait (a Prepare's mkdir and fsync).
  lower_priority();
  std::unique_lock lk(rm_mu_);
  for (;;) {
    rm_cv_.wait(lk, [this] { return rm_stop_ || !rm_queue_.empty(); });
    if (rm_stop_) {
      rm_queue_.clear();
      rm_unsynced_.clear();
      rm_busy_.clear();
      idle_cv_.notify_all();
      return;
    }
    std::string name = std::move(rm_queue_.front());
    rm_queue_.pop_front();
    lk.unlock();
    // As a Remove batch does: a tree's unlinks (and, on a file system mounted with
    // `discard`, their discards) wait for a pause in the Prepares and Commits, unless a
    // Cleanup waits for them.
    yield_to_writers([this] { return draining_.load() != 0; });
    remove_tree(removing_dir_ + "/" + name);
    lk.lock();
    rm_busy_.erase(name);
    if (rm_busy_.empty()) {
      idle_cv_.notify_all();
    }
  }
}

void Store::drain_removals() {
  draining_.fetch_add(1);
  {
    std::lock_guard turn(turn_mu_);
    turn_cv_.notify_all();  // the remover stops yielding
  }
  {
    std::unique_lock lk(rm_mu_);
    idle_cv_.wait(lk, [this] { return rm_busy_.empty(); });
  }
  draining_.fetch_sub(1);
}

base::Result<std::unique_ptr<Store>> Store::open(const std::string& root_in) {
  std::string root = root_in;
  while (root.size() > 1 && root.back() == '/') {
    root.pop_back();
  }
  if (root.empty() || root[0] != '/') {
    return base::errorf(EINVAL, "root {} is not an absolute path", root_in);
  }
  if (root.find_first_of(":,") != std::string::npos) {
    return base::errorf(EINVAL, "root {} holds ':' or ',', which overlay options cannot carry",
                        root);
  }
  std::error_code ec;
  std::filesystem::create_directories(root, ec);
  if (ec) {
    return base::errorf(EIO, "creating {}: {}", root, ec.message());
  }
  if (::chmod(root.c_str(), 0700) != 0) {
    return base::errno_error("chmod " + root);
  }
  for (const std::string& dir : {root + "/snapshots", root + "/removing"}) {
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return base::errno_error("mkdir " + dir);
    }
  }
  std::string db_path = root + "/metadata.db";
  sqlite3* db = nullptr;
  int rc =
      ::sqlite3_open_v2(db_path.c_str(), &db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db != nullptr ? ::sqlite3_errmsg(db) : ::sqlite3_errstr(rc);
    ::sqlite3_close_v2(db);
    return base::errorf(EIO, "opening {}: {}", db_path, msg);
  }
  std::unique_ptr<Store> s(new Store(root, db));
  CFN_TRY(s->init_schema().map_error([&](base::Error e) { return e.wrap(db_path); }));
  CFN_TRY(s->repair_directories());
  // The readers' connection: Stat, Mounts, List and Usage read the last committed state
  // (WAL) without waiting for a writer's COMMIT and its fsync.
  rc = ::sqlite3_open_v2(db_path.c_str(), &s->rdb_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                         nullptr);
  if (rc != SQLITE_OK) {
    return base::errorf(EIO, "opening {} for reading: {}", db_path, ::sqlite3_errstr(rc));
  }
  ::sqlite3_busy_timeout(s->rdb_, 5000);
  s->rst_ = std::make_unique<Statements>();
  CFN_TRY(s->rst_->prepare(s->rdb_).map_error([&](base::Error e) { return e.wrap(db_path); }));
  return s;
}

base::Status Store::init_schema() {
  ::sqlite3_busy_timeout(db_, 5000);
  CFN_TRY(exec(db_, "PRAGMA journal_mode = WAL"));
  // FULL until the WAL is open here: then NORMAL, and make_durable() syncs outside mu_.
  CFN_TRY(exec(db_, "PRAGMA synchronous = FULL"));
  CFN_TRY(exec(db_, "PRAGMA foreign_keys = ON"));
  CFN_TRY(exec(db_,
               "CREATE TABLE IF NOT EXISTS snapshots ("
               " id INTEGER PRIMARY KEY AUTOINCREMENT,"
               " key TEXT NOT NULL UNIQUE,"
               " parent_id INTEGER REFERENCES snapshots(id),"
               " kind INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),"
               " created_ns INTEGER NOT NULL,"
               " updated_ns INTEGER NOT NULL,"
               " size INTEGER NOT NULL DEFAULT 0,"
               " inodes INTEGER NOT NULL DEFAULT 0);"
               "CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);"
               "CREATE TABLE IF NOT EXISTS labels ("
               " snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,"
               " name TEXT NOT NULL,"
               " value TEXT NOT NULL,"
               " PRIMARY KEY (snapshot_id, name)) WITHOUT ROWID;"
               "CREATE INDEX IF NOT EXISTS labels_name_value ON labels(name, value);"
               "PRAGMA user_version = 1;"));
  // The WAL exists once the connection has read the database in WAL mode, and SQLite keeps
  // this file (the same inode) while a connection is open: it restarts it from the top
  // after a checkpoint, never truncates (journal_size_limit -1) or deletes it. An fdatasync
  // on any descriptor of it syncs the frames this connection wrote.
  std::string wal = root_ + "/metadata.db-wal";
  wal_fd_ = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
  if (wal_fd_ >= 0) {
    CFN_TRY(exec(db_, "PRAGMA synchronous = NORMAL"));
    prefill_wal(wal);
  } else {
    spdlog::warn("opening {}: {}; SQLite syncs inside each commit", wal, std::strerror(errno));
  }
  return st_->prepare(db_);
}

// SQLite writes the WAL from the top again after each checkpoint (every ~1,000 pages), so a
// long-running store overwrites blocks the WAL already has, and a commit's fdatasync waits
// for two things: the pages, then the disk's cache flush. Until the WAL first reaches that
// size (a new root, and after every restart: SQLite deletes the WAL at a clean close) each
// commit appends, and the fdatasync of an appending file also writes the new blocks' extent
// metadata and the inode (its size): four waits instead of two, and on a busy machine each
// wait ends with the thread waiting for a CPU (docs/benchmarks.md, bench/snapshotter: the
// scheduler trace). So the WAL is made that size at once, with zeros written (not fallocate:
// writing into unwritten extents changes metadata too). Safe for SQLite: it reads frames
// from the top until one's salt or checksum does not match, which a zero frame never does,
// as it already does past the frames of a restarted WAL. Only past the file's end, and only
// an optimisation: on an error the store goes on without it.
void Store::prefill_wal(const std::string& wal) {
  int page = 4096;
  {
    Stmt q;
    if (q.prepare(db_, "PRAGMA page_size")) {
      Stmt::Use u(q);
      if (auto row = u.step(); row && *row) {
        page = static_cast<int>(u.i64(0));
      }
    }
  }
  // The header, then the 1,000 frames after which SQLite checkpoints, and a few the last
  // transaction before the checkpoint may add.
  const off_t want = 32 + off_t{1024} * (page + 24);
  base::UniqueFd fd(::open(wal.c_str(), O_WRONLY | O_CLOEXEC));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0) {
    spdlog::warn("{}: not made {} bytes ahead: {}", wal, want, std::strerror(errno));
    return;
  }
  static const std::string zeros(256 << 10, '\0');
  for (off_t off = st.st_size; off < want;) {
    const size_t n = static_cast<size_t>(std::min<off_t>(want - off, zeros.size()));
    const ssize_t w = ::pwrite(fd.get(), zeros.data(), n, off);
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w <= 0) {
      spdlog::warn("{}: not made {} bytes ahead: {}", wal, want, std::strerror(errno));
      return;
    }
    off += w;
  }
  if (st.st_size < want && ::fdatasync(fd.get()) != 0) {
    spdlog::warn("{}: fdatasync after making it {} bytes: {}", wal, want, std::strerror(errno));
  }
}

base::Status Store::repair_directories() {
  // No directory is fsynced (as in containerd's overlayfs): after an OS crash a row that
  // was synced may have lost the directory its Prepare made. An active snapshot's fs and
  // work and a view's fs were empty when made, and what was written into them since was
  // not synced either, so they are made again, empty, owned like the parent's as Prepare
  // does. A committed snapshot's content cannot be made again: logged, left as it is.
  Stmt q;
  CFN_TRY(q.prepare(db_, "SELECT id, kind, parent_id FROM snapshots"));
  Stmt::Use u(q);
  for (;;) {
    CFN_ASSIGN_OR_RETURN(bool row, u.step());
    if (!row) {
      return {};
    }
    const int64_t id = u.i64(0);
    const auto kind = static_cast<Kind>(u.i64(1));
    const int64_t parent_id = u.is_null(2) ? 0 : u.i64(2);
    const std::string fs = fs_path(root_, id);
    const std::string work = work_path(root_, id);
    struct stat st {};
    const bool has_fs = ::stat(fs.c_str(), &st) == 0;
    const bool has_work = kind != Kind::kActive || ::stat(work.c_str(), &st) == 0;
    if (has_fs && has_work) {
      continue;
    }
    if (kind == Kind::kCommitted) {
      spdlog::error("committed snapshot {} has no directory {}: its content is lost", id, fs);
      continue;
    }
    const std::string dir = snapshots_dir_ + "/" + std::to_string(id);
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return base::errno_error("mkdir " + dir);
    }
    if (!has_fs) {
      if (::mkdir(fs.c_str(), 0755) != 0 || ::chmod(fs.c_str(), 0755) != 0) {
        return base::errno_error("mkdir " + fs);
      }
      struct stat pst {};
      if (parent_id != 0 && ::stat(fs_path(root_, parent_id).c_str(), &pst) == 0 &&
          ::lchown(fs.c_str(), pst.st_uid, pst.st_gid) != 0) {
        return base::errno_error("chown " + fs);
      }
    }
    if (!has_work && (::mkdir(work.c_str(), 0711) != 0 || ::chmod(work.c_str(), 0711) != 0)) {
      return base::errno_error("mkdir " + work);
    }
    spdlog::warn(
        "snapshot {}: {} was missing (an OS crash before it reached the disk?): "
        "made again, empty",
        id, has_fs ? work : fs);
  }
}

uint64_t Store::committed() {
  return committed_seq_.fetch_add(1) + 1;
}

base::Status Store::make_durable(uint64_t seq) {
  if (wal_fd_ < 0) {
    return {};
  }
  std::unique_lock lk(sync_mu_);
  for (;;) {
    if (sync_failed_) {
      return failed_sync_error("what is on disk is unknown");
    }
    if (synced_seq_ >= seq) {
      return {};
    }
    if (started_seq_ < seq) {
      break;
    }
    // A sync that started after seq was committed is in flight: it covers seq.
    sync_cv_.wait(lk);
  }
  // No sync in flight covers seq (any in flight started before it was committed): start
  // one now rather than wait for those, so a call waits for one fdatasync, not two.
  // Every transaction numbered up to target has written its frames (the number is taken
  // after COMMIT returned), so this fdatasync covers them all.
  const uint64_t target = committed_seq_.load();
  started_seq_ = std::max(started_seq_, target);
  lk.unlock();
  int rc = ::fdatasync(wal_fd_);
  int err = errno;
  std::string what = "fdatasync " + root_ + "/metadata.db-wal";
  bool replaced = false;
  if (rc == 0 && !holds_wal()) {
    // Our sync went to a file that is no longer the WAL a restart reads: the frames it
    // covered are not where SQLite will look for them.
    rc = -1;
    err = EIO;
    what = root_ +
           "/metadata.db-wal is no longer the file the store synced (removed or "
           "replaced behind its back)";
    replaced = true;
  }
  lk.lock();
  if (rc == 0) {
    synced_seq_ = std::max(synced_seq_, target);
  } else {
    // Later refusals (failed_sync_error) name the first failure: what made the store stop.
    if (!sync_failed_) {
      if (replaced) {
        sync_failure_ = root_ +
                        "/metadata.db-wal was removed or replaced behind the store's back "
                        "earlier (a restart would not read the file the store synced)";
      } else {
        sync_failure_ = fmt::format("fdatasync of {}/metadata.db-wal failed earlier ({})", root_,
                                    std::strerror(err));
      }
    }
    sync_failed_ = true;
    spdlog::error("{}: {}", what, std::strerror(err));
  }
  sync_cv_.notify_all();
  if (rc != 0) {
    return base::errno_error(err, what);
  }
  return {};
}

base::Unexpected Store::failed_sync_error(std::string_view refusal) const {
  return base::errorf(EIO, "{}: {}; restart the snapshotter", sync_failure_, refusal);
}

bool Store::holds_wal() const {
  struct stat held {};
  struct stat named {};
  const std::string wal = root_ + "/metadata.db-wal";
  return ::fstat(wal_fd_, &held) == 0 && ::stat(wal.c_str(), &named) == 0 &&
         held.st_dev == named.st_dev && held.st_ino == named.st_ino && held.st_nlink > 0;
}

base::Result<Snapshot> Store::create(Kind kind, std::string_view key, std::string_view parent,
                                     Labels labels) {
  if (kind != Kind::kActive && kind != Kind::kView) {
    return base::errorf(
        EINVAL, "snapshot type invalid; only snapshots of type Active or View can be created");
  }
  CFN_TRY(validate_key("key", key));
  if (!parent.empty()) {
    CFN_TRY(validate_key("parent", parent));
  }
  CFN_TRY(validate_labels(labels));
  labels = without_empty_values(std::move(labels));

  const ActiveWriter active(*this);
  auto lock = writer_lock();
  // The directory first, under a name no row can own.
  std::string tmp = snapshots_dir_ + "/new-XXXXXX";
  if (::mkdtemp(tmp.data()) == nullptr) {
    return base::errno_error("mkdtemp " + tmp);
  }
  std::string dir = tmp;  // where the directory is now; removed on failure
  auto drop_dir = base::defer([&] { remove_tree(dir); });
  std::string fs = tmp + "/fs";
  if (::mkdir(fs.c_str(), 0755) != 0 || ::chmod(fs.c_str(), 0755) != 0) {
    return base::errno_error("mkdir " + fs);
  }
  if (kind == Kind::kActive) {
    std::string work = tmp + "/work";
    if (::mkdir(work.c_str(), 0711) != 0 || ::chmod(work.c_str(), 0711) != 0) {
      return base::errno_error("mkdir " + work);
    }
  }

  Txn txn(*st_);
  CFN_TRY(txn.begin());
  CFN_ASSIGN_OR_RETURN(auto existing, find(*st_, key));
  if (existing) {
    return base::errorf(EEXIST, "snapshot {} already exists", key);
  }
  int64_t parent_id = 0;
  if (!parent.empty()) {
    CFN_ASSIGN_OR_RETURN(auto p, find(*st_, parent));
    if (!p) {
      return base::errorf(ENOENT, "parent snapshot {} does not exist", parent);
    }
    if (p->kind != Kind::kCommitted) {
      return base::errorf(EINVAL, "parent {} is not committed snapshot", parent);
    }
    parent_id = p->id;
  }
  int64_t now = now_ns();
  {
    Stmt::Use q(st_->insert);
    q.bind(1, key);
    if (parent_id != 0) {
      q.bind(2, parent_id);
    } else {
      q.bind_null(2);
    }
    q.bind(3, static_cast<int64_t>(kind)).bind(4, now);
    CFN_TRY(q.run());
  }
  Snapshot snap;
  snap.id = ::sqlite3_last_insert_rowid(db_);
  snap.kind = kind;
  snap.volatile_ = labels.contains(kVolatileLabel);
  CFN_TRY(write_labels(*st_, snap.id, labels));
  if (parent_id != 0) {
    // From the parent (a committed row), not the new id: this transaction may roll back.
    CFN_ASSIGN_OR_RETURN(snap.parent_ids, ancestors(*st_, parent_id));
    snap.parent_ids.insert(snap.parent_ids.begin(), parent_id);
    // The new layer's root is owned like its parent's, as containerd's overlay does.
    struct stat pst {};
    std::string pfs = fs_path(root_, parent_id);
    if (::stat(pfs.c_str(), &pst) != 0) {
      return base::errno_error("stat " + pfs);
    }
    if (::lchown(fs.c_str(), pst.st_uid, pst.st_gid) != 0) {
      return base::errno_error("chown " + fs);
    }
  }
  std::string name = std::to_string(snap.id);
  std::string final_dir = snapshots_dir_ + "/" + name;
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0) {
    if (errno != EEXIST && errno != ENOTEMPTY) {
      return base::errno_error("rename " + tmp + " to " + final_dir);
    }
    // Left by a crash between rename and COMMIT of an earlier try at this id: no row owns it.
    spdlog::warn("moving aside the stale directory {}", final_dir);
    if (move_aside(snapshots_dir_, name, removing_dir_).empty() ||
        ::rename(tmp.c_str(), final_dir.c_str()) != 0) {
      return base::errno_error("rename " + tmp + " to " + final_dir);
    }
  }
  dir = final_dir;
  crash_point("prepare-after-mkdir");
  CFN_TRY(txn.commit());
  drop_dir.cancel();  // the row owns it now, synced or not
  const uint64_t seq = committed();
  lock.unlock();
  CFN_TRY(make_durable(seq));
  crash_point("prepare-after-commit");
  return snap;
}

base::Result<std::vector<int64_t>> Store::ancestors(Statements& st, int64_t id) {
  {
    std::lock_guard lk(parents_mu_);
    std::vector<int64_t> ids;
    for (auto it = parents_.find(id); it != parents_.end(); it = parents_.find(it->second)) {
      if (it->second == 0) {
        return ids;
      }
      ids.push_back(it->second);
    }
  }
  CFN_ASSIGN_OR_RETURN(auto ids, chain_of(st, id));
  std::lock_guard lk(parents_mu_);
  int64_t child = id;
  for (int64_t p : ids) {
    parents_[child] = p;
    child = p;
  }
  parents_[child] = 0;
  return ids;
}

template <typename F>
auto Store::read(F&& f) -> std::invoke_result_t<F, Statements&> {
  std::lock_guard lock(rmu_);
  Txn rt(*rst_);
  CFN_TRY(rt.begin_read());
  return std::forward<F>(f)(*rst_);
}

base::Result<Snapshot> Store::get(std::string_view key) {
  CFN_TRY(validate_key("key", key));
  return read([&](Statements& st) -> base::Result<Snapshot> {
    CFN_ASSIGN_OR_RETURN(auto r, find(st, key));
    if (!r) {
      return not_found(key);
    }
    if (r->kind == Kind::kCommitted) {
      return base::errorf(kErrFailedPrecondition, "requested snapshot {} not active or view", key);
    }
    Snapshot snap{r->id, r->kind, {}, false};
    if (r->parent_id != 0) {
      CFN_ASSIGN_OR_RETURN(snap.parent_ids, ancestors(st, r->parent_id));
      snap.parent_ids.insert(snap.parent_ids.begin(), r->parent_id);
    }
    CFN_ASSIGN_OR_RETURN(snap.volatile_, has_label(st, r->id, kVolatileLabel));
    return snap;
  });
}

base::Status Store::commit(std::string_view name, std::string_view key, Labels labels) {
  CFN_TRY(validate_key("name", name));
  CFN_TRY(validate_key("key", key));
  CFN_TRY(validate_labels(labels));
  labels = without_empty_values(std::move(labels));
  // Checks in containerd's order: the name is free, the key exists, it is active.
  auto check = [&]() -> base::Result<int64_t> {
    CFN_ASSIGN_OR_RETURN(auto taken, find(*st_, name));
    if (taken) {
      return base::errorf(EEXIST, "committed snapshot {} already exists", name);
    }
    CFN_ASSIGN_OR_RETURN(auto r, find(*st_, key));
    if (!r) {
      return base::errorf(ENOENT, "failed to get active snapshot {}: snapshot does not exist", key);
    }
    if (r->kind != Kind::kActive) {
      return base::errorf(kErrFailedPrecondition, "snapshot {} is not active", key);
    }
    return r->id;
  };
  const ActiveWriter active(*this);
  int64_t id = 0;
  {
    auto lock = writer_lock();
    CFN_ASSIGN_OR_RETURN(id, check());
  }
  // The walk runs unlocked; a concurrent Commit or Remove of the same key is caught below.
  CFN_ASSIGN_OR_RETURN(Usage usage, disk_usage(fs_path(root_, id)));
  auto lock = writer_lock();
  crash_point("commit-before-sql");
  Txn txn(*st_);
  CFN_TRY(txn.begin());
  CFN_ASSIGN_OR_RETURN(int64_t again, check());
  if (again != id) {
    return base::errorf(ENOENT, "snapshot {} was replaced while committing", key);
  }
  {
    Stmt::Use q(st_->commit_row);
    q.bind(1, id).bind(2, name).bind(3, now_ns()).bind(4, usage.size).bind(5, usage.inodes);
    CFN_TRY(q.run());
  }
  CFN_TRY(write_labels(*st_, id, labels));
  CFN_TRY(txn.commit());
  const uint64_t seq = committed();
  lock.unlock();
  CFN_TRY(make_durable(seq));
  crash_point("commit-after-sql");
  return {};
}

base::Status Store::remove(std::string_view key) {
  CFN_TRY(validate_key("key", key));
  auto req = std::make_shared<RemoveReq>();
  req->key = std::string(key);
  std::unique_lock lk(batch_mu_);
  batch_pending_.push_back(req);
  while (!req->done) {
    if (batch_running_) {
      batch_cv_.wait(lk);
      continue;
    }
    // No batch running: this caller runs one of everything queued (its own request
    // among them).
    batch_running_ = true;
    std::vector<std::shared_ptr<RemoveReq>> batch;
    batch.swap(batch_pending_);
    lk.unlock();
    remove_batch(batch);
    lk.lock();
    batch_running_ = false;
    for (auto& r : batch) {
      r->done = true;
    }
    batch_cv_.notify_all();
  }
  return req->status;
}

// The requests in arrival order, as if one after another: each is checked (exists, has no
// child) against the rows the earlier ones left, in one transaction; a request that fails
// its check gets its error and removes nothing. An error of SQLite itself fails every
// request of the batch (the transaction rolls back: nothing removed).
void Store::remove_batch(std::vector<std::shared_ptr<RemoveReq>>& batch) {
  {
    // As every other change after a failed fdatasync (make_durable): refused.
    std::lock_guard lk(sync_mu_);
    if (sync_failed_) {
      for (auto& req : batch) {
        req->status = failed_sync_error("what is on disk is unknown");
      }
      return;
    }
  }
  std::vector<std::pair<RemoveReq*, int64_t>> removed;
  {
    // A Prepare or Commit under way goes first (writer_lock, ActiveWriter): it waits for
    // the batch in flight, not for every one queued behind it, and its fdatasync does not
    // write and flush the frames of a stream of Remove batches. Bounded, so a steady
    // stream of calls cannot hold removals off for long: they then run one batch per
    // kYieldToWriters.
    yield_to_writers([] { return false; });
  }
  {
    std::lock_guard lock(mu_);
    auto run = [&]() -> base::Status {
      Txn txn(*st_);
      CFN_TRY(txn.begin());
      for (auto& req : batch) {
        CFN_ASSIGN_OR_RETURN(auto r, find(*st_, req->key));
        if (!r) {
          req->status =
              base::errorf(ENOENT, "failed to remove: snapshot {} does not exist", req->key);
          continue;
        }
        {
          Stmt::Use q(st_->has_child);
          q.bind(1, r->id);
          CFN_ASSIGN_OR_RETURN(bool child, q.step());
          if (child) {
            req->status =
                base::errorf(kErrFailedPrecondition,
                             "failed to remove: cannot remove snapshot {} with child", req->key);
            continue;
          }
        }
        {
          Stmt::Use q(st_->delete_row);
          q.bind(1, r->id);
          CFN_TRY(q.run());
        }
        removed.emplace_back(req.get(), r->id);
      }
      CFN_TRY(txn.commit());
      return {};
    };
    if (auto st = run(); !st) {
      for (auto& req : batch) {
        req->status = st;
      }
      return;
    }
    if (removed.empty()) {
      return;
    }
    // Handed to the syncer while mu_ is held: Cleanup, which lists the directory under mu_,
    // never sees a removed row's directory that rm_busy_ does not hold, so it never moves
    // one aside before its delete is on disk.
    const uint64_t seq = committed();
    {
      std::lock_guard lk(rm_mu_);
      for (const auto& [req, id] : removed) {
        rm_busy_.insert(std::to_string(id));
        rm_unsynced_.push_back(Unsynced{seq, id});
      }
    }
    rm_cv_.notify_all();
  }
  {
    std::lock_guard lk(parents_mu_);
    for (const auto& [req, id] : removed) {
      parents_.erase(id);
    }
  }
  // Answered without waiting for a sync: the syncer makes the deletes durable (at the
  // latest kRemoveSyncDelay from now) before it renames and removes the directories.
  crash_point("remove-after-sql");
}

Store::ActiveWriter::ActiveWriter(Store& s) : s_(s) {
  s_.active_writers_.fetch_add(1);
}

Store::ActiveWriter::~ActiveWriter() {
  s_.last_writer_end_.store(std::chrono::steady_clock::now().time_since_epoch().count());
  if (s_.active_writers_.fetch_sub(1) == 1) {
    std::lock_guard turn(s_.turn_mu_);
    s_.turn_cv_.notify_all();
  }
}

void Store::yield_to_writers(const std::function<bool()>& go_now) {
  using Clock = std::chrono::steady_clock;
  const auto give_up = Clock::now() + kYieldToWriters;
  std::unique_lock turn(turn_mu_);
  for (;;) {
    const auto now = Clock::now();
    if (go_now() || now >= give_up) {
      return;
    }
    if (waiting_writers_.load() != 0 || active_writers_.load() != 0) {
      turn_cv_.wait_until(turn, give_up);
      continue;
    }
    // A client's next call comes a moment after the last one's answer (a Commit after its
    // Prepare): not a pause yet.
    const auto pause_at =
        Clock::time_point(Clock::duration(last_writer_end_.load())) + kWriterPause;
    if (now >= pause_at) {
      return;
    }
    turn_cv_.wait_until(turn, std::min(pause_at, give_up));
  }
}

std::unique_lock<std::mutex> Store::writer_lock() {
  waiting_writers_.fetch_add(1);
  std::unique_lock lock(mu_);
  if (waiting_writers_.fetch_sub(1) == 1) {
    std::lock_guard turn(turn_mu_);
    turn_cv_.notify_all();
  }
  return lock;
}

base::Result<ChainEntry> Store::entry(std::string_view key) {
  CFN_TRY(validate_key("key", key));
  CFN_ASSIGN_OR_RETURN(auto rl, read([&](Statements& st) { return find_labelled(st, key); }));
  auto& [r, labels] = rl;
  return ChainEntry{r.id, std::string(key), std::move(labels), r.parent_id};
}

base::Result<std::vector<ChainEntry>> Store::lineage(std::string_view name) {
  CFN_TRY(validate_key("name", name));
  return read([&](Statements& st) -> base::Result<std::vector<ChainEntry>> {
    std::vector<ChainEntry> out;
    std::string key(name);
    while (!key.empty()) {
      CFN_ASSIGN_OR_RETURN(auto rl, find_labelled(st, key));
      auto& [r, labels] = rl;
      out.push_back(ChainEntry{r.id, key, std::move(labels), r.parent_id});
      key = r.parent;
    }
    return out;
  });
}

base::Result<Info> Store::stat(std::string_view key) {
  CFN_TRY(validate_key("key", key));
  CFN_ASSIGN_OR_RETURN(auto rl, read([&](Statements& st) { return find_labelled(st, key); }));
  return info_of(std::string(key), rl.first, std::move(rl.second));
}

base::Result<Info> Store::update(const Info& info, std::span<const std::string> fieldpaths) {
  CFN_TRY(validate_key("name", info.name));
  std::unique_lock lock(mu_);
  Txn txn(*st_);
  CFN_TRY(txn.begin());
  CFN_ASSIGN_OR_RETURN(auto rl, find_labelled(*st_, info.name));
  auto& [r, labels] = rl;
  if (fieldpaths.empty()) {
    labels = info.labels;
  }
  for (const auto& path : fieldpaths) {
    if (path.rfind("labels.", 0) == 0) {
      std::string k = path.substr(7);
      if (k.empty()) {
        return base::errorf(EINVAL, "cannot update {:?} field on snapshot {}: empty label key",
                            path, info.name);
      }
      auto it = info.labels.find(k);
      labels[k] = it == info.labels.end() ? std::string() : it->second;
    } else if (path == "labels") {
      labels = info.labels;
    } else {
      return base::errorf(EINVAL, "cannot update {:?} field on snapshot {}", path.substr(0, 256),
                          info.name);
    }
  }
  labels = without_empty_values(std::move(labels));
  CFN_TRY(validate_labels(labels));
  int64_t now = now_ns();
  {
    Stmt::Use q(st_->touch);
    q.bind(1, r.id).bind(2, now);
    CFN_TRY(q.run());
  }
  CFN_TRY(write_labels(*st_, r.id, labels));
  CFN_TRY(txn.commit());
  const uint64_t seq = committed();
  lock.unlock();
  CFN_TRY(make_durable(seq));
  r.updated_ns = now;
  return info_of(info.name, r, std::move(labels));
}

namespace {

// A selector labels.K==V that every match must satisfy (the filter has one alternative),
// so the label index can find the candidates: containerd's handshake Walk
// (labels."containerd.io/snapshot.ref"==X,parent=="") and label-filtered listings.
const Filter::Selector* indexable_label(const Filter& filter) {
  if (filter.alternatives().size() != 1) {
    return nullptr;
  }
  for (const auto& sel : filter.alternatives()[0]) {
    if (sel.op == Filter::Op::kEqual && sel.fieldpath.size() >= 2 && sel.fieldpath[0] == "labels") {
      return &sel;
    }
  }
  return nullptr;
}

// The label key of a labels.a.b path: "a.b", as containerd joins it.
std::string label_key(const std::vector<std::string>& fieldpath) {
  std::string key;
  for (size_t i = 1; i < fieldpath.size(); ++i) {
    if (i > 1) {
      key.push_back('.');
    }
    key += fieldpath[i];
  }
  return key;
}

base::Status read_rows(Stmt::Use& q, std::vector<Info>& all,
                       std::unordered_map<int64_t, size_t>& index) {
  for (;;) {
    CFN_ASSIGN_OR_RETURN(bool row, q.step());
    if (!row) {
      return {};
    }
    Info i;
    i.name = q.text(1);
    i.kind = static_cast<Kind>(q.i64(2));
    i.parent = q.is_null(3) ? std::string() : q.text(3);
    i.created_ns = q.i64(4);
    i.updated_ns = q.i64(5);
    index.emplace(q.i64(0), all.size());
    all.push_back(std::move(i));
  }
}

}  // namespace

base::Result<std::vector<Info>> Store::list(const Filter& filter) {
  std::vector<Info> all;
  std::unordered_map<int64_t, size_t> index;
  CFN_TRY(read([&](Statements& st) -> base::Status {
    if (const auto* sel = indexable_label(filter)) {
      {
        Stmt::Use q(st.labeled_rows);
        q.bind(1, label_key(sel->fieldpath)).bind(2, sel->value);
        CFN_TRY(read_rows(q, all, index));
      }
      for (auto& [id, at] : index) {
        CFN_ASSIGN_OR_RETURN(all[at].labels, labels_of(st, id));
      }
      return {};
    }
    {
      Stmt::Use q(st.all_rows);
      CFN_TRY(read_rows(q, all, index));
    }
    Stmt::Use q(st.all_labels);
    for (;;) {
      CFN_ASSIGN_OR_RETURN(bool row, q.step());
      if (!row) {
        return {};
      }
      auto it = index.find(q.i64(0));
      if (it != index.end()) {
        all[it->second].labels.emplace(q.text(1), q.text(2));
      }
    }
  }));
  if (filter.matches_everything()) {
    return all;
  }
  std::vector<Info> out;
  for (auto& i : all) {
    if (filter.match(info_fields(i))) {
      out.push_back(std::move(i));
    }
  }
  return out;
}

base::Result<Usage> Store::usage(std::string_view key) {
  CFN_TRY(validate_key("key", key));
  CFN_ASSIGN_OR_RETURN(auto r, read([&](Statements& st) { return find(st, key); }));
  if (!r) {
    return not_found(key);
  }
  if (r->kind != Kind::kActive) {
    return r->usage;  // stored at Commit
  }
  // The walk runs outside the read transaction and its lock.
  auto u = disk_usage(fs_path(root_, r->id));
  if (!u && u.error().code == ENOENT) {
    return not_found(key);  // removed meanwhile
  }
  return u;
}

base::Result<std::vector<std::string>> Store::cleanup() {
  {
    // After a failed fdatasync a deleted row may come back with the next OS crash: its
    // directory must not go.
    std::lock_guard lk(sync_mu_);
    if (sync_failed_) {
      return failed_sync_error("not removing directories");
    }
  }
  // Cleanup is containerd's "reclaim now": the removals Remove queued finish first, so
  // that when it returns no directory of a removed snapshot is left.
  drain_removals();
  std::vector<std::string> doomed;
  {
    std::lock_guard lock(mu_);
    std::unordered_set<int64_t> owned;
    {
      Stmt::Use q(st_->all_ids);
      for (;;) {
        CFN_ASSIGN_OR_RETURN(bool row, q.step());
        if (!row) {
          break;
        }
        owned.insert(q.i64(0));
      }
    }
    CFN_ASSIGN_OR_RETURN(const std::vector<std::string> in_snapshots, list_dir(snapshots_dir_));
    CFN_ASSIGN_OR_RETURN(const std::vector<std::string> in_removing, list_dir(removing_dir_));
    // Renamed under the lock: once unlocked, a Prepare may take an id whose stale
    // directory this call found, and must not lose its new one to the removal below.
    std::unordered_set<std::string> busy;
    {
      std::lock_guard lk(rm_mu_);
      busy = rm_busy_;
    }
    for (const auto& n : in_snapshots) {
      int64_t id = 0;
      if ((parse_id(n, &id) && owned.contains(id)) || busy.contains(n)) {
        continue;  // a row's, or the background thread has it (unsynced "ID")
      }
      if (n.rfind("rm-", 0) == 0) {
        doomed.push_back(snapshots_dir_ + "/" + n);  // an earlier version's removal
      } else if (auto to = move_aside(snapshots_dir_, n, removing_dir_); !to.empty()) {
        doomed.push_back(removing_dir_ + "/" + to);
      }
    }
    for (const auto& n : in_removing) {
      if (!busy.contains(n)) {  // else queued for the background thread
        doomed.push_back(removing_dir_ + "/" + n);
      }
    }
  }
  for (const auto& path : doomed) {
    remove_tree(path);
  }
  // And those the background thread holds: after Cleanup, nothing unowned is left (containerd
  // calls it last in `ctr image rm --sync`).
  drain_removals();
  return doomed;
}

}  // namespace snapshotter
