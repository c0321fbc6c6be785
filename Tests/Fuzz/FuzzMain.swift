// libFuzzer entry point: `scripts/fuzz.sh` builds this with `swift build --sanitize=fuzzer`, and
// libFuzzer's own main calls it with generated inputs.
import FuzzHarness

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzHarness.exercise(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
}
