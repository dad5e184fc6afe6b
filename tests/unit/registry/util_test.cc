// SPDX-License-Identifier: Apache-2.0
#include "registry/util.h"

#include <gtest/gtest.h>

#include "registry/endpoints.h"

namespace registry::internal {
namespace {

using std::chrono::milliseconds;

TEST(Backoff, FullJitterBounds) {
  RetryPolicy p;
  p.base_delay = milliseconds(100);
  p.max_delay = milliseconds(5000);
  EXPECT_EQ(backoff_delay(p, 0, 0.0), milliseconds(0));
  EXPECT_EQ(backoff_delay(p, 0, 0.5), milliseconds(50));
  EXPECT_EQ(backoff_delay(p, 1, 0.5), milliseconds(100));
  EXPECT_EQ(backoff_delay(p, 3, 0.999), milliseconds(799));
  EXPECT_EQ(backoff_delay(p, 10, 0.5), milliseconds(2500));    // capped at max
  EXPECT_EQ(backoff_delay(p, 1000, 0.5), milliseconds(2500));  // no overflow
  EXPECT_LE(backoff_delay(p, 1000, 1.0), milliseconds(5000));
  EXPECT_EQ(backoff_delay(p, -3, 0.5), milliseconds(50));
}

TEST(RetryAfter, SecondsAndDates) {
  const auto now = std::chrono::system_clock::from_time_t(1445412480);  // 2015-10-21 07:28:00Z
  EXPECT_EQ(parse_retry_after("3", now), milliseconds(3000));
  EXPECT_EQ(parse_retry_after(" 0 ", now), milliseconds(0));
  EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now), milliseconds(10000));
  EXPECT_EQ(parse_retry_after("Wednesday, 21-Oct-15 07:28:05 GMT", now), milliseconds(5000));
  EXPECT_EQ(parse_retry_after("Wed Oct 21 07:28:02 2015", now), milliseconds(2000));
  EXPECT_EQ(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), milliseconds(0));
  EXPECT_TRUE(parse_retry_after("99999999999999999999999", now).has_value());
  for (const char* bad : {"", "-1", "1.5", "soon", "Wed, 21 Oct 2015", "3s"}) {
    EXPECT_FALSE(parse_retry_after(bad, now).has_value()) << bad;
  }
}

TEST(Url, ParseAndResolve) {
  auto u = parse_url("HTTPS://Host:5000/v2/x?y=1#frag");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->scheme, "https");
  EXPECT_EQ(u->authority, "Host:5000");
  EXPECT_EQ(u->path, "/v2/x?y=1");
  EXPECT_EQ(parse_url("http://h")->path, "/");
  EXPECT_FALSE(parse_url("ftp://h/"));
  EXPECT_FALSE(parse_url("http:///x"));
  EXPECT_FALSE(parse_url("http://user:pw@h/"));
  EXPECT_FALSE(parse_url("/relative"));

  const std::string base = "http://127.0.0.1:5000/v2/a/blobs/uploads/?x=1";
  EXPECT_EQ(*resolve_location(base, "https://s3.example/bucket?sig=1"),
            "https://s3.example/bucket?sig=1");
  EXPECT_EQ(*resolve_location(base, "/v2/a/blobs/uploads/uuid?_state=s"),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/uuid?_state=s");
  EXPECT_EQ(*resolve_location(base, "//other:1/p"), "http://other:1/p");
  EXPECT_EQ(*resolve_location(base, "uuid"), "http://127.0.0.1:5000/v2/a/blobs/uploads/uuid");
  EXPECT_EQ(*resolve_location(base, "?q"), "http://127.0.0.1:5000/v2/a/blobs/uploads/?q");
  EXPECT_FALSE(resolve_location(base, ""));
  EXPECT_FALSE(resolve_location(base, "/a\r\nX-Evil: 1"));
  EXPECT_FALSE(resolve_location(base, "gopher://x/"));
}

TEST(Url, AuthorityHost) {
  EXPECT_EQ(authority_host("h:1"), "h");
  EXPECT_EQ(authority_host("[::1]:5000"), "::1");
  EXPECT_EQ(authority_host("::1"), "::1");
  EXPECT_EQ(authority_host("h"), "h");
}

TEST(Base64, RoundTrip) {
  for (const char* s : {"", "a", "ab", "abc", "abcd", "testuser:testpass", "\xff\x00\x10"}) {
    auto d = base64_decode(base64_encode(s));
    ASSERT_TRUE(d) << s;
    EXPECT_EQ(*d, s);
  }
  EXPECT_EQ(base64_encode("testuser:testpass"), "dGVzdHVzZXI6dGVzdHBhc3M=");
  EXPECT_EQ(*base64_decode("dGVzdHVzZXI6dGVzdHBhc3M"), "testuser:testpass");
  EXPECT_FALSE(base64_decode("a"));
  EXPECT_FALSE(base64_decode("ab c"));
  EXPECT_FALSE(base64_decode("ab!c"));
}

