//go:build unix && !linux

package batch

func adviseHuge([]byte) {}
