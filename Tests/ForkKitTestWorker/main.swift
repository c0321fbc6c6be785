import ForkKit
ForkTemplate.bootstrap([])
