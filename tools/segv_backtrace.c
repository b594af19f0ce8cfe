/* LD_PRELOAD helper for crash reports on the GPU machine: on SIGSEGV/SIGBUS/SIGABRT print the native stack
 * (glibc backtrace: library + exported symbol + offset) to stderr, then die of the same signal.
 *   gcc -shared -fPIC -O1 -o /tmp/segv_backtrace.so tools/segv_backtrace.c
 *   LD_PRELOAD=/tmp/segv_backtrace.so python3 ...
 * Python's faulthandler, when enabled, prints the Python frames first and then re-raises into this handler. */
#include <execinfo.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

static void on_fatal(int sig) {
  static const char head[] = "\nnative stack (segv_backtrace):\n";
  void* frames[64];
  int n = backtrace(frames, 64);
  write(2, head, sizeof head - 1);
  backtrace_symbols_fd(frames, n, 2);
  signal(sig, SIG_DFL);
  raise(sig);
}

__attribute__((constructor)) static void install(void) {
  void* warm[1];
  backtrace(warm, 1); /* loads libgcc_s now: backtrace() may allocate on its first call, not safe in a handler */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_fatal;
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);
  sigaction(SIGABRT, &sa, NULL);
}
