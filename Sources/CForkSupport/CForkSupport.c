// On other systems this file compiles to nothing: CMsgPack/shim.h stops the build with one sentence.
#ifdef __linux__
#define _GNU_SOURCE
#include "CForkSupport.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define FORKKIT_MAX_DESCRIPTORS 253 /* SCM_MAX_FD on Linux */

ssize_t forkkit_send_with_descriptors(int socket, const void *bytes, size_t length,
                                      const int *descriptors, int count, int flags) {
    struct iovec iov = { .iov_base = (void *)bytes, .iov_len = length };
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (count > FORKKIT_MAX_DESCRIPTORS) { errno = EINVAL; return -1; }
    char control[CMSG_SPACE(sizeof(int) * FORKKIT_MAX_DESCRIPTORS)];
    if (count > 0) {
        memset(control, 0, sizeof(control));
        message.msg_control = control;
        message.msg_controllen = CMSG_SPACE(sizeof(int) * count);
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int) * count);
        memcpy(CMSG_DATA(header), descriptors, sizeof(int) * count);
    }
    ssize_t sent;
    do { sent = sendmsg(socket, &message, MSG_NOSIGNAL | flags); } while (sent < 0 && errno == EINTR);
    return sent;
}

void forkkit_name_thread(const char *name) {
    prctl(PR_SET_NAME, name, 0, 0, 0);
}

ssize_t forkkit_receive_with_descriptors(int socket, void *bytes, size_t length,
                                         int *descriptors, int capacity, int *count, int *truncated, int flags) {
    struct iovec iov = { .iov_base = bytes, .iov_len = length };
    char control[CMSG_SPACE(sizeof(int) * FORKKIT_MAX_DESCRIPTORS)];
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = control, .msg_controllen = sizeof(control) };
    *count = 0;
    *truncated = 0;
    ssize_t received;
    do { received = recvmsg(socket, &message, MSG_CMSG_CLOEXEC | flags); } while (received < 0 && errno == EINTR);
    // A pipe (a remote template's standard input) carries bytes only.
    if (received < 0 && errno == ENOTSOCK) {
        do { received = read(socket, bytes, length); } while (received < 0 && errno == EINTR);
    }
    if (received < 0) return received;
    if (message.msg_flags & MSG_CTRUNC) *truncated = 1;
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) continue;
        int arrived = (int)((header->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *incoming = (int *)CMSG_DATA(header);
        for (int index = 0; index < arrived; index++) {
            if (*count < capacity) descriptors[(*count)++] = incoming[index];
            else { close(incoming[index]); *truncated = 1; }
        }
    }
    return received;
}

/// posix_spawn (or posix_spawnp with `search`) with `connection` duplicated onto each descriptor in
/// `targets` and `error_output` (unless -1) onto descriptor 2 (descriptors 0-2 kept otherwise),
/// every descriptor above the highest target closed, and the signal mask and dispositions reset.
static int forkkit_spawn(const char *path, char *const argv[], char *const envp[], int connection,
                         const int *targets, int target_count, int error_output, int search, pid_t *pid) {
    // dup2(n, n) would keep close-on-exec set, so move the descriptor out of the way first.
    int source = connection;
    if (connection <= 3) {
        source = fcntl(connection, F_DUPFD_CLOEXEC, 10);
        if (source < 0) return errno;
    }
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attributes);
    int highest = 2;
    for (int index = 0; index < target_count; index++) {
        posix_spawn_file_actions_adddup2(&actions, source, targets[index]);
        if (targets[index] > highest) highest = targets[index];
    }
    if (error_output >= 0) posix_spawn_file_actions_adddup2(&actions, error_output, 2);
    posix_spawn_file_actions_addclosefrom_np(&actions, highest + 1);

    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attributes, &none);
    posix_spawnattr_setsigdefault(&attributes, &all);
    posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    int result = search ? posix_spawnp(pid, path, &actions, &attributes, argv, envp)
                        : posix_spawn(pid, path, &actions, &attributes, argv, envp);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    if (source != connection) close(source);
    return result;
}

