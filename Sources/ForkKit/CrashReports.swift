import CForkSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Where the templates this process starts, and their children, write the Swift runtime's crash
/// reports, so that a crashing worker's 60-line backtrace lands in a file instead of on the owner's
/// terminal, and its gist can be attached to the error that reports the death.
///
/// The templates get `SWIFT_BACKTRACE=enable=yes,interactive=no,color=no,output-to=DIR` in their
/// environment, unless this process's environment sets `SWIFT_BACKTRACE` itself (then that setting
/// holds, for example `enable=no` or `output-to=stderr` to see whole backtraces on the terminal).
/// `DIR` is a private temporary directory, removed with what is left in it when this process exits.
package enum CrashReports {
    private static let directory = Mutex<String??>(nil)

    /// The `SWIFT_BACKTRACE` entry for a template's environment, or nil to leave the environment as it is.
    static var environmentEntry: String? {
        guard getenv("SWIFT_BACKTRACE") == nil, let path = reportDirectory else { return nil }
        return "SWIFT_BACKTRACE=enable=yes,interactive=no,color=no,output-to=\(path)"
    }

    /// The directory, made on first use; nil if it cannot be made (the runtime's default then holds).
    private static var reportDirectory: String? {
        directory.withLock { directory in
            if let made = directory { return made }
            removeDirectoriesOfEndedProcesses()
            var template = Array("/tmp/forkkit-crashes-\(getpid())-XXXXXX".utf8CString)
            let made = template.withUnsafeMutableBufferPointer { buffer in
                mkdtemp(buffer.baseAddress!).map { String(cString: $0) }
            }
            if let made { made.withCString { forkkit_remove_directory_at_exit($0) } }
            directory = .some(made)
            return made
        }
    }

    /// Removes what owners that were killed (so that their exit handler never ran) left in /tmp.
    private static func removeDirectoriesOfEndedProcesses() {
        guard let tmp = opendir("/tmp") else { return }
        defer { closedir(tmp) }
        while let entry = readdir(tmp) {
            let name = fileName(of: entry)
            let parts = name.split(separator: "-")
            guard name.hasPrefix("forkkit-crashes-"), parts.count == 4, let owner = Int32(parts[2]),
                kill(owner, 0) != 0, errno == ESRCH else { continue }
            forkkit_remove_directory_now("/tmp/\(name)")
        }
    }

    /// The name in a directory entry that `readdir` returned.
    private static func fileName(of entry: UnsafeMutablePointer<dirent>) -> String {
        withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    /// The gist of the crash report that process `pid` left (what went wrong, and the first frame
    /// with a source location: the user's code rather than the runtime's assertion machinery) and
    /// where the whole report is, or nil when it left none. Reports stay until this process exits.
    package static func summary(ofCrashOf pid: Int32) -> String? {
        guard let path = directory.withLock({ $0 ?? nil }), let stream = opendir(path) else { return nil }
        var report: String?
        while let entry = readdir(stream) {
            let name = fileName(of: entry)
            // The runtime names a report PROGRAM-PID-TIME.log.
            guard name.hasSuffix(".log"), name.contains("-\(pid)-") else { continue }
            report = "\(path)/\(name)"
            break
        }
        closedir(stream)
        guard let report, let file = fopen(report, "re") else { return nil }
        defer { fclose(file) }
        var lines: [String] = []
        var buffer = [CChar](repeating: 0, count: 1024)
        while lines.count < 60, fgets(&buffer, Int32(buffer.count), file) != nil {
            let line = buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
            lines.append(String(decoding: line, as: UTF8.self).trimmingWhitespace())
        }
        // "*** Program crashed: Bad pointer dereference at 0x8 ***", then the crashed thread's frames:
        // "2 [ra] 0x55c9bca7003a parse(_:) + 169 in tool at /src/Sources/tool/main.swift:1:40".
        guard let headline = lines.first(where: { $0.hasPrefix("***") })?.trimmingCharacters(in: "* ") else { return nil }
        let frames = lines.drop(while: { !$0.hasSuffix("crashed:") }).dropFirst().drop(while: \.isEmpty).prefix { !$0.isEmpty }
        let whole = "whole report: \(report), kept until this program exits"
        guard let frame = frames.first(where: { $0.contains(" at /") }) ?? frames.first else { return "\(headline); \(whole)" }
        // What follows the address: the function, its offset, the binary and the source location.
        let described = frame.split(separator: " ").drop { !$0.hasPrefix("0x") }.dropFirst().joined(separator: " ")
        let symbol = described.firstRange(of: " + ").map { String(described[..<$0.lowerBound]) } ?? described
        guard let at = described.ranges(of: " at ").last else { return "\(headline), in \(symbol); \(whole)" }
        let source = described[at.upperBound...].split(separator: "/").last.map(String.init) ?? ""
        return "\(headline), in \(symbol) at \(source); \(whole)"
    }
}

extension String {
    fileprivate func trimmingWhitespace() -> String {
        trimmingCharacters(in: " \t\n")
    }

    fileprivate func trimmingCharacters(in set: String) -> String {
        let characters = Set(set)
        let start = firstIndex { !characters.contains($0) } ?? endIndex
        let end = lastIndex { !characters.contains($0) }.map(index(after:)) ?? start
        return start < end ? String(self[start..<end]) : ""
    }
}
