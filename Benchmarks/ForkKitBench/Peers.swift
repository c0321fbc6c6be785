import Foundation

/// The programs ForkKit is compared with, each run as its own process and reporting a rate.
///
/// A peer that is not installed is reported as skipped with the reason, never as zero.
struct Peer {
    let metric: String
    private let command: [String]

    /// Runs the peer for `iterations` and returns what it printed: processes per second.
    func rate(iterations: Int) throws -> Double {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst()) + ["\(iterations)"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0, let rate = Double(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw PeerFailure(description: "\(command.joined(separator: " ")) failed (status \(process.terminationStatus)): \(text)")
        }
        return rate
    }

    /// Runs the peer with `arguments`; it prints lines `metric value`.
    func measure(arguments: [String]) throws -> [(String, Double)] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst()) + arguments
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let pairs = text.split(separator: "\n").compactMap { line -> (String, Double)? in
            let fields = line.split(separator: " ")
            guard fields.count == 2, let value = Double(fields[1]) else { return nil }
            return (String(fields[0]), value)
        }
        guard process.terminationStatus == 0, !pairs.isEmpty else {
            throw PeerFailure(description: "\(command.joined(separator: " ")) failed (status \(process.terminationStatus)): \(text)")
        }
        return pairs
    }

    /// A C socketpair ping-pong between two processes, 16 bytes each way: the floor for a round trip.
    static func cPingPong(in directory: URL) -> Result<Peer, PeerFailure> {
        compile(pingPongSource, named: "pingpong", metric: "c_pingpong_rtt_us", in: directory)
    }

    /// Python's multiprocessing Pool(2): `apply` one at a time, and `map` with chunksize 1.
    static func pythonMultiprocessing(in directory: URL) -> Result<Peer, PeerFailure> {
        python(script: poolScript, named: "pool.py", metric: "python_pool_apply_rtt_us", in: directory)
    }

    /// A Python peer: `script` written into `directory` as `name`, run by python3.
    private static func python(script: String, named name: String, metric: String, in directory: URL) -> Result<Peer, PeerFailure> {
        guard let python = executable("python3") else { return .failure(PeerFailure(description: "python3 is not installed")) }
        let path = directory.appendingPathComponent(name)
        try? script.write(to: path, atomically: true, encoding: .utf8)
        return .success(Peer(metric: metric, command: [python, path.path]))
    }

    private static func compile(_ source: String, named name: String, metric: String, in directory: URL) -> Result<Peer, PeerFailure> {
        guard let compiler = executable("cc") ?? executable("gcc") ?? executable("clang") else {
            return .failure(PeerFailure(description: "no C compiler (cc, gcc or clang) is installed"))
        }
        let file = directory.appendingPathComponent("\(name).c")
        let binary = directory.appendingPathComponent(name)
        try? source.write(to: file, atomically: true, encoding: .utf8)
        guard run([compiler, "-O2", "-o", binary.path, file.path]) else {
            return .failure(PeerFailure(description: "\(compiler) could not build \(name).c"))
        }
        return .success(Peer(metric: metric, command: [binary.path]))
    }

    private static let pingPongSource = """
        #include <stdio.h>
        #include <stdlib.h>
        #include <sys/socket.h>
        #include <sys/wait.h>
        #include <time.h>
        #include <unistd.h>
        static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
        static int compare(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }
        /* Reads a whole message; spinning polls without sleeping, otherwise the read blocks. */
        static int receive(int fd, char *message, int size, int spin) {
            int got = 0;
            while (got < size) {
                ssize_t n = recv(fd, message + got, size - got, spin ? MSG_DONTWAIT : 0);
                if (n > 0) got += n; else if (n == 0 || !spin) return -1;
            }
            return got;
        }
        static double measure(int n, int spin) {
            int pair[2];
            if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) exit(1);
            char message[16] = {0};
            pid_t pid = fork();
            if (pid == 0) {
                close(pair[0]);
                while (receive(pair[1], message, sizeof message, spin) == sizeof message) write(pair[1], message, sizeof message);
                _exit(0);
            }
            close(pair[1]);
            double *times = malloc(sizeof(double) * n);
            for (int i = 0; i < n; i++) {
                double start = now();
                write(pair[0], message, sizeof message);
                if (receive(pair[0], message, sizeof message, spin) != sizeof message) exit(1);
                times[i] = (now() - start) * 1e6;
            }
            close(pair[0]);
            waitpid(pid, NULL, 0);
            qsort(times, n, sizeof(double), compare);
            double middle = times[n / 2];
            free(times);
            return middle;
        }
        int main(int argc, char **argv) {
            int n = argc > 1 ? atoi(argv[1]) : 10000;
            printf("c_pingpong_rtt_us %.2f\\n", measure(n, 0));
            printf("c_pingpong_spin_rtt_us %.2f\\n", measure(n, 1));
            return 0;
        }
        """

    private static let poolScript = """
        import multiprocessing, signal, statistics, sys, time

        # Started from a Swift concurrency thread, this process inherits that thread's blocked
        # signals; Pool.terminate() stops its workers with SIGTERM, so unblock them first.
        signal.pthread_sigmask(signal.SIG_SETMASK, [])

        def square(x):
            return x * x

        if __name__ == "__main__":
            n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
            with multiprocessing.Pool(2) as pool:
                pool.apply(square, (1,))
                times = []
                for i in range(n):
                    start = time.perf_counter()
                    pool.apply(square, (i,))
                    times.append((time.perf_counter() - start) * 1e6)
                xs = list(range(n * 10))
                start = time.perf_counter()
                pool.map(square, xs, chunksize=1)
                elapsed = time.perf_counter() - start
            print("python_pool_apply_rtt_us %.2f" % statistics.median(times))
            print("python_pool_map_chunksize1_calls_per_s %.1f" % (len(xs) / elapsed))
        """

    /// Python's multiprocessing Pool(2).map of x*x with its default chunk size.
    static func pythonPoolMap(in directory: URL) -> Result<Peer, PeerFailure> {
        python(script: poolMapScript, named: "pool-map.py", metric: "python_pool_map_items_per_s", in: directory)
    }

    private static let poolMapScript = """
        import multiprocessing, signal, sys, time
        from dataclasses import dataclass

        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # see pool.py: inherited blocked signals

        def square(x):
            return x * x

        @dataclass
        class Reading:
            id: int
            value: float
            label: str

        def scale(reading):
            return Reading(reading.id, reading.value * 2, reading.label)

        if __name__ == "__main__":
            n = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
            with multiprocessing.Pool(2) as pool:
                pool.map(square, range(1000))
                xs = list(range(n))
                start = time.perf_counter()
                results = pool.map(square, xs)
                elapsed = time.perf_counter() - start
                assert results[-1] == (n - 1) * (n - 1)
                print("python_pool_map_items_per_s %.1f" % (n / elapsed))
                readings = [Reading(i, i * 0.5, "sensor%02d" % (i % 100)) for i in range(n)]
                pool.map(scale, readings[:1000])
                start = time.perf_counter()
                scaled = pool.map(scale, readings)
                elapsed = time.perf_counter() - start
                assert scaled[-1].value == (n - 1) * 1.0
                print("python_pool_map_dataclass_items_per_s %.1f" % (n / elapsed))
        """

    /// Python's `Pool(2).map` over the sweep's levels: CPU work per item (a busy wait on the
    /// monotonic clock, as the Swift side does) and payload per item (bytes, whose length comes back).
    static func pythonSweep(in directory: URL) -> Result<Peer, PeerFailure> {
        python(script: sweepScript, named: "sweep.py", metric: "python_sweep", in: directory)
    }

    private static let sweepScript = """
        import multiprocessing, signal, sys, time

        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # see pool.py: inherited blocked signals

        def spin(nanoseconds):
            end = time.monotonic_ns() + nanoseconds
            looks = 0
            while time.monotonic_ns() < end:
                looks += 1
            return looks

        if __name__ == "__main__":
            with multiprocessing.Pool(2) as pool:
                pool.map(spin, [0] * 1000)
                for argument in sys.argv[1:]:
                    kind, level, count = argument.split(":")
                    level, count = int(level), int(count)
                    if kind == "work":
                        items, function, name = [level] * count, spin, "work_%dns" % level
                    else:
                        # Distinct objects: pickle would send a repeated one once per chunk.
                        items, function, name = [bytes(level) for _ in range(count)], len, "payload_%db" % level
                    start = time.perf_counter()
                    pool.map(function, items)
                    elapsed = time.perf_counter() - start
                    print("%s_python_items_per_s %.1f" % (name, count / elapsed))
        """

    /// Python's `Pool(2)` with each start method: from creating the pool to its first result, and
    /// an idle worker's USS after one call.
    static func pythonStartup(in directory: URL) -> Result<Peer, PeerFailure> {
        python(script: startupScript, named: "startup.py", metric: "python_pool_first_result_ms", in: directory)
    }

    private static let startupScript = """
        import multiprocessing, signal, time

        signal.pthread_sigmask(signal.SIG_SETMASK, [])  # see pool.py: inherited blocked signals

        def square(x):
            return x * x

        def uss_kb(pid):
            total = 0
            with open("/proc/%d/smaps_rollup" % pid) as rollup:
                for line in rollup:
                    if line.startswith(("Private_Clean:", "Private_Dirty:")):
                        total += int(line.split()[1])
            return total

        def pss_kb(pid):
            with open("/proc/%d/smaps_rollup" % pid) as rollup:
                return sum(int(line.split()[1]) for line in rollup if line.startswith("Pss:"))

        TABLE_SIZE = 100 << 20
        TABLE = None

        def load_table():
            # What an initializer loading a table does: resident pages, not untouched zeros.
            global TABLE
            TABLE = b"\\x01" * TABLE_SIZE

        def read_table(started, finish):
            total = sum(TABLE[offset] for offset in range(0, len(TABLE), 4096))
            started.release()
            finish.acquire()
            return total

        def reader(started, finish, load):
            if load:
                load_table()
            read_table(started, finish)

        def table_pss_mb(method):
            # fork: the parent loads the table and its 4 workers inherit it; spawn: each loads its own.
            context = multiprocessing.get_context(method)
            if method == "fork":
                load_table()
            started, finish = context.Semaphore(0), context.Semaphore(0)
            workers = [context.Process(target=reader, args=(started, finish, method != "fork")) for _ in range(4)]
            for worker in workers:
                worker.start()
            for _ in workers:
                started.acquire()
            total = pss_kb(multiprocessing.current_process().pid) + sum(pss_kb(worker.pid) for worker in workers)
            for _ in workers:
                finish.release()
            for worker in workers:
                worker.join()
            return total / 1024

        if __name__ == "__main__":
            for method in ("fork", "spawn"):
                print("python_%s_table_100mb_4_workers_total_pss_mb %.1f" % (method, table_pss_mb(method)))
            TABLE = None  # module level: the pools below start without it
            for method in ("fork", "forkserver", "spawn"):
                context = multiprocessing.get_context(method)
                start = time.perf_counter()
                with context.Pool(2) as pool:
                    pool.apply(square, (3,))
                    elapsed = time.perf_counter() - start
                    time.sleep(0.1)
                    pids = [process.pid for process in pool._pool]
                    print("python_pool_%s_first_result_ms %.3f" % (method, elapsed * 1000))
                    print("python_pool_%s_idle_worker_uss_kb %.1f" % (method, uss_kb(pids[0])))
        """

    /// Perl's `AnyEvent::Fork->new->run("CORE::exit")`, waiting for each child's socket to close
    /// (Debian: libanyevent-fork-perl).
    static func perlAnyEventFork(in directory: URL) -> Result<Peer, PeerFailure> {
        guard let perl = executable("perl") else { return .failure(PeerFailure(description: "perl is not installed")) }
        guard run([perl, "-MAnyEvent::Fork", "-e", "1"]) else {
            return .failure(PeerFailure(description: "AnyEvent::Fork is not installed (apt-get install libanyevent-fork-perl)"))
        }
        let script = directory.appendingPathComponent("anyevent-fork.pl")
        try? perlScript.write(to: script, atomically: true, encoding: .utf8)
        return .success(Peer(metric: "perl_anyevent_fork_new_run_exit_per_s", command: [perl, script.path]))
    }

    /// A plain C loop: socketpair, fork, the child `_exit`s, the parent sees end of stream and reaps.
    static func cFloor(in directory: URL) -> Result<Peer, PeerFailure> {
        compile(cSource, named: "fork-floor", metric: "c_socketpair_fork_exit_per_s", in: directory)
    }

    private static func executable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    private static func run(_ command: [String]) -> Bool {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return false }
        process.waitUntilExit()
        return process.terminationStatus == 0
    }

    private static let perlScript = """
        use strict; use AnyEvent; use AnyEvent::Fork; use Time::HiRes 'time';
        my $n = shift || 1000;
        # One child first, so that the template is running before the clock starts.
        { my $cv = AE::cv; AnyEvent::Fork->new->run("CORE::exit", sub { $cv->send }); $cv->recv; }
        my $start = time;
        for (1 .. $n) {
            my $cv = AE::cv;
            AnyEvent::Fork->new->run("CORE::exit", sub {
                my $fh = shift; my $watcher;
                $watcher = AE::io $fh, 0, sub { if (!sysread $fh, my $byte, 1) { undef $watcher; $cv->send } };
            });
            $cv->recv;
        }
        printf "%.1f\\n", $n / (time - $start);
        """

    private static let cSource = """
        #include <stdio.h>
        #include <stdlib.h>
        #include <sys/socket.h>
        #include <sys/wait.h>
        #include <time.h>
        #include <unistd.h>
        static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
        int main(int argc, char **argv) {
            int n = argc > 1 ? atoi(argv[1]) : 1000;
            double start = now();
            for (int i = 0; i < n; i++) {
                int pair[2];
                if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) != 0) return 1;
                pid_t pid = fork();
                if (pid == 0) { close(pair[0]); _exit(0); }
                close(pair[1]);
                char byte;
                while (read(pair[0], &byte, 1) > 0) {}
                close(pair[0]);
                waitpid(pid, NULL, 0);
            }
            printf("%.1f\\n", n / (now() - start));
            return 0;
        }
        """
}

struct PeerFailure: Error, CustomStringConvertible {
    let description: String
}