int forkkit_spawn_template(const char *path, char *const argv[], char *const envp[],
                           int control, pid_t *pid) {
    const int targets[] = { 3 };
    return forkkit_spawn(path, argv, envp, control, targets, 1, -1, 0, pid);
}

int forkkit_pipe_cloexec(int ends[2]) {
    return pipe2(ends, O_CLOEXEC);
}

void forkkit_redirect_output(int output, int error) {
    fflush(NULL);
    dup2(output, 1);
    dup2(error, 2);
    if (output > 2) close(output);
    if (error > 2) close(error);
    forkkit_line_buffer_standard_output();
}

void forkkit_line_buffer_standard_output(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
}

int forkkit_spawn_command(char *const argv[], char *const envp[], int connection, int error_output, pid_t *pid) {
    const int targets[] = { 0, 1 };
    return forkkit_spawn(argv[0], argv, envp, connection, targets, 2, error_output, 1, pid);
}

static int forkkit_start_kind = FORKKIT_STARTED_NORMALLY;
static int forkkit_bootstrapped = 0;

/// Runs before `main` (glibc passes constructors argc, argv and envp): reads and removes the mark of
/// a template start, so that no argument parser sees it, and ties the process to its owner until
/// bootstrap, so that a program that forgot to call it cannot outlive the owner that started it.
__attribute__((constructor))
static void forkkit_read_start_mark(int argc, char **argv, char **envp) {
    (void)envp;
    const char *mark = getenv(FORKKIT_TEMPLATE_VARIABLE);
    if (mark) {
        long owner = strtol(mark, NULL, 10);
        unsetenv(FORKKIT_TEMPLATE_VARIABLE);
        prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
        // The owner died before the signal was set up: nobody is left to serve. (A parent other than
        // the owner, such as a wrapper that forks, is fine while the owner lives.)
        if (owner > 0 && getppid() != (pid_t)owner && kill((pid_t)owner, 0) != 0 && errno == ESRCH) _exit(70);
        forkkit_start_kind = FORKKIT_STARTED_AS_TEMPLATE;
    }
#ifdef __GLIBC__
    // Only glibc passes argc and argv to constructors.
    else if (argc > 1 && argv && argv[1] && strcmp(argv[1], "--forkkit-remote") == 0) {
        forkkit_start_kind = FORKKIT_STARTED_AS_REMOTE_TEMPLATE;
    }
#else
    (void)argc;
    (void)argv;
#endif
}

int forkkit_was_bootstrapped(void) {
    return forkkit_bootstrapped;
}

int forkkit_started_as(void) {
    return forkkit_start_kind;
}

void forkkit_mark_bootstrapped(void) {
    forkkit_bootstrapped = 1;
    if (forkkit_start_kind == FORKKIT_STARTED_AS_TEMPLATE) prctl(PR_SET_PDEATHSIG, 0, 0, 0, 0);
    forkkit_start_kind = FORKKIT_STARTED_NORMALLY;
}

static char *forkkit_directory_to_remove = NULL;

void forkkit_remove_directory_now(const char *path) {
    DIR *directory = opendir(path);
    if (directory) {
        struct dirent *entry;
        while ((entry = readdir(directory))) {
            if (entry->d_name[0] == '.') continue;
            char file[4096];
            snprintf(file, sizeof(file), "%s/%s", path, entry->d_name);
            unlink(file);
        }
        closedir(directory);
    }
    rmdir(path);
}

static void forkkit_remove_directory(void) {
    if (forkkit_directory_to_remove) forkkit_remove_directory_now(forkkit_directory_to_remove);
}

void forkkit_remove_directory_at_exit(const char *path) {
    if (forkkit_directory_to_remove) return;
    forkkit_directory_to_remove = strdup(path);
    atexit(forkkit_remove_directory);
}

int forkkit_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int forkkit_close_from(int lowest) {
    return (int)syscall(SYS_close_range, (unsigned)lowest, ~0U, 0);
}

