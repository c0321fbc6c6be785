// Workers are ForkKit entry points started from ForkKit templates: `import ForkRPC` brings ForkKit.
@_exported import ForkKit
