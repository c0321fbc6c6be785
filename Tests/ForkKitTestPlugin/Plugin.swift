import ForkKit
