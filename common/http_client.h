// A small HTTPS client (libcurl) for fetching key sets (JWKS) and talking to
// an OpenID Connect provider.
//
// Errors: UNAVAILABLE, reason HTTP_UNAVAILABLE, with the URL in the message
// and the metadata, when no HTTP answer arrived (DNS, connect, TLS
// handshake, certificate verification, timeout, a body over 4 MiB). Any
// HTTP answer, whatever its status, is returned as an HttpResponse: the
// caller decides what a 404 means. Only http:// and https:// URLs are
// followed; redirects are not.
#ifndef LABSHARE_COMMON_HTTP_CLIENT_H_
#define LABSHARE_COMMON_HTTP_CLIENT_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace labshare {

struct HttpOptions {
  // PEM file of the CA certificates to trust; empty: the system's.
  std::string ca_file;
  // Client certificate and key (PEM) for mutual TLS; empty: none.
  std::string cert_file, key_file;
  // For the whole exchange (connect, TLS, request, answer).
  absl::Duration timeout = absl::Seconds(10);
};

struct HttpResponse {
  long status = 0;           // HTTP status code, e.g. 200
  std::string body;
  std::string content_type;  // "" when the server sent none
};

absl::StatusOr<HttpResponse> HttpGet(const std::string& url, const HttpOptions& options);

// POST of application/x-www-form-urlencoded fields (each name and value
// percent-encoded here).
absl::StatusOr<HttpResponse> HttpPostForm(const std::string& url,
                                          const std::vector<std::pair<std::string, std::string>>& fields,
                                          const HttpOptions& options);

}  // namespace labshare

#endif  // LABSHARE_COMMON_HTTP_CLIENT_H_
