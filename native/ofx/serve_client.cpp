#include "serve_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>
#include <string>
#include <vector>

extern char** environ;  // the host process environment, copied for the server

namespace combcn {
namespace {

constexpr char kMagic[4] = {'C', 'C', 'N', '1'};  // protocol major version 1
constexpr uint32_t kMaxReply = 1 << 20;

double env_seconds(const char* name, double fallback) {
  const char* v = getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  double d = strtod(v, &end);
  return (end != v && d > 0) ? d : fallback;
}

double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

std::string errno_text(const char* what) { return std::string(what) + ": " + strerror(errno); }

bool ensure_private_dir(const std::string& path, std::string* err) {
  if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    *err = errno_text(("cannot create " + path).c_str());
    return false;
  }
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    *err = errno_text(("cannot stat " + path).c_str());
    return false;
  }
  // Why: another user could pre-create the directory in /tmp and read our frames.
  if (!S_ISDIR(st.st_mode) || st.st_uid != getuid() || (st.st_mode & 077) != 0) {
    *err = path + " is not a private directory of this user (must be mode 0700, owned by uid " +
           std::to_string(getuid()) + "); remove it and try again";
    return false;
  }
  return true;
}

constexpr const char* kReplyTimeoutVar = "COMBCN_SERVE_TIMEOUT";
constexpr const char* kStartupTimeoutVar = "COMBCN_SERVE_STARTUP_TIMEOUT";

// Waits until fd is readable/writable, checking the host's abort flag; false on time-out/abort.
// `timeout_var` is the environment variable that sets this wait, named in the time-out message.
bool wait_fd(int fd, short events, double deadline, const AbortFn& aborted, std::string* err,
             const char* what, const char* timeout_var = kReplyTimeoutVar) {
  for (;;) {
    double left = deadline - now_s();
    if (left <= 0) {
      *err = std::string("timed out ") + what + " (set " + timeout_var + " to wait longer)";
      return false;
    }
    if (aborted && aborted()) {
      *err = "render aborted by the host";
      return false;
    }
    pollfd p{fd, events, 0};
    int step = static_cast<int>(left * 1000.0);
    if (step > 250) step = 250;
    if (step < 1) step = 1;
    int r = poll(&p, 1, step);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      *err = errno_text("poll");
      return false;
    }
    if (r > 0) return true;
  }
}

bool send_all(int fd, const char* data, size_t n, double deadline, const AbortFn& aborted, std::string* err) {
  while (n > 0) {
    if (!wait_fd(fd, POLLOUT, deadline, aborted, err, "sending to the combcn server")) return false;
    ssize_t w = send(fd, data, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      *err = errno_text("lost the combcn server while sending (it may have crashed; see serve.log)");
      return false;
    }
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool recv_all(int fd, char* data, size_t n, double deadline, const AbortFn& aborted, std::string* err) {
  while (n > 0) {
    if (!wait_fd(fd, POLLIN, deadline, aborted, err, "waiting for the combcn server")) return false;
    ssize_t r = recv(fd, data, n, 0);
    if (r == 0) {
      *err = "the combcn server closed the connection before answering (it was stopped or crashed; "
             "see serve.log in the runtime directory)";
      return false;
    }
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      *err = errno_text("lost the combcn server while waiting for its answer");
      return false;
    }
    data += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

int connect_unix(const std::string& path, int* saved_errno) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    *saved_errno = ENAMETOOLONG;
    return -1;
  }
  memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *saved_errno = errno;
    return -1;
  }
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    *saved_errno = errno;
    close(fd);
    return -1;
  }
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  return fd;
}

bool is_executable(const std::string& p) {
  struct stat st;
  return !p.empty() && stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && access(p.c_str(), X_OK) == 0;
}

