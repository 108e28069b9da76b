package schemas

import (
	"math/rand/v2"
	"testing"
)

// TestMaxRegsEqualsByteMax: the eight-at-a-time register max equals the
// byte-by-byte max for every pair of register values (0 … 127, all
// 16,384 pairs in every byte position) and for random lengths, tails
// included.
func TestMaxRegsEqualsByteMax(t *testing.T) {
	check := func(a, b []uint8) {
		t.Helper()
		want := make([]uint8, len(a))
		for i := range a {
			want[i] = max(a[i], b[i])
		}
		got := append([]uint8(nil), a...)
		maxRegs(got, b)
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("register %d of %d: max(%d, %d) = %d, want %d", i, len(a), a[i], b[i], got[i], want[i])
			}
		}
	}
	var a, b []uint8
	for x := range 128 {
		for y := range 128 {
			a, b = append(a, uint8(x)), append(b, uint8(y))
		}
	}
	check(a, b)
	check(a[1:], b[1:]) // every pair in the other byte positions too
	check(a[3:], b[3:])
	rng := rand.New(rand.NewPCG(1, 2))
	for range 200 {
		n := rng.IntN(64)
		a, b := make([]uint8, n), make([]uint8, n)
		for i := range a {
			a[i], b[i] = uint8(rng.IntN(52)), uint8(rng.IntN(52))
		}
		check(a, b)
	}
}
