//go:build unix

package batch

import (
	"syscall"
	"unsafe"
)

// allocEntries returns n zeroed entries. Large tables live in anonymous
// memory mappings outside the Go heap: they hold no pointers, so the GC
// has nothing to scan there, and keeping them out of the heap keeps the
// GC's headroom (GOGC) from doubling them in RSS. mem is what freeEntries
// needs (nil for heap memory).
func allocEntries(n int) (es []idEntry, mem []byte) {
	size := n * int(unsafe.Sizeof(idEntry{}))
	if size >= 1<<20 {
		b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
		if err == nil {
			adviseHuge(b)
			return unsafe.Slice((*idEntry)(unsafe.Pointer(unsafe.SliceData(b))), n), b
		}
	}
	return make([]idEntry, n), nil
}

func freeEntries(mem []byte) {
	if mem != nil {
		_ = syscall.Munmap(mem)
	}
}
