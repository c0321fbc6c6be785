// A program that imports ForkActors has the layers below it too (the pool, the RPC layer, ForkKit).
@_exported import Distributed
@_exported import ForkPool
