// SPDX-License-Identifier: Apache-2.0
// The control API's encoding: every request and answer round-trips, bad requests are
// refused with EINVAL naming the field, failure answers come back as their errors, and
// a client talks to a server over a real unix socket under its deadline.
#include "control/api.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <thread>

#include "base/unix_socket.h"
#include "control/client.h"
#include "control/wire.h"
#include "tests/unit/temp_dir.h"

namespace control {
namespace {

Request round_trip(const Request& r) {
  auto text = to_json(r);
  EXPECT_TRUE(text) << text.error().to_string();
  if (!text) {
    return Request{};
  }
  auto back = request_from_json(*text);
  EXPECT_TRUE(back) << back.error().to_string();
  return back ? *back : Request{};
}

TEST(ControlApi, RequestsRoundTrip) {
  BindRequest local;
  local.mountpoint = "/mnt/a";
  local.bootstrap = "/x/image.boot";
  local.blob_dir = "/x/blobs";
  local.frontend = "fuse";
  BindRequest remote;
  remote.mountpoint = "/mnt/b";
  remote.reference = "127.0.0.1:5000/demo:latest";
  remote.fsid = "abc";
  remote.domain_id = "dom";
  remote.registry = RegistryOverrides{};
  remote.registry->plain_http = true;
  remote.registry->ca_files = std::vector<std::string>{"/ca.pem"};
  remote.registry->mirrors =
      std::map<std::string, std::vector<std::string>>{{"127.0.0.1:5000", {"http://m:1"}}};
  remote.registry->retries = 0;
  remote.registry->request_timeout_ms = 1500;
  const Request all[] = {PingRequest{},
                         local,
                         remote,
                         UnbindRequest{"/mnt/a", true},
                         UnbindRequest{"/mnt/a", false},
                         ListRequest{},
                         AccessedRequest{"/mnt/a"},
                         MetricsRequest{false},
                         MetricsRequest{true},
                         CacheLsRequest{},
                         CacheGcRequest{true},
                         CacheGcRequest{false},
                         CacheRmRequest{"abc"},
                         StatusRequest{},
                         StopRequest{},
                         PrefetchRequest{"h/r:t", "/root/snapshots/7/fs/image/image.boot", {}},
                         PrefetchRequest{"h/r:t", "/b", remote.registry}};
  for (const auto& r : all) {
    EXPECT_EQ(round_trip(r), r) << to_json(r).value_or("(not encodable)");
  }
}

TEST(ControlApi, TheWireKeepsItsNames) {
  EXPECT_EQ(to_json(PingRequest{}), R"({"op":"ping"})");
  EXPECT_EQ(to_json(MetricsRequest{true}), R"({"format":"prometheus","op":"metrics"})");
  EXPECT_EQ(to_json(UnbindRequest{"/m", true}),
            R"({"force":true,"mountpoint":"/m","op":"unbind"})");
  BindRequest b;
  b.mountpoint = "/m";
  b.reference = "h/r:t";
  b.registry = RegistryOverrides{};
  EXPECT_EQ(to_json(b), R"({"mountpoint":"/m","op":"bind","reference":"h/r:t","registry":{}})");
  EXPECT_EQ(to_json(PrefetchRequest{"h/r:t", "/b", {}}),
            R"({"bootstrap":"/b","op":"prefetch","reference":"h/r:t"})");
  EXPECT_EQ(to_json(PrefetchAnswer{2, 9}), R"({"blobs":2,"chunks":9,"ok":true})");
}

TEST(ControlApi, PrefetchAnswersRoundTripAndFailuresAreErrors) {
  auto a = prefetch_from_json(to_json(PrefetchAnswer{3, 1234}));
  ASSERT_TRUE(a) << a.error().to_string();
  EXPECT_EQ(*a, (PrefetchAnswer{3, 1234}));
  auto e = prefetch_from_json(error_to_json(base::Error{ENOENT, "bootstrap /b: gone"}));
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, ENOENT);
  EXPECT_NE(e.error().message.find("bootstrap /b"), std::string::npos);
  auto bad = prefetch_from_json(R"({"ok":true,"blobs":"two"})");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, EPROTO);
}

