#ifndef CFORKSUPPORT_H
#define CFORKSUPPORT_H

// Only what Swift cannot express: the CMSG_* macros for SCM_RIGHTS, calls that need _GNU_SOURCE
// (close_range, posix_spawn_file_actions_addclosefrom_np, memfd_create, signalfd), prctl's varargs,
// and the C ABI through which a dlopen'ed plugin registers its functions.

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// sendmsg() of `length` bytes with `count` descriptors attached as SCM_RIGHTS, with `flags` (such
/// as MSG_DONTWAIT) added to MSG_NOSIGNAL: never raises SIGPIPE. Returns the bytes sent or -1 with
/// errno set.
ssize_t forkkit_send_with_descriptors(int socket, const void *bytes, size_t length,
                                      const int *descriptors, int count, int flags);


/// recvmsg() into `bytes` with `flags` (such as MSG_DONTWAIT); descriptors that arrive are stored
/// (close-on-exec) in `descriptors`, up to `capacity`, their number in `*count`. Descriptors beyond
/// capacity are closed and `*truncated` set.
ssize_t forkkit_receive_with_descriptors(int socket, void *bytes, size_t length,
                                         int *descriptors, int capacity, int *count, int *truncated, int flags);

/// Names the calling thread (prctl PR_SET_NAME; at most 15 bytes are kept), as top and perf show it.
void forkkit_name_thread(const char *name);

/// posix_spawn() of `path` with `control` as descriptor 3 and every descriptor above 3 closed,
/// signal mask and dispositions reset. Returns 0 or an errno value.
int forkkit_spawn_template(const char *path, char *const argv[], char *const envp[],
                           int control, pid_t *pid);

/// posix_spawnp() of `argv[0]` (searched on PATH) with `connection` as its standard input and
/// standard output, `error_output` as its standard error (-1: inherited), every other descriptor
/// closed, signal mask and dispositions reset. Returns 0 or an errno value.
int forkkit_spawn_command(char *const argv[], char *const envp[], int connection, int error_output, pid_t *pid);

/// Makes `output` and `error` this process's descriptors 1 and 2 (closing the originals), with C's
/// (and so Swift's `print`) standard output line-buffered, as on a terminal. For a child whose
/// output its owner captures.
void forkkit_redirect_output(int output, int error);

/// pipe2(O_CLOEXEC): both ends close-on-exec from the start, so that no process spawned meanwhile by
/// another thread inherits them. Returns 0 or -1 with errno set.
int forkkit_pipe_cloexec(int ends[2]);

/// Makes C's standard output (and so Swift's `print`) line-buffered, as on a terminal.
void forkkit_line_buffer_standard_output(void);

/// How this process was started, as read before `main` ran (see forkkit_started_as).
enum {
    /// An ordinary start.
    FORKKIT_STARTED_NORMALLY = 0,
    /// By ForkTemplate.spawn: its control socket is descriptor 3; ForkTemplate.bootstrap must serve.
    FORKKIT_STARTED_AS_TEMPLATE = 1,
    /// By a RemoteTemplate's command (`program --forkkit-remote`): it serves on standard input and output.
    FORKKIT_STARTED_AS_REMOTE_TEMPLATE = 2,
};

/// The environment variable that marks a process started as a template; its value is the owner's
/// pid. It is read and removed before `main` runs, so neither the program's argument parsing nor
/// the programs it starts ever see it.
#define FORKKIT_TEMPLATE_VARIABLE "FORKKIT_TEMPLATE"

/// How this process was started, until forkkit_mark_bootstrapped() is called; afterwards
/// FORKKIT_STARTED_NORMALLY. A process started as a template is killed (SIGKILL) when its owner
/// dies, from before `main` until it is bootstrapped.
int forkkit_started_as(void);

/// Whether ForkTemplate.bootstrap has run in this process (its copies would serve).
int forkkit_was_bootstrapped(void);

/// Records that ForkTemplate.bootstrap has run, and lifts the parent-death signal set at start-up
/// (it follows the owner's *thread*, so a long-lived template must not keep it; once serving, the
/// template exits when its socket closes).
void forkkit_mark_bootstrapped(void);

