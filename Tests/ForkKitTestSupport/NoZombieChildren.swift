import Foundation
import Testing

/// A trait that checks, after each test it covers, that this process has no zombie children: every
/// process the test started (templates) has been reaped. Other suites may run meanwhile; their
/// children are alive, not zombies, so the check holds for them too.
public struct NoZombieChildren: TestTrait, SuiteTrait, TestScoping {
    /// Applies to every test of a suite.
    public var isRecursive: Bool { true }

    /// Runs the test, then checks.
    public func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        try await function()
        guard testCase != nil else { return }
        #expect(await eventually(within: 3) { Self.zombies().isEmpty }, "zombie children after the test: \(Self.zombies())")
    }

    /// This process's children that have exited and not been reaped.
    public static func zombies() -> [Int32] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        let children = tasks.flatMap { task -> [Int32] in
            let text = (try? String(contentsOfFile: "/proc/self/task/\(task)/children", encoding: .utf8)) ?? ""
            return text.split(separator: " ").compactMap { Int32($0) }
        }
        return children.filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")") else { return false }
            return stat[stat.index(close, offsetBy: 2)] == "Z"
        }
    }
}

extension Trait where Self == NoZombieChildren {
    /// After each test, no child of this process is left a zombie.
    public static var noZombieChildren: Self { NoZombieChildren() }
}