// The command that starts the server: COMBCN_SERVE, else COMBCN_PYTHON -m combcn, else combcn on PATH.
bool server_command(std::vector<std::string>* argv, std::string* err) {
  const char* serve = getenv("COMBCN_SERVE");
  const char* python = getenv("COMBCN_PYTHON");
  if (serve != nullptr && *serve != '\0') {
    if (!is_executable(serve)) {
      *err = std::string("COMBCN_SERVE=") + serve + " is not an executable file; point it at the combcn program";
      return false;
    }
    argv->push_back(serve);
  } else if (python != nullptr && *python != '\0') {
    if (!is_executable(python)) {
      *err = std::string("COMBCN_PYTHON=") + python + " is not an executable file; point it at a Python with combcn";
      return false;
    }
    *argv = {python, "-m", "combcn"};
  } else {
    const char* path = getenv("PATH");
    std::string found;
    std::string p = path ? path : "";
    size_t start = 0;
    while (start <= p.size()) {
      size_t end = p.find(':', start);
      if (end == std::string::npos) end = p.size();
      std::string dir = p.substr(start, end - start);
      if (!dir.empty() && is_executable(dir + "/combcn")) {
        found = dir + "/combcn";
        break;
      }
      start = end + 1;
    }
    if (found.empty()) {
      *err = "cannot find the combcn server: set COMBCN_SERVE to the combcn program (or COMBCN_PYTHON to a "
             "Python with combcn installed), or put combcn on the PATH of the host application";
      return false;
    }
    argv->push_back(found);
  }
  return true;
}

std::string log_tail(const std::string& log_path) {
  FILE* f = fopen(log_path.c_str(), "rb");
  if (f == nullptr) return "";
  fseek(f, 0, SEEK_END);
  long size = ftell(f);
  long from = size > 600 ? size - 600 : 0;
  fseek(f, from, SEEK_SET);
  std::string text(static_cast<size_t>(size - from), '\0');
  size_t got = fread(&text[0], 1, text.size(), f);
  fclose(f);
  text.resize(got);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  size_t nl = text.rfind('\n');
  return nl == std::string::npos ? text : text.substr(nl + 1);
}

