#ifndef FORKKIT_ALLOCATION_COUNTER_H
#define FORKKIT_ALLOCATION_COUNTER_H

// Counts the heap allocations of the benchmark process (malloc, calloc, realloc, the aligned
// variants) by defining them in the executable, in front of glibc's: the dynamic linker resolves
// every library's malloc to the executable's. Each forwards to glibc's own (__libc_malloc & co.).
// A relaxed atomic add per allocation; the benchmark reads the count around what it measures.

/// Allocations made by this process so far.
unsigned long forkkit_allocation_count(void);

#endif