/// Removes directory `path` and the files in it now.
void forkkit_remove_directory_now(const char *path);

/// Removes directory `path` and the files in it when this process exits normally (atexit).
void forkkit_remove_directory_at_exit(const char *path);

/// pidfd_open(pid, 0): a descriptor that becomes readable when the process exits, or -1.
int forkkit_pidfd_open(pid_t pid);

/// Closes every descriptor from `lowest` up.
int forkkit_close_from(int lowest);

/// prctl(PR_SET_PDEATHSIG, signal).
int forkkit_set_parent_death_signal(int signal);

/// prctl(PR_SET_CHILD_SUBREAPER, 1): orphaned descendants are re-parented to this process.
int forkkit_become_subreaper(void);

/// memfd_create(name, MFD_CLOEXEC).
int forkkit_memfd_create(const char *name);

/// Blocks SIGCHLD and installs a handler that notes its arrival, for forkkit_wait_readable_or_child.
/// (A signal handler and ppoll rather than a signalfd: a template has no descriptor beyond its socket.)
void forkkit_watch_children(void);

/// Waits until `descriptor` is readable or hung up (returns bit 1) and/or a child changed state
/// (bit 2); SIGCHLD is unblocked only while waiting. Returns -1 on error.
int forkkit_wait_readable_or_child(int descriptor);

/// epoll_create1(EPOLL_CLOEXEC).
int forkkit_epoll_create(void);

/// Adds `descriptor` to `epoll` for readability and hang-up (level-triggered).
int forkkit_epoll_add(int epoll, int descriptor);

/// Removes `descriptor` from `epoll`.
int forkkit_epoll_remove(int epoll, int descriptor);

/// epoll_wait() for up to `timeout` ms (-1: no limit); stores up to `capacity` ready descriptors.
/// Returns their number or -1.
int forkkit_epoll_wait(int epoll, int *descriptors, int capacity, int timeout);

/// eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK).
int forkkit_eventfd(void);

/// Adds one to an eventfd.
void forkkit_eventfd_signal(int descriptor);

/// Resets an eventfd to zero.
void forkkit_eventfd_drain(int descriptor);

/// Unblocks every signal and resets SIGCHLD and SIGPIPE to their defaults (for a child about to run code).
void forkkit_reset_signals(void);

/// The number of threads of this process, from /proc/self/stat; -1 if unreadable.
int forkkit_thread_count(void);

/// Decoded wait status: `*code` is the exit code (or -1), `*signal` the terminating signal (or 0).
void forkkit_decode_wait_status(int status, int *code, int *signal);

// MARK: - Plugin ABI

/// What a registered entry point receives. Initializers get `socket == output == -1` and no descriptors.
/// `socket` is where the owner's messages arrive.
typedef struct forkkit_call {
    int socket;
    const uint8_t *const *arguments;
    const size_t *argument_lengths;
    size_t argument_count;
    const int *descriptors;
    size_t descriptor_count;
    /// Where the function writes: `socket` itself, except in a remote process (its standard output).
    int output;
} forkkit_call;

/// Runs a plugin's entry point. Returns 0 on success; otherwise writes a message (NUL-terminated,
/// at most `error_capacity` bytes) to `error` and returns non-zero.
typedef int (*forkkit_invoke)(void *context, const forkkit_call *call, char *error, size_t error_capacity);

enum { FORKKIT_KIND_FUNCTION = 0, FORKKIT_KIND_INITIALIZER = 1 };

/// Handed to a plugin's `forkkit_plugin_register(forkkit_registrar *)`.
typedef struct forkkit_registrar {
    void *host;
    void (*add)(void *host, const char *name, int kind, forkkit_invoke invoke, void *context);
} forkkit_registrar;

/// The symbol a plugin exports.
typedef void (*forkkit_plugin_entry)(forkkit_registrar *registrar);

#define FORKKIT_PLUGIN_ENTRY_SYMBOL "forkkit_plugin_register"

#endif
