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
        guard let compiler = executable("cc") ?? executable("gcc") ?? executable("clang") else {
            return .failure(PeerFailure(description: "no C compiler (cc, gcc or clang) is installed"))
        }
        let source = directory.appendingPathComponent("fork-floor.c")
        let binary = directory.appendingPathComponent("fork-floor")
        try? cSource.write(to: source, atomically: true, encoding: .utf8)
        guard run([compiler, "-O2", "-o", binary.path, source.path]) else {
            return .failure(PeerFailure(description: "\(compiler) could not build the C floor"))
        }
        return .success(Peer(metric: "c_socketpair_fork_exit_per_s", command: [binary.path]))
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