TEST(ControlApi, CacheAnswersRoundTrip) {
  EXPECT_EQ(to_json(CacheRmRequest{"b1"}), R"({"id":"b1","op":"cache_rm"})");
  EXPECT_EQ(to_json(CacheGcRequest{true}), R"({"dry_run":true,"op":"cache_gc"})");
  EXPECT_FALSE(request_from_json(R"({"op":"cache_rm"})"));
  EXPECT_FALSE(request_from_json(R"({"op":"cache_rm","id":""})"));
  EXPECT_FALSE(request_from_json(R"({"op":"cache_gc","dry_run":"yes"})"));
  CacheListing l;
  l.bytes = 12288;
  l.limit = 1 << 20;
  l.high = 900;
  l.low = 700;
  l.entries.push_back({"b1", "blob", 8192, 4096, 1700000000123, true, {"/m1", "/m2"}});
  l.entries.push_back({"bootstraps/x.boot", "bootstrap", 4096, 0, 5, false, {}});
  l.entries.push_back({"fscache/erofs,d/f1", "fscache", 8192, 8192, 7, false, {}});
  auto back = cache_listing_from_json(to_json(l));
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(*back, l);
  GcAnswer g{true, {"b2", "b3"}, 100, 300, 200, 1000, 700, 2, 1, 5};
  auto gb = gc_from_json(to_json(g));
  ASSERT_TRUE(gb) << gb.error().to_string();
  EXPECT_EQ(*gb, g);
  EXPECT_EQ(gc_from_json(R"({"ok":false,"errno":16,"error":"busy"})").error().code, EBUSY);
  Metrics m;
  m.cache_bytes = 1;
  m.cache_limit = 2;
  m.cache_entries_in_use = 3;
  m.cache_over_limit_bytes = 4;
  m.cache_evictions = 5;
  m.cache_evicted_bytes = 6;
  m.cache_eviction_errors = 7;
  m.cache_no_space = 8;
  m.cache_fscache_bytes = 9;
  m.cache_fscache_culled = 10;
  m.cache_fscache_busy = 11;
  auto mb = metrics_from_json(to_json(m));
  ASSERT_TRUE(mb);
  EXPECT_EQ(*mb, m);
  const std::string prom = to_prometheus(m);
  EXPECT_NE(prom.find("cachefilesd_nydus_cache_limit_bytes 2\n"), std::string::npos) << prom;
  EXPECT_NE(prom.find("cachefilesd_nydus_cache_evictions_total 5\n"), std::string::npos);
  EXPECT_NE(prom.find("cachefilesd_nydus_cache_fscache_bytes 9\n"), std::string::npos);
  EXPECT_NE(prom.find("cachefilesd_nydus_cache_fscache_culled_total 10\n"), std::string::npos);
  EXPECT_NE(prom.find("cachefilesd_nydus_cache_fscache_busy_total 11\n"), std::string::npos);
}

TEST(ControlApi, BadRequestsAreRefused) {
  const char* bad[] = {
      "",
      "[]",
      "{}",
      R"({"op":1})",
      R"({"op":"nope"})",
      R"({"op":"bind","mountpoint":"/m"})",
      R"({"op":"bind","bootstrap":"/b","blob_dir":"/d"})",
      R"({"op":"bind","reference":"h/r","blob_dir":"/d","mountpoint":"/m"})",
      R"({"op":"bind","reference":"h/r","bootstrap":"/b","blob_dir":"/d","mountpoint":"/m"})",
      R"({"op":"bind","reference":"h/r","mountpoint":7})",
      R"({"op":"bind","reference":"h/r","mountpoint":"/m","registry":[]})",
      R"({"op":"bind","reference":"h/r","mountpoint":"/m","registry":{"nope":1}})",
      R"({"op":"bind","reference":"h/r","mountpoint":"/m","registry":{"retries":-1}})",
      R"({"op":"bind","reference":"h/r","mountpoint":"/m","registry":{"mirrors":{"h":[1]}}})",
      R"({"op":"unbind"})",
      R"({"op":"accessed","mountpoint":false})",
      R"({"op":"prefetch"})",
      R"({"op":"prefetch","reference":"h/r"})",
      R"({"op":"prefetch","bootstrap":"/b"})",
      R"({"op":"prefetch","reference":"","bootstrap":"/b"})",
      R"({"op":"prefetch","reference":"h/r","bootstrap":""})",
      R"({"op":"prefetch","reference":"h/r","bootstrap":"/b","registry":{"nope":1}})",
      R"({"op":"prefetch","reference":"h/r","bootstrap":7})",
  };
  for (const char* text : bad) {
    auto r = request_from_json(text);
    ASSERT_FALSE(r) << text;
    EXPECT_EQ(r.error().code, EINVAL) << text;
  }
  auto missing = request_from_json(R"({"op":"unbind"})");
  EXPECT_NE(missing.error().message.find("mountpoint"), std::string::npos);
}

