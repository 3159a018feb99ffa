// Client side of the combcn serve protocol (docs/OFX.md): finds or starts the local server, sends one
// request with its pixels in a memfd passed over the Unix socket, and waits for the reply with a
// time-out. Every failure comes back as a message string, never an exception or a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace combcn {

// A flat JSON reply: keys to raw scalar values (strings unescaped; numbers/bools as text).
using Reply = std::map<std::string, std::string>;

// The per-user directory holding the socket and the server log: 0700, owned by us.
// $XDG_RUNTIME_DIR/combcn, else /tmp/combcn-$UID. Empty on failure (error in *err).
std::string runtime_dir(std::string* err);

// Socket path: $COMBCN_SERVE_SOCKET if set, else <runtime_dir>/serve.sock.
std::string socket_path(std::string* err);

// Shared memory for one request: an anonymous memfd, mapped read-write.
class SharedBuffer {
 public:
  SharedBuffer() = default;
  ~SharedBuffer();
  SharedBuffer(const SharedBuffer&) = delete;
  SharedBuffer& operator=(const SharedBuffer&) = delete;
  bool create(size_t bytes, std::string* err);
  float* data() const { return static_cast<float*>(ptr_); }
  int fd() const { return fd_; }
  size_t size() const { return size_; }

 private:
  int fd_ = -1;
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

// Abort callback: returns true when the host wants the render cancelled.
using AbortFn = std::function<bool()>;

// Sends `request_json` (a JSON object) with `shm`'s fd attached, starting the server if none listens.
// Fills `reply` and returns true when the server answered {"ok": true}; otherwise false with a
// user-readable message in *err (server error text, time-out, server died, server not found).
// `reply` holds an "ok" key exactly when the server answered (so a caller can tell a refusal from a
// server it could not reach). A server that does not come up within COMBCN_SERVE_STARTUP_TIMEOUT
// is killed.
// `connected` (optional) tells whether a connection to a server was made at all.
bool call_server(const std::string& request_json, const SharedBuffer* shm, Reply* reply, std::string* err,
                 const AbortFn& aborted, bool* connected = nullptr);

// 64-bit hash of `bytes` bytes for change detection (window cache lookups); not cryptographic.
uint64_t content_hash(const void* data, size_t bytes, uint64_t seed);

// Lower-case 16-digit hex of `v`.
std::string hex64(uint64_t v);

// JSON string literal for `s` (quotes included).
std::string json_quote(const std::string& s);

}  // namespace combcn