int forkkit_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, signal, 0, 0, 0);
}

int forkkit_become_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

int forkkit_memfd_create(const char *name) {
    return memfd_create(name, MFD_CLOEXEC);
}

static volatile sig_atomic_t forkkit_child_changed = 0;
/// The signal mask while waiting: the usual one without SIGCHLD.
static sigset_t forkkit_waiting_mask;

static void forkkit_note_child(int signal) {
    (void)signal;
    forkkit_child_changed = 1;
}

void forkkit_watch_children(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, NULL);
    sigprocmask(SIG_SETMASK, NULL, &forkkit_waiting_mask);
    sigdelset(&forkkit_waiting_mask, SIGCHLD);
    struct sigaction action;
    memset(&action, 0, sizeof(action));
    action.sa_handler = forkkit_note_child;
    action.sa_flags = SA_NOCLDSTOP | SA_RESTART;
    sigaction(SIGCHLD, &action, NULL);
}

int forkkit_wait_readable_or_child(int descriptor) {
    struct pollfd watched = { .fd = descriptor, .events = POLLIN };
    int result = 0;
    if (!forkkit_child_changed) {
        int ready = ppoll(&watched, 1, NULL, &forkkit_waiting_mask);
        if (ready < 0 && errno != EINTR) return -1;
        if (ready > 0 && watched.revents) result |= 1;
    } else {
        // A child already changed state: look at the socket without blocking.
        if (poll(&watched, 1, 0) > 0 && watched.revents) result |= 1;
    }
    if (forkkit_child_changed) {
        forkkit_child_changed = 0;
        result |= 2;
    }
    return result;
}

int forkkit_epoll_create(void) {
    return epoll_create1(EPOLL_CLOEXEC);
}

int forkkit_epoll_add(int epoll, int descriptor) {
    struct epoll_event event = { .events = EPOLLIN | EPOLLRDHUP, .data.fd = descriptor };
    return epoll_ctl(epoll, EPOLL_CTL_ADD, descriptor, &event);
}

int forkkit_epoll_remove(int epoll, int descriptor) {
    return epoll_ctl(epoll, EPOLL_CTL_DEL, descriptor, NULL);
}

int forkkit_epoll_wait(int epoll, int *descriptors, int capacity, int timeout) {
    struct epoll_event events[64];
    if (capacity > 64) capacity = 64;
    int count;
    do { count = epoll_wait(epoll, events, capacity, timeout); } while (count < 0 && errno == EINTR);
    for (int index = 0; index < count; index++) descriptors[index] = events[index].data.fd;
    return count;
}

int forkkit_eventfd(void) {
    return eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

void forkkit_eventfd_signal(int descriptor) {
    uint64_t one = 1;
    ssize_t ignored = write(descriptor, &one, sizeof(one));
    (void)ignored;
}

void forkkit_eventfd_drain(int descriptor) {
    uint64_t value;
    ssize_t ignored = read(descriptor, &value, sizeof(value));
    (void)ignored;
}

void forkkit_reset_signals(void) {
    sigset_t none;
    sigemptyset(&none);
    signal(SIGCHLD, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    sigprocmask(SIG_SETMASK, &none, NULL);
}

int forkkit_thread_count(void) {
    FILE *file = fopen("/proc/self/stat", "re");
    if (!file) return -1;
    char buffer[1024];
    size_t length = fread(buffer, 1, sizeof(buffer) - 1, file);
    fclose(file);
    buffer[length] = 0;
    // The command name (field 2) may contain spaces; fields are counted after its closing ')'.
    char *cursor = strrchr(buffer, ')');
    if (!cursor) return -1;
    int field = 2, threads = -1;
    char *save = NULL;
    for (char *token = strtok_r(cursor + 1, " ", &save); token; token = strtok_r(NULL, " ", &save)) {
        if (++field == 20) { threads = atoi(token); break; }
    }
    return threads;
}

void forkkit_decode_wait_status(int status, int *code, int *signal) {
    *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    *signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

#endif /* __linux__ */