TEST(ControlApi, ReferenceWithALocalBootstrap) {
  auto r =
      request_from_json(R"({"op":"bind","reference":"h/r","bootstrap":"/b","mountpoint":"/m"})");
  ASSERT_TRUE(r) << r.error().to_string();
  const auto& b = std::get<BindRequest>(*r);
  EXPECT_EQ(b.reference, "h/r");
  EXPECT_EQ(b.bootstrap, "/b");
  EXPECT_EQ(b.blob_dir, "");
  auto again = request_from_json(to_json(*r).value());
  ASSERT_TRUE(again);
  EXPECT_EQ(*again, *r);
}

TEST(ControlApi, UnbindForceOnlyWhenTrue) {
  auto r = request_from_json(R"({"op":"unbind","mountpoint":"/m","force":"yes"})");
  ASSERT_TRUE(r);
  EXPECT_FALSE(std::get<UnbindRequest>(*r).force);
}

ImageInfo sample_image(bool cachefiles) {
  ImageInfo i;
  i.mountpoint = "/mnt/a";
  i.bootstrap = "/c/bootstraps/x.boot";
  i.frontend = cachefiles ? "cachefiles" : "fanotify";
  i.backend = "registry h/r";
  i.blobs.push_back({"blob1", "/c/blob1", 1 << 20, 4096, 3, 16});
  if (cachefiles) {
    i.fsid = "f00";
    i.domain_id = "";
  }
  i.reference = "h/r:t";
  i.manifest_digest = "sha256:00";
  return i;
}

TEST(ControlApi, AnswersRoundTrip) {
  auto p = ping_from_json(to_json(PingAnswer{42, "fuse"}));
  ASSERT_TRUE(p);
  EXPECT_EQ(*p, (PingAnswer{42, "fuse"}));
  for (bool cf : {false, true}) {
    auto i = image_from_json(to_json(sample_image(cf)));
    ASSERT_TRUE(i) << i.error().to_string();
    EXPECT_EQ(*i, sample_image(cf));
  }
  ImageInfo local;
  local.mountpoint = "/m";
  local.blob_dir = "/d";
  auto l = images_from_json(images_to_json({sample_image(true), local}));
  ASSERT_TRUE(l);
  ASSERT_EQ(l->size(), 2U);
  EXPECT_EQ((*l)[1], local);
  auto f = files_from_json(files_to_json({"/a", "/b c"}));
  ASSERT_TRUE(f);
  EXPECT_EQ(*f, (std::vector<std::string>{"/a", "/b c"}));
  Metrics m;
  m.backend_bytes = 5;
  m.chunk_count = 9;
  m.refetches = 4;
  m.refetch_successes = 3;
  m.blob_refetches = 2;
  m.blob_refetch_successes = 1;
  m.estargz_early_held_bytes = 6;
  m.estargz_early_fetched_bytes = 7;
  m.estargz_early_served_bytes = 8;
  m.cachefiles_read_local_us = {3, 1.5, 1.0, 2.0};
  m.fill_latency_us_buckets = {0, 1, 2};
  auto mm = metrics_from_json(to_json(m));
  ASSERT_TRUE(mm);
  EXPECT_EQ(*mm, m);
  EXPECT_TRUE(ok_from_json(ok_to_json()));
  auto t = prometheus_from_json(prometheus_to_json("x 1\n"));
  ASSERT_TRUE(t);
  EXPECT_EQ(*t, "x 1\n");
}

TEST(ControlApi, FailureAnswersAreTheirErrors) {
  const std::string a = error_to_json({EBUSY, "an image is already bound on /m"});
  auto i = image_from_json(a);
  ASSERT_FALSE(i);
  EXPECT_EQ(i.error().code, EBUSY);
  EXPECT_NE(i.error().message.find("already bound"), std::string::npos);
  EXPECT_EQ(ok_from_json(a).error().code, EBUSY);
  for (const char* junk : {"", "{", "[]", R"({"pid":1})", R"({"ok":"yes"})"}) {
    auto p = ping_from_json(junk);
    ASSERT_FALSE(p) << junk;
    EXPECT_EQ(p.error().code, EPROTO) << junk;
  }
  auto wrong = images_from_json(R"({"ok":true,"images":[{"mountpoint":1}]})");
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, EPROTO);
}