TEST(UrlEscape, Reserved) {
  EXPECT_EQ(url_escape("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
  EXPECT_EQ(url_escape("a b~._-"), "a%20b~._-");
}

TEST(Base64, PaddingAndBinary) {
  EXPECT_EQ(*base64_decode("YQ=="), "a");
  EXPECT_EQ(*base64_decode("YQ"), "a");
  EXPECT_EQ(*base64_decode("YWI="), "ab");
  EXPECT_EQ(*base64_decode("YWJj"), "abc");
  EXPECT_EQ(*base64_decode(""), "");
  const std::string bin("\xff\x00\x10\x00", 4);
  EXPECT_EQ(base64_encode(bin), "/wAQAA==");
  EXPECT_EQ(*base64_decode("/wAQAA=="), bin);  // trailing NULs are data, not padding
  EXPECT_EQ(*base64_decode("/wAQAA"), bin);
  for (const char* bad : {" YQ==", "YQ== ", "Y=Q=", "YQ\n", "Y\0Q="}) {
    EXPECT_FALSE(base64_decode(bad)) << bad;
  }
  EXPECT_FALSE(base64_decode(std::string_view("YQ\0=", 4)));
}

TEST(Url, CurlCornerCases) {
  EXPECT_EQ(parse_url("http://[::1]:5000/v2/")->authority, "[::1]:5000");
  EXPECT_EQ(parse_url("https://h/a?b=c#d")->path, "/a?b=c");
  EXPECT_FALSE(parse_url("http://h/a\x01b"));
  EXPECT_FALSE(parse_url("http://h\x7f/"));
  EXPECT_FALSE(parse_url("http://?x"));
  EXPECT_EQ(*resolve_location("http://h:1/a/b?c", "../d"), "http://h:1/d");
  EXPECT_EQ(*resolve_location("http://h:1/a/b", "https://o/p#frag"), "https://o/p");
}

TEST(ContentRange, Parse) {
  auto r = parse_content_range("bytes 1000-1999/1048576");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->first, 1000U);
  EXPECT_EQ(r->last, 1999U);
  EXPECT_EQ(r->total, 1048576U);
  r = parse_content_range("bytes 0-0/*");
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->total);
  for (const char* bad : {"", "bytes", "bytes 5-4/10", "bytes 1-2", "items 1-2/3", "bytes -2/3",
                          "bytes 1-2/x", "bytes 1-99999999999999999999/*", "bytes 1-2/3/4"}) {
    EXPECT_FALSE(parse_content_range(bad)) << bad;
  }
}

// One rule decides what a failed mirror request says about the mirror, for whole
// pulls and range reads alike.
TEST(MirrorFailure, OneRule) {
  for (int code : {ECONNRESET, ETIMEDOUT, EIO}) {
    EXPECT_EQ(classify_mirror_failure(base::Error{code, ""}), MirrorFailure::kDown) << code;
  }
  for (int code : {ENOENT, EACCES, EBADMSG, ERANGE, EMSGSIZE, EINVAL}) {
    EXPECT_EQ(classify_mirror_failure(base::Error{code, ""}), MirrorFailure::kAnswer) << code;
  }
  registry::DeadlineScope gone(std::chrono::steady_clock::now() - std::chrono::milliseconds(1));
  for (int code : {ECONNRESET, ETIMEDOUT, EIO, ENOENT}) {
    EXPECT_EQ(classify_mirror_failure(base::Error{code, ""}), MirrorFailure::kDeadline) << code;
  }
}

}  // namespace
}  // namespace registry::internal

TEST(Util, UrlForLogHidesQueryAndUserinfo) {
  using registry::internal::url_for_log;
  EXPECT_EQ(url_for_log("https://r.example/v2/a/blobs/sha256:ab"),
            "https://r.example/v2/a/blobs/sha256:ab");
  EXPECT_EQ(url_for_log("https://s3.example/b/x?X-Amz-Signature=secret&X-Amz-Credential=k"),
            "https://s3.example/b/x?\u2026");
  EXPECT_EQ(url_for_log("https://user:pw@h.example:5000/v2/?q=1#f"),
            "https://\u2026@h.example:5000/v2/?\u2026");
  EXPECT_EQ(url_for_log("http://h/p#frag"), "http://h/p#\u2026");
  EXPECT_EQ(url_for_log("http://h?sig=1"), "http://h?\u2026");
  EXPECT_EQ(url_for_log("not a url"), "not a url");
  EXPECT_EQ(url_for_log(""), "");
}