// Starts `combcn serve` detached (double fork, new session) and waits for its ready byte.
bool spawn_server(const std::string& sock, std::string* err, const AbortFn& aborted) {
  std::vector<std::string> args;
  if (!server_command(&args, err)) return false;
  // The log lives beside the socket (a private directory: see socket_path()).
  std::string dir = sock.substr(0, sock.rfind('/'));
  if (dir.empty()) dir = "/";
  std::string log_path = dir + "/serve.log";
  const char* idle = getenv("COMBCN_SERVE_IDLE");
  args.insert(args.end(), {"serve", "--socket", sock, "--ready-fd", "3"});
  if (idle != nullptr && *idle != '\0') args.insert(args.end(), {"--idle-timeout", idle});
  std::vector<char*> cargv;
  for (auto& a : args) cargv.push_back(&a[0]);
  cargv.push_back(nullptr);
  // The host's embedded Python settings (PYTHONHOME/PYTHONPATH, e.g. Nuke's) would break the server's
  // own Python: drop them; COMBCN_SERVE_PYTHONPATH becomes the server's PYTHONPATH if set.
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    if (strncmp(*e, "PYTHONHOME=", 11) == 0 || strncmp(*e, "PYTHONPATH=", 11) == 0) continue;
    env_strings.emplace_back(*e);
  }
  const char* extra_path = getenv("COMBCN_SERVE_PYTHONPATH");
  if (extra_path != nullptr && *extra_path != '\0') env_strings.push_back(std::string("PYTHONPATH=") + extra_path);
  std::vector<char*> cenv;
  for (auto& e : env_strings) cenv.push_back(&e[0]);
  cenv.push_back(nullptr);
  struct stat log_st;
  const bool log_too_big = stat(log_path.c_str(), &log_st) == 0 && log_st.st_size > (16 << 20);

  int ready[2];
  if (pipe2(ready, O_CLOEXEC) != 0) {
    *err = errno_text("pipe");
    return false;
  }
  int logfd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (log_too_big ? O_TRUNC : 0), 0600);
  int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  pid_t child = fork();
  if (child < 0) {
    *err = errno_text("fork");
    close(ready[0]);
    close(ready[1]);
    if (logfd >= 0) close(logfd);
    if (nullfd >= 0) close(nullfd);
    return false;
  }
  if (child == 0) {
    // Only async-signal-safe calls from here: the host may be multi-threaded.
    setsid();
    pid_t grand = fork();
    if (grand != 0) _exit(grand < 0 ? 1 : 0);
    if (nullfd >= 0) dup2(nullfd, 0);
    if (logfd >= 0) {
      dup2(logfd, 1);
      dup2(logfd, 2);
    }
    if (ready[1] == 3) {
      fcntl(3, F_SETFD, 0);  // dup2 onto itself would keep close-on-exec
    } else {
      dup2(ready[1], 3);  // dup2 clears close-on-exec: the server inherits fd 3
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(cargv[0], cargv.data(), cenv.data());
    const char msg[] = "combcn serve: cannot execute the server program\n";
    ssize_t ignored = write(2, msg, sizeof(msg) - 1);
    (void)ignored;
    _exit(127);
  }
  close(ready[1]);
  if (logfd >= 0) close(logfd);
  if (nullfd >= 0) close(nullfd);
  int status = 0;
  while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
  }
  double deadline = now_s() + env_seconds(kStartupTimeoutVar, 120.0);
  char byte = 0;
  bool ok = false;
  bool gave_up = false;  // we stopped waiting (time-out, error), as opposed to a host abort
  std::string werr;
  if (!wait_fd(ready[0], POLLIN, deadline, aborted, &werr, "starting the combcn server", kStartupTimeoutVar)) {
    gave_up = !(aborted && aborted());
  } else {
    ssize_t r;
    do {
      r = read(ready[0], &byte, 1);
    } while (r < 0 && errno == EINTR);
    ok = (r == 1 && byte == 'R');
    if (!ok) {
      // EOF: the server exited; another one may have won the start-up race and be listening.
      int e = 0;
      int fd = connect_unix(sock, &e);
      if (fd >= 0) {
        close(fd);
        ok = true;
      } else {
        std::string tail = log_tail(log_path);
        werr = "the combcn server exited during start-up" + (tail.empty() ? std::string() : ": " + tail) +
               " (log: " + log_path + ")";
        gave_up = true;  // a wrapper script may have left children behind
      }
    }
  }
  close(ready[0]);
  if (gave_up) {
    // A server that did not come up must not linger: kill its whole process group (setsid made the
    // intermediate child, `child`, its leader; the kernel keeps that id reserved while any member
    // lives). It was detached by the double fork, so init reaps it once it is dead.
    kill(-child, SIGKILL);
  }
  if (!ok) *err = werr;
  return ok;
}

// Minimal parser for the flat JSON object the server replies with.
bool parse_flat_json(const std::string& s, Reply* out) {
  size_t i = 0;
  auto ws = [&] {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r')) ++i;
  };
  auto str = [&](std::string* v) -> bool {
    if (i >= s.size() || s[i] != '"') return false;
    ++i;
    while (i < s.size() && s[i] != '"') {
      char c = s[i++];
      if (c == '\\' && i < s.size()) {
        char e = s[i++];
        switch (e) {
          case 'n': v->push_back('\n'); break;
          case 't': v->push_back('\t'); break;
          case 'r': v->push_back('\r'); break;
          case 'b': v->push_back('\b'); break;
          case 'f': v->push_back('\f'); break;
          case 'u':
            if (i + 4 <= s.size()) {
              unsigned code = static_cast<unsigned>(strtoul(s.substr(i, 4).c_str(), nullptr, 16));
              i += 4;
              if (code < 0x80) {
                v->push_back(static_cast<char>(code));
              } else if (code < 0x800) {
                v->push_back(static_cast<char>(0xC0 | (code >> 6)));
                v->push_back(static_cast<char>(0x80 | (code & 0x3F)));
              } else {
                v->push_back(static_cast<char>(0xE0 | (code >> 12)));
                v->push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
                v->push_back(static_cast<char>(0x80 | (code & 0x3F)));
              }
            }
            break;
          default: v->push_back(e);
        }
      } else {
        v->push_back(c);
      }
    }
    if (i >= s.size()) return false;
    ++i;
    return true;
  };
  ws();
  if (i >= s.size() || s[i] != '{') return false;
  ++i;
  for (;;) {
    ws();
    if (i < s.size() && s[i] == '}') return true;
    std::string key, value;
    if (!str(&key)) return false;
    ws();
    if (i >= s.size() || s[i] != ':') return false;
    ++i;
    ws();
    if (i < s.size() && s[i] == '"') {
      if (!str(&value)) return false;
    } else {
      // Scalars as text; nested values are skipped by bracket depth (not needed by the plugin).
      int depth = 0;
      size_t start = i;
      while (i < s.size()) {
        char c = s[i];
        if (c == '"') {
          std::string skip;
          if (!str(&skip)) return false;
          continue;
        }
        if (c == '[' || c == '{') ++depth;
        if (c == ']' || c == '}') {
          if (depth == 0) break;
          --depth;
        }
        if (c == ',' && depth == 0) break;
        ++i;
      }
      value = s.substr(start, i - start);
      while (!value.empty() && (value.back() == ' ' || value.back() == '\n')) value.pop_back();
    }
    (*out)[key] = value;
    ws();
    if (i < s.size() && s[i] == ',') {
      ++i;
      continue;
    }
    if (i < s.size() && s[i] == '}') return true;
    return false;
  }
}