// An error quoting bytes that are not UTF-8 (a registry's Location, a digest cut at 80
// bytes inside a character) is answered, with U+FFFD in their place, instead of throwing out
// of the daemon's control thread; a file name of an image that is not UTF-8 is answered
// losslessly as {"hex": its bytes}.
TEST(ControlApi, AnswersWithBytesThatAreNotUtf8) {
  const std::string a = error_to_json({EINVAL, "bad Location 'https://r/\xff\xc3'"});
  auto e = ok_from_json(a);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, EINVAL);
  EXPECT_NE(e.error().message.find("bad Location 'https://r/\xef\xbf\xbd"), std::string::npos)
      << e.error().message;
  const std::vector<std::string> names = {"/ok", "/caf\xe9", "/caf\xc3\xa9",
                                          std::string("/nul\0\xff\xc3", 8), "/\xef\xbf\xbd"};
  const std::string text = files_to_json(names);
  EXPECT_NE(text.find(R"({"hex":"2f636166e9"})"), std::string::npos) << text;
  EXPECT_NE(text.find("\"/caf\xc3\xa9\""), std::string::npos) << text;  // UTF-8: a string
  auto f = files_from_json(text);
  ASSERT_TRUE(f);
  EXPECT_EQ(*f, names);
  // Entries that are neither are protocol errors.
  for (const char* bad :
       {R"({"ok":true,"files":[{"hex":"2f6"}]})", R"({"ok":true,"files":[{"hex":"zz"}]})",
        R"({"ok":true,"files":[{"hex":1}]})", R"({"ok":true,"files":[{"hex":"2f","x":1}]})",
        R"({"ok":true,"files":[{}]})", R"({"ok":true,"files":[7]})", R"({"ok":true,"files":{}})",
        R"({"ok":true})"}) {
    auto b = files_from_json(bad);
    ASSERT_FALSE(b) << bad;
    EXPECT_EQ(b.error().code, EPROTO) << bad;
  }
}

// A request whose strings are not UTF-8 (a path from a command line, a label) is a
// clear error at the client, naming the field, never an exception; the same bytes sent
// raw are refused by the daemon's decoder with EINVAL.
TEST(ControlApi, RequestsThatAreNotUtf8AreRefused) {
  BindRequest b;
  b.mountpoint = "/mnt/caf\xe9";
  b.bootstrap = "/x/image.boot";
  b.blob_dir = "/x/blobs";
  auto t = to_json(Request{b});
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, EINVAL);
  EXPECT_NE(t.error().message.find("mountpoint is not valid UTF-8"), std::string::npos)
      << t.error().message;
  BindRequest r;
  r.mountpoint = "/mnt/b";
  r.reference = "h/r:t";
  r.registry = RegistryOverrides{};
  r.registry->ca_files = std::vector<std::string>{"/ok.pem", "/bad\xc3(.pem"};
  t = to_json(Request{r});
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().message.find("registry.ca_files[1] is not valid UTF-8"), std::string::npos)
      << t.error().message;
  auto o = to_json(*r.registry);
  ASSERT_FALSE(o);
  EXPECT_EQ(o.error().code, EINVAL);
  t = to_json(Request{UnbindRequest{"/mnt/\xed\xa0\x80", false}});  // a UTF-16 surrogate
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().message.find("mountpoint"), std::string::npos) << t.error().message;
  // The client says so before it connects (no daemon listens on this path).
  cfntest::TempDir tmp("cfn-control-utf8");
  auto a = Client(tmp.sub("none.sock")).bind(b);
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().code, EINVAL);
  // Raw bytes on the wire: refused by the decoder, no exception.
  for (const char* raw : {"{\"op\":\"unbind\",\"mountpoint\":\"/mnt/caf\xe9\"}",
                          "{\"op\":\"bind\",\"mountpoint\":\"/m\",\"reference\":\"h/\xff:t\"}",
                          "{\"op\":\"ping\",\"\xc0\xaf\":1}"}) {
    auto q = request_from_json(raw);
    ASSERT_FALSE(q) << raw;
    EXPECT_EQ(q.error().code, EINVAL);
    EXPECT_NE(q.error().message.find("not valid UTF-8"), std::string::npos) << q.error().message;
  }
}

