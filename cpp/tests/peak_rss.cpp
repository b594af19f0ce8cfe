// Test program: run a command and report its own peak resident memory.
//   mp_peak_rss PROGRAM [ARGS...]   the program's output as it is, then on stdout a last line
//                                   "peak_rss_kb N"; exit status: the program's (128 + the signal that killed it)
// Why: ru_maxrss of a process started straight from a large one (pytest with torch imported, 300 MB) is the
// parent's memory, copied at fork and kept across exec as the high-water mark; forked from this small process,
// it is the program's own.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: mp_peak_rss PROGRAM [ARGS...]\n");
    return 2;
  }
  std::fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("mp_peak_rss: fork");
    return 2;
  }
  if (pid == 0) {
    execv(argv[1], argv + 1);
    std::perror("mp_peak_rss: execv");
    _exit(127);
  }
  int status = 0;
  struct rusage usage {};
  if (wait4(pid, &status, 0, &usage) < 0) {
    std::perror("mp_peak_rss: wait4");
    return 2;
  }
  std::printf("peak_rss_kb %ld\n", usage.ru_maxrss);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
