//go:build !unix

package batch

func allocEntries(n int) (es []idEntry, mem []byte) { return make([]idEntry, n), nil }

func freeEntries(mem []byte) {}
