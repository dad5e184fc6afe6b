// SPDX-License-Identifier: Apache-2.0
#include "daemon/fd_holder.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>

#include "tests/unit/temp_dir.h"

namespace cfnd {
namespace {

TEST(FdHolderProtocol, FormatAndParse) {
  const HolderMessage msgs[] = {{HolderVerb::kPut, "cachefiles"},
                                {HolderVerb::kGet, "a.b_c-9"},
                                {HolderVerb::kRelease, ""},
                                {HolderVerb::kOk, ""},
                                {HolderVerb::kFd, "cachefiles"},
                                {HolderVerb::kNone, "x"},
                                {HolderVerb::kErr, "too many fds held"},
                                {HolderVerb::kDrop, "fuse-1a2b"},
                                {HolderVerb::kNext, "fuse-"},
                                {HolderVerb::kName, "fuse-1a2b"}};
  for (const auto& m : msgs) {
    auto text = format_holder_message(m);
    ASSERT_TRUE(text) << text.error().to_string();
    auto back = parse_holder_message(*text, holder_fd_count(m.verb));
    ASSERT_TRUE(back) << *text << ": " << back.error().to_string();
    EXPECT_EQ(*back, m) << *text;
  }
  EXPECT_EQ(*format_holder_message({HolderVerb::kPut, "cachefiles"}), "PUT cachefiles");
  EXPECT_EQ(holder_fd_count(HolderVerb::kPut), 1U);
  EXPECT_EQ(holder_fd_count(HolderVerb::kFd), 1U);
  EXPECT_EQ(holder_fd_count(HolderVerb::kGet), 0U);
}

TEST(FdHolderProtocol, FormatRejectsBadMessages) {
  const HolderMessage bad[] = {
      {HolderVerb::kPut, ""},           {HolderVerb::kGet, "a b"},
      {HolderVerb::kGet, "../x"},       {HolderVerb::kGet, std::string(65, 'a')},
      {HolderVerb::kRelease, "x"},      {HolderVerb::kErr, ""},
      {HolderVerb::kErr, "two\nlines"}, {HolderVerb::kErr, std::string(300, 'e')}};
  for (const auto& m : bad) {
    auto r = format_holder_message(m);
    ASSERT_FALSE(r) << m.arg;
    EXPECT_EQ(r.error().code, EINVAL);
  }
}

TEST(FdHolderProtocol, ParseRejectsBadPackets) {
  const std::pair<std::string, std::size_t> bad[] = {
      {"", 0},
      {std::string(257, 'A'), 0},
      {"PUT cachefiles", 0},  // PUT without its fd
      {"PUT cachefiles", 2},  // two fds
      {"GET cachefiles", 1},  // a fd where none belongs
      {"GET", 0},             // no name
      {"GET ", 0},            // empty name
      {"GET a b", 0},         // a space in the name
      {"GET a/b", 0},         // a slash
      {"get cachefiles", 0},  // verbs are upper case
      {"HELLO", 0},           // unknown verb
      {"RELEASE now", 0},     // RELEASE takes no argument
      {"OK ", 0},             //
      {"ERR", 0},             // ERR needs a text
      {"GET x\n", 0},         // newline
      {std::string("GET x\0y", 7), 0},
      {"FD " + std::string(65, 'n'), 1},
  };
  for (const auto& [text, fds] : bad) {
    auto r = parse_holder_message(text, fds);
    ASSERT_FALSE(r) << text << " fds " << fds;
    EXPECT_EQ(r.error().code, EBADMSG) << text;
  }
}

TEST(FdHolderProtocol, SocketPairCarriesFds) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  base::UniqueFd a(sv[0]);
  base::UniqueFd b(sv[1]);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  base::UniqueFd r(p[0]);
  base::UniqueFd w(p[1]);
  ASSERT_TRUE(holder_send(a.get(), {HolderVerb::kPut, "pipe"}, {w.get()}));
  std::vector<base::UniqueFd> fds;
  auto m = holder_recv(b.get(), fds);
  ASSERT_TRUE(m) << m.error().to_string();
  EXPECT_EQ(m->verb, HolderVerb::kPut);
  ASSERT_EQ(fds.size(), 1U);
  ASSERT_EQ(::write(fds[0].get(), "x", 1), 1);  // the same pipe
  char c = 0;
  ASSERT_EQ(::read(r.get(), &c, 1), 1);
  EXPECT_EQ(c, 'x');
  // A send whose fd count does not match the verb is refused before it leaves.
  EXPECT_FALSE(holder_send(a.get(), {HolderVerb::kGet, "pipe"}, {w.get()}));
  // A hostile packet: a PUT with two fds is refused and both fds closed.
  {
    const char text[] = "PUT pipe";
    iovec iov{const_cast<char*>(text), sizeof text - 1};
    alignas(cmsghdr) char control[CMSG_SPACE(2 * sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    cmsghdr* cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(2 * sizeof(int));
    int two[2] = {w.get(), w.get()};
    std::memcpy(CMSG_DATA(cm), two, sizeof two);
    ASSERT_GT(::sendmsg(a.get(), &msg, 0), 0);
  }
  auto hostile = holder_recv(b.get(), fds);
  ASSERT_FALSE(hostile);
  EXPECT_EQ(hostile.error().code, EBADMSG);
  EXPECT_TRUE(fds.empty());
  a.reset();
  auto eof = holder_recv(b.get(), fds);
  ASSERT_FALSE(eof);
  EXPECT_EQ(eof.error().code, ECONNRESET);
}

// The holder in a thread; start() returns once it listens (or gave up).
class HolderThread {
 public:
  HolderThread(std::string path, std::chrono::seconds grace)
      : thread_([this, path = std::move(path), grace] {
          rc_ = run_fd_holder(path, grace, [this] { signal(); });
          signal();  // also when it could not start
        }) {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [this] { return started_; });
  }
  ~HolderThread() { join(); }
  int join() {
    if (thread_.joinable()) {
      thread_.join();
    }
    return rc_;
  }

 private:
  void signal() {
    std::lock_guard lk(mu_);
    started_ = true;
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  bool started_ = false;
  int rc_ = -1;
  std::thread thread_;  // last: starts after the members above exist
};

// The holder itself, in a thread: a daemon puts a fd, "dies" (disconnects), the next
// one gets the same open file back, then releases the holder, which exits.
TEST(FdHolder, KeepsAndHandsOverAFd) {
  cfntest::TempDir tmp("fd-holder");
  const std::string path = tmp.sub("h.sock");
  HolderThread holder(path, std::chrono::seconds(0));
  base::Result<FdHolderClient> c = FdHolderClient::connect(path);
  ASSERT_TRUE(c) << c.error().to_string();
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600U);
  // A second holder on the same path refuses to start.
  EXPECT_EQ(run_fd_holder(path, std::chrono::seconds(0)), 1);

  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  base::UniqueFd r(p[0]);
  {
    base::UniqueFd w(p[1]);
    auto none = c->get("cachefiles");
    ASSERT_TRUE(none) << none.error().to_string();
    EXPECT_FALSE(none->valid());
    ASSERT_TRUE(c->put("cachefiles", w.get()));
  }  // our write end is closed: only the holder keeps the pipe writable
  c = base::make_error(ENOENT, "");  // the first daemon is gone

  auto next = FdHolderClient::connect(path);
  ASSERT_TRUE(next) << next.error().to_string();
  auto got = next->get("cachefiles");
  ASSERT_TRUE(got) << got.error().to_string();
  ASSERT_TRUE(got->valid());
  ASSERT_EQ(::write(got->get(), "y", 1), 1);
  char ch = 0;
  ASSERT_EQ(::read(r.get(), &ch, 1), 1);
  EXPECT_EQ(ch, 'y');
  got->reset();
  ASSERT_TRUE(next->release());
  EXPECT_EQ(holder.join(), 0);
  EXPECT_FALSE(std::filesystem::exists(path));
  // Every writer is closed now (ours and the holder's): the reader sees end of file.
  EXPECT_EQ(::read(r.get(), &ch, 1), 0);
}

// DROP closes one name's fd (a FUSE mount that is gone) and keeps the others.
TEST(FdHolder, DropsOneName) {
  cfntest::TempDir tmp("fd-holder-drop");
  const std::string path = tmp.sub("h.sock");
  HolderThread holder(path, std::chrono::seconds(0));
  auto c = FdHolderClient::connect(path);
  ASSERT_TRUE(c) << c.error().to_string();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  base::UniqueFd r(p[0]);
  {
    base::UniqueFd w(p[1]);
    ASSERT_TRUE(c->put("fuse-1", w.get()));
    ASSERT_TRUE(c->put("fuse-2", w.get()));
  }
  ASSERT_TRUE(c->drop("fuse-1"));
  ASSERT_TRUE(c->drop("fuse-9"));  // not held: nothing to do, still OK
  auto gone = c->get("fuse-1");
  ASSERT_TRUE(gone);
  EXPECT_FALSE(gone->valid());
  auto kept = c->get("fuse-2");
  ASSERT_TRUE(kept);
  ASSERT_TRUE(kept->valid());
  kept->reset();
  ASSERT_TRUE(c->drop("fuse-2"));
  // No writer is left anywhere: the reader sees end of file.
  char ch = 0;
  EXPECT_EQ(::read(r.get(), &ch, 1), 0);
  ASSERT_TRUE(c->release());
  EXPECT_EQ(holder.join(), 0);
}

// NEXT lists the held names after a given one: a restarted daemon finds the FUSE
// sessions it cannot resume (its state file unreadable) by their prefix.
TEST(FdHolder, ListsNamesByPrefix) {
  cfntest::TempDir tmp("fd-holder-names");
  const std::string path = tmp.sub("h.sock");
  HolderThread holder(path, std::chrono::seconds(0));
  auto c = FdHolderClient::connect(path);
  ASSERT_TRUE(c) << c.error().to_string();
  auto empty = c->names("fuse-");
  ASSERT_TRUE(empty) << empty.error().to_string();
  EXPECT_TRUE(empty->empty());
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  base::UniqueFd r(p[0]);
  base::UniqueFd w(p[1]);
  for (const char* n : {"cachefiles", "fuse-b", "fanotify", "fuse-a", "fusex", "zzz"}) {
    ASSERT_TRUE(c->put(n, w.get())) << n;
  }
  auto fuse = c->names("fuse-");
  ASSERT_TRUE(fuse) << fuse.error().to_string();
  EXPECT_EQ(*fuse, (std::vector<std::string>{"fuse-a", "fuse-b"}));
  auto f = c->names("f");
  ASSERT_TRUE(f);
  EXPECT_EQ(*f, (std::vector<std::string>{"fanotify", "fuse-a", "fuse-b", "fusex"}));
  auto none = c->names("y");
  ASSERT_TRUE(none);
  EXPECT_TRUE(none->empty());
  ASSERT_TRUE(c->release());
  EXPECT_EQ(holder.join(), 0);
}

// A daemon that dies and is never restarted: after `grace` without a connection the
// holder closes what it holds and exits (here 1 s), so waiting readers get EIO.
TEST(FdHolder, GivesUpAfterGrace) {
  cfntest::TempDir tmp("fd-holder");
  const std::string path = tmp.sub("h.sock");
  HolderThread holder(path, std::chrono::seconds(1));
  base::Result<FdHolderClient> c = FdHolderClient::connect(path);
  ASSERT_TRUE(c) << c.error().to_string();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  base::UniqueFd r(p[0]);
  {
    base::UniqueFd w(p[1]);
    ASSERT_TRUE(c->put("cachefiles", w.get()));
  }
  c = base::make_error(ENOENT, "");  // the daemon dies; nobody comes back
  EXPECT_EQ(holder.join(), 0);       // returns once the grace period is over
  char ch = 0;
  EXPECT_EQ(::read(r.get(), &ch, 1), 0);  // the holder's dup is closed too
  EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace cfnd