std::mutex g_spawn_mutex;  // one start-up at a time per host process

}  // namespace

uint64_t content_hash(const void* data, size_t bytes, uint64_t seed) {
  // Word-at-a-time multiply/rotate mix with a splitmix64 finaliser: not cryptographic, but any
  // change of the bytes changes the result with overwhelming probability (change detection only).
  const unsigned char* p = static_cast<const unsigned char*>(data);
  uint64_t h = seed ^ (0x9E3779B97F4A7C15ull * (bytes + 1));
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h ^= w * 0xC2B2AE3D27D4EB4Full;
    h = ((h << 31) | (h >> 33)) * 0x9E3779B97F4A7C15ull;
  }
  uint64_t tail = 0;
  for (size_t k = 0; i < bytes; ++i, ++k) tail |= static_cast<uint64_t>(p[i]) << (8 * k);
  h ^= tail * 0x165667B19E3779F9ull;
  h ^= h >> 30;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 27;
  h *= 0x94D049BB133111EBull;
  h ^= h >> 31;
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string json_quote(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o.push_back('\\');
      o.push_back(static_cast<char>(c));
    } else if (c < 0x20) {
      char buf[8];
      snprintf(buf, sizeof(buf), "\\u%04x", c);
      o += buf;
    } else {
      o.push_back(static_cast<char>(c));
    }
  }
  return o + "\"";
}

std::string runtime_dir(std::string* err) {
  const char* xdg = getenv("XDG_RUNTIME_DIR");
  std::string dir;
  struct stat st;
  if (xdg != nullptr && *xdg != '\0' && stat(xdg, &st) == 0 && S_ISDIR(st.st_mode)) {
    dir = std::string(xdg) + "/combcn";
  } else {
    dir = "/tmp/combcn-" + std::to_string(getuid());
  }
  if (!ensure_private_dir(dir, err)) return "";
  return dir;
}

std::string socket_path(std::string* err) {
  const char* env = getenv("COMBCN_SERVE_SOCKET");
  if (env != nullptr && *env != '\0') {
    std::string path = env;
    size_t slash = path.rfind('/');
    if (slash == std::string::npos || slash == 0) {
      *err = "COMBCN_SERVE_SOCKET must be an absolute path in a private directory, got " + path;
      return "";
    }
    if (!ensure_private_dir(path.substr(0, slash), err)) return "";
    return path;
  }
  std::string dir = runtime_dir(err);
  return dir.empty() ? "" : dir + "/serve.sock";
}

SharedBuffer::~SharedBuffer() {
  if (ptr_ != nullptr && ptr_ != MAP_FAILED) munmap(ptr_, size_);
  if (fd_ >= 0) close(fd_);
}

