#include "common/secret_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <openssl/crypto.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/error.h"

namespace labshare {
namespace {

constexpr size_t kMaxSecretFileBytes = 64 * 1024;

}  // namespace

void WipeSecret(std::string& s) {
  if (!s.empty()) OPENSSL_cleanse(s.data(), s.size());
  s.clear();
}

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, std::string_view what) {
  const std::string name(what);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return MakeError(absl::StatusCode::kNotFound, "SECRET_FILE_NOT_FOUND",
                       absl::StrCat(name, " file ", path, " does not exist"), {{"file", path}});
    }
    return MakeError(absl::StatusCode::kInvalidArgument, "SECRET_FILE_UNREADABLE",
                     absl::StrCat("cannot open ", name, " file ", path, ": ", std::strerror(err),
                                  "; make it readable by this process's user"),
                     {{"file", path}});
  }
  auto fail = [&](absl::Status status) {
    ::close(fd);
    return status;
  };
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return fail(MakeError(absl::StatusCode::kInvalidArgument, "SECRET_FILE_UNREADABLE",
                          absl::StrCat(name, " file ", path, " is not a regular file"), {{"file", path}}));
  }
  if ((st.st_mode & 077) != 0) {
    return fail(MakeError(
        absl::StatusCode::kFailedPrecondition, "SECRET_FILE_EXPOSED",
        absl::StrFormat("%s file %s has mode %04o: others on this host can read or change it; "
                        "run `chmod 600 %s` (or mount the secret with defaultMode 0400)",
                        name, path, static_cast<unsigned>(st.st_mode & 07777), path),
        {{"file", path}}));
  }
  std::string data;
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      OPENSSL_cleanse(buf, sizeof(buf));
      WipeSecret(data);
      return fail(MakeError(absl::StatusCode::kInvalidArgument, "SECRET_FILE_UNREADABLE",
                            absl::StrCat("cannot read ", name, " file ", path, ": ", std::strerror(err)),
                            {{"file", path}}));
    }
    if (n == 0) break;
    data.append(buf, static_cast<size_t>(n));
    if (data.size() > kMaxSecretFileBytes) {
      OPENSSL_cleanse(buf, sizeof(buf));
      WipeSecret(data);
      return fail(MakeError(absl::StatusCode::kInvalidArgument, "SECRET_FILE_UNREADABLE",
                            absl::StrCat(name, " file ", path, " is larger than 64 KiB"), {{"file", path}}));
    }
  }
  ::close(fd);
  OPENSSL_cleanse(buf, sizeof(buf));
  return data;
}

}  // namespace labshare
