// Workers are ForkKit entry points started from ForkKit templates: `import ForkRPC` brings ForkKit.
@_exported import ForkKit
// Its API speaks in swift-system's descriptors and MessagePack's values: a program that imports
// ForkRPC (or ForkPool) uses them without naming those modules.
@_exported import MessagePack
@_exported import SystemPackage