bool SharedBuffer::create(size_t bytes, std::string* err) {
  fd_ = static_cast<int>(syscall(SYS_memfd_create, "combcn-window", 1u | 2u /* MFD_CLOEXEC | MFD_ALLOW_SEALING */));
  if (fd_ < 0) {
    *err = errno_text("memfd_create");
    return false;
  }
  if (ftruncate(fd_, static_cast<off_t>(bytes)) != 0) {
    *err = errno_text("cannot size the shared buffer");
    return false;
  }
  // Sealed size: the server maps it and must never see it shrink under it (that would be SIGBUS).
  if (fcntl(fd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
    *err = errno_text("cannot seal the shared buffer");
    return false;
  }
  ptr_ = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (ptr_ == MAP_FAILED) {
    ptr_ = nullptr;
    *err = errno_text("cannot map the shared buffer (out of memory?)");
    return false;
  }
  size_ = bytes;
  return true;
}

bool call_server(const std::string& request_json, const SharedBuffer* shm, Reply* reply, std::string* err,
                 const AbortFn& aborted, bool* connected) {
  if (connected != nullptr) *connected = false;
  std::string sock = socket_path(err);
  if (sock.empty()) return false;
  int e = 0;
  int fd = connect_unix(sock, &e);
  if (fd < 0) {
    std::lock_guard<std::mutex> lock(g_spawn_mutex);
    fd = connect_unix(sock, &e);  // another render thread may have started it meanwhile
    if (fd < 0) {
      if (!spawn_server(sock, err, aborted)) return false;
      fd = connect_unix(sock, &e);
      if (fd < 0) {
        errno = e;
        *err = errno_text(("cannot connect to the combcn server at " + sock).c_str());
        return false;
      }
    }
  }
  if (connected != nullptr) *connected = true;
  double deadline = now_s() + env_seconds(kReplyTimeoutVar, 600.0);
  bool ok = false;
  do {
    // Header: magic + body length (little-endian u32); the memfd rides on the header's first byte.
    uint32_t len = static_cast<uint32_t>(request_json.size());
    char header[8];
    memcpy(header, kMagic, 4);
    for (int k = 0; k < 4; ++k) header[4 + k] = static_cast<char>((len >> (8 * k)) & 0xFF);
    if (!wait_fd(fd, POLLOUT, deadline, aborted, err, "sending to the combcn server")) break;
    msghdr msg{};
    iovec iov{header, sizeof(header)};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    if (shm != nullptr) {
      memset(control, 0, sizeof(control));
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      int shm_fd = shm->fd();
      memcpy(CMSG_DATA(c), &shm_fd, sizeof(int));
    }
    ssize_t w;
    do {
      w = sendmsg(fd, &msg, MSG_NOSIGNAL);
    } while (w < 0 && errno == EINTR);
    if (w < 0) {
      *err = errno_text("lost the combcn server while sending");
      break;
    }
    if (w < static_cast<ssize_t>(sizeof(header)) &&
        !send_all(fd, header + w, sizeof(header) - static_cast<size_t>(w), deadline, aborted, err))
      break;
    if (!send_all(fd, request_json.data(), request_json.size(), deadline, aborted, err)) break;
    char rh[8];
    if (!recv_all(fd, rh, sizeof(rh), deadline, aborted, err)) break;
    if (memcmp(rh, kMagic, 4) != 0) {
      *err = "the combcn server answered in another protocol version; update the plugin and combcn together";
      break;
    }
    uint32_t rlen = 0;
    for (int k = 0; k < 4; ++k) rlen |= static_cast<uint32_t>(static_cast<unsigned char>(rh[4 + k])) << (8 * k);
    if (rlen > kMaxReply) {
      *err = "the combcn server sent an oversized reply";
      break;
    }
    std::string body(rlen, '\0');
    if (!recv_all(fd, &body[0], rlen, deadline, aborted, err)) break;
    reply->clear();
    if (!parse_flat_json(body, reply)) {
      *err = "the combcn server sent a reply that is not JSON";
      break;
    }
    if ((*reply)["ok"] != "true") {
      auto it = reply->find("error");
      *err = "combcn server: " + (it != reply->end() ? it->second : std::string("unknown error"));
      break;
    }
    ok = true;
  } while (false);
  close(fd);
  return ok;
}

}  // namespace combcn
