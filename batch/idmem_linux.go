//go:build linux

package batch

import "syscall"

// madvHugepage is Linux's MADV_HUGEPAGE, which package syscall lacks.
const madvHugepage = 14

// adviseHuge asks for transparent huge pages on a table's mapping. An
// insert lands on a random slot, so with 4 KiB pages nearly every one
// misses the TLB as well as the cache, and under virtualization a TLB miss
// is a two-level page walk: 2 MiB pages make the whole table a few TLB
// entries. It is advice: where THP is off, nothing changes.
func adviseHuge(b []byte) { _ = syscall.Madvise(b, madvHugepage) }
