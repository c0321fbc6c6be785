// Distributed actors that the tests (the owner) and the test worker (the template) both know, in
// one module, so that their mangled names and distributed targets are the same in both programs.
import ForkActors
import ForkKitTestSupport
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// An actor with every kind of distributed function the tests call.
public distributed actor Hasher: WorkerActor {
    public typealias ActorSystem = WorkerActorSystem

    private var calls = 0
    private var napping = false
    private var cancelled = false

    public init(actorSystem: WorkerActorSystem) {
        self.actorSystem = actorSystem
    }

    /// FNV-1a over the bytes, `rounds` times.
    public distributed func digest(_ data: [UInt8], rounds: Int) -> [UInt8] {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for _ in 0..<rounds {
            for byte in data {
                hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3
            }
        }
        return withUnsafeBytes(of: hash.bigEndian) { Array($0) }
    }

    /// The process the actor lives in.
    public distributed func pid() -> Int32 { getpid() }

    /// Three arguments.
    public distributed func add(_ a: Int, _ b: Int, _ c: Int) -> Int { a + b + c }

    /// None.
    public distributed func greeting() -> String { "hello from \(getpid())" }

    /// State kept between calls: how many calls this actor has counted.
    public distributed func count() -> Int {
        calls += 1
        return calls
    }

    /// A generic function.
    public distributed func echo<Value: Codable & Sendable>(_ value: Value) -> Value { value }

    /// Throws an error type that the tests register (it crosses as itself).
    public distributed func shape(sides: Int) throws -> Int {
        guard sides >= 3 else { throw BadShape(sides: sides) }
        return sides
    }

    /// Throws an error that is not Codable.
    public distributed func refuse() throws {
        throw TestTimeout(description: "refused on purpose")
    }

    /// Sleeps, noting whether it was cancelled.
    public distributed func nap(milliseconds: Int) async throws -> Bool {
        napping = true
        do {
            try await Task.sleep(for: .milliseconds(milliseconds))
            return true
        } catch {
            cancelled = true
            throw error
        }
    }

    /// Whether a ``nap(milliseconds:)`` has begun.
    public distributed func hasBegunNap() -> Bool { napping }

    /// Takes another actor: its reference cannot travel, so the call fails in the owner.
    public distributed func befriend(_ other: Hasher) -> Bool { true }

    /// Whether a ``nap(milliseconds:)`` was cancelled.
    public distributed func wasCancelled() -> Bool { cancelled }

    /// Ends the worker process with exit code 3.
    public distributed func exitWorker() -> Int {
        exit(3)
    }

    /// How many actors the worker hosts now.
    public distributed func actorsInWorker() -> Int { actorSystem.hostedActorCount }
}