TEST(ControlApi, PrometheusPrintsTheSnapshot) {
  Metrics m;
  m.backend_bytes = 1234;
  m.ready_chunks = 7;
  m.refetches = 5;
  m.refetch_successes = 4;
  m.blob_refetches = 3;
  m.blob_refetch_successes = 2;
  m.estargz_early_held_bytes = 1048576;
  m.estargz_early_fetched_bytes = 3145728;
  m.estargz_early_served_bytes = 2097152;
  m.cachefiles_read_fetched_us = {2, 1500, 1000, 2000};
  // The last bucket holds every longer fill too: it goes to +Inf only.
  m.fill_latency_us_buckets = {1, 0, 2, 5};
  m.fill_latency_count = 8;
  m.fill_latency_us_sum = 2500000;
  const std::string t = to_prometheus(m);
  EXPECT_NE(t.find("# TYPE cachefilesd_nydus_backend_bytes_total counter\n"
                   "cachefilesd_nydus_backend_bytes_total 1234\n"),
            std::string::npos);
  EXPECT_NE(
      t.find("# TYPE cachefilesd_nydus_ready_chunks gauge\ncachefilesd_nydus_ready_chunks 7\n"),
      std::string::npos);
  EXPECT_NE(t.find("cachefilesd_nydus_refetches_total 5\n"), std::string::npos);
  EXPECT_NE(t.find("cachefilesd_nydus_refetch_successes_total 4\n"), std::string::npos);
  EXPECT_NE(t.find("cachefilesd_nydus_blob_refetches_total 3\n"), std::string::npos);
  EXPECT_NE(t.find("cachefilesd_nydus_blob_refetch_successes_total 2\n"), std::string::npos);
  EXPECT_NE(t.find("# TYPE cachefilesd_nydus_estargz_early_held_bytes gauge\n"
                   "cachefilesd_nydus_estargz_early_held_bytes 1048576\n"),
            std::string::npos);
  EXPECT_NE(t.find("# TYPE cachefilesd_nydus_estargz_early_fetched_bytes_total counter\n"
                   "cachefilesd_nydus_estargz_early_fetched_bytes_total 3145728\n"),
            std::string::npos);
  EXPECT_NE(t.find("# TYPE cachefilesd_nydus_estargz_early_served_bytes_total counter\n"
                   "cachefilesd_nydus_estargz_early_served_bytes_total 2097152\n"),
            std::string::npos);
  EXPECT_NE(t.find("cachefilesd_nydus_cachefiles_read_seconds{data=\"fetched\",quantile=\"0.99\"} "
                   "0.002\n"),
            std::string::npos);
  EXPECT_NE(t.find("cachefilesd_nydus_cachefiles_read_seconds_count{data=\"fetched\"} 2\n"),
            std::string::npos);
  EXPECT_NE(t.find("cachefilesd_nydus_fill_latency_seconds_bucket{le=\"4e-06\"} 3\n"),
            std::string::npos);
  EXPECT_EQ(t.find("cachefilesd_nydus_fill_latency_seconds_bucket{le=\"8e-06\"}"),
            std::string::npos);
  EXPECT_NE(t.find("cachefilesd_nydus_fill_latency_seconds_bucket{le=\"+Inf\"} 8\n"
                   "cachefilesd_nydus_fill_latency_seconds_sum 2.5\n"
                   "cachefilesd_nydus_fill_latency_seconds_count 8\n"),
            std::string::npos)
      << t;
  EXPECT_EQ(t.find("image_ready_chunks"), std::string::npos);  // no images: no series
}

