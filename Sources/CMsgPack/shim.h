#ifndef CMSGPACK_SHIM_H
#define CMSGPACK_SHIM_H
// Every ForkKit module imports this header first, so a build on another platform stops here, with
// one sentence, instead of with dozens of errors about epoll, memfd, pidfd and prctl further up.
#if !defined(__linux__)
#error "ForkKit runs on Linux only: it is built on epoll, memfd, pidfd, signalfd and prctl, which other systems do not have; build and run it on Linux (on macOS, in a Linux container such as `docker run swift:6.1`)."
#else
#include <msgpack.h>
#endif
#endif
