// A pool's API speaks in ForkRPC's functions and ForkKit's templates: `import ForkPool` brings both,
// as `import NIO` brings NIOCore.
@_exported import ForkKit
@_exported import ForkRPC