TEST(ControlApi, PrometheusLabelsEachImage) {
  ImageInfo a;
  a.mountpoint = "/mnt/a";
  a.frontend = "fuse";
  a.reference = "127.0.0.1:5000/x:1";
  a.blobs = {{"b1", "/c/b1", 4096, 100, 1, 2}, {"b2", "/c/b2", 8192, 100, 2, 2}};
  ImageInfo b;
  b.mountpoint = "/mnt/\"b\"";
  b.frontend = "fanotify";
  b.bootstrap = "/img/image.boot";
  const std::string t = to_prometheus(Metrics{}, {a, b});
  EXPECT_NE(t.find("# TYPE cachefilesd_nydus_image_ready_chunks gauge\n"
                   "cachefilesd_nydus_image_ready_chunks{reference=\"127.0.0.1:5000/x:1\","
                   "mountpoint=\"/mnt/a\",frontend=\"fuse\"} 3\n"
                   "cachefilesd_nydus_image_ready_chunks{reference=\"/img/image.boot\","
                   "mountpoint=\"/mnt/\\\"b\\\"\",frontend=\"fanotify\"} 0\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("cachefilesd_nydus_image_chunks{reference=\"127.0.0.1:5000/x:1\","
                   "mountpoint=\"/mnt/a\",frontend=\"fuse\"} 4\n"),
            std::string::npos);
  EXPECT_NE(t.find("cachefilesd_nydus_image_cached_bytes{reference=\"127.0.0.1:5000/x:1\","
                   "mountpoint=\"/mnt/a\",frontend=\"fuse\"} 10240\n"),
            std::string::npos);
}

TEST(ControlApi, StatusRoundTrips) {
  StatusAnswer s{42,   "0.1.0", "fanotify", {"fanotify", "fuse"}, 7, 2,
                 "/c", 4096,    "/s",       "127.0.0.1:9"};
  auto back = status_from_json(to_json(s));
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(*back, s);
  auto err = status_from_json(error_to_json({ENOENT, "x"}));
  ASSERT_FALSE(err);
  EXPECT_EQ(err.error().code, ENOENT);
}

// A one-shot server on a real socket: reads one request line, answers `answer`
// (nothing at all when empty: the client's deadline ends the call).
class OneShotServer {
 public:
  OneShotServer(const std::string& path, std::string answer) : answer_(std::move(answer)) {
    auto fd = base::listen_private(path, SOCK_STREAM, 4);
    EXPECT_TRUE(fd) << fd.error().to_string();
    fd_ = std::move(*fd);
    thread_ = std::thread([this] {
      // The listening socket is non-blocking: wait for the client first.
      pollfd p{fd_.get(), POLLIN, 0};
      (void)::poll(&p, 1, 10000);
      base::UniqueFd c(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      auto deadline = Clock::now() + std::chrono::seconds(10);
      auto line = read_line(c.get(), kMaxRequest, deadline);
      request_ = line ? *line : "";
      if (!answer_.empty()) {
        (void)send_all(c.get(), answer_ + "\n", deadline);
      } else {
        // Hold the connection until the client gives up and closes it.
        (void)read_line(c.get(), kMaxRequest, deadline);
      }
    });
  }
  ~OneShotServer() { (void)wait(); }
  // Wait for the server to finish: the request line it read.
  std::string wait() {
    if (thread_.joinable()) {
      thread_.join();
    }
    return request_;
  }

 private:
  std::string answer_;
  base::UniqueFd fd_;
  std::string request_;
  std::thread thread_;
};

TEST(ControlClient, BindSendsOneRequestAndTypesTheAnswer) {
  cfntest::TempDir tmp("cfn-control-client");
  BindRequest b;
  b.mountpoint = "/mnt/a";
  b.reference = "h/r:t";
  {
    OneShotServer server(tmp.sub("b.sock"), to_json(sample_image(false)));
    auto a = Client(tmp.sub("b.sock")).bind(b);
    ASSERT_TRUE(a) << a.error().to_string();
    EXPECT_EQ(*a, sample_image(false));
    EXPECT_EQ(server.wait(), to_json(b));
  }
  {
    OneShotServer server(tmp.sub("u.sock"), ok_to_json());
    EXPECT_TRUE(Client(tmp.sub("u.sock")).unbind({"/mnt/a", false}));
  }
  {
    OneShotServer server(tmp.sub("e.sock"), error_to_json({ENOENT, "no image bound on /mnt/a"}));
    auto st = Client(tmp.sub("e.sock")).unbind({"/mnt/a", false});
    ASSERT_FALSE(st);
    EXPECT_EQ(st.error().code, ENOENT);
  }
}

TEST(ControlClient, DeadlineAndNoDaemon) {
  cfntest::TempDir tmp("cfn-control-client");
  auto none = Client(tmp.sub("none.sock")).ping();
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, ENOENT);
  OneShotServer silent(tmp.sub("s.sock"), "");
  auto late = Client(tmp.sub("s.sock"), std::chrono::milliseconds(200)).list();
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().code, ETIMEDOUT);
}

}  // namespace
}  // namespace control
