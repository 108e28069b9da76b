package schemas

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestPlainWordAgreesWithTable checks the eight-byte test of scanString
// against the byte table: every byte value at every position of words
// otherwise plain or random.
func TestPlainWordAgreesWithTable(t *testing.T) {
	byTable := func(x uint64) bool {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], x)
		for _, c := range b {
			if !plainASCII[c] {
				return false
			}
		}
		return true
	}
	rng := rand.New(rand.NewPCG(1, 2))
	bases := []uint64{0x6161616161616161, 0x2020202020202020, 0x7f7f7f7f7f7f7f7f}
	for range 2000 {
		bases = append(bases, rng.Uint64(), rng.Uint64()&0x7f7f7f7f7f7f7f7f|0x2020202020202020)
	}
	for _, base := range bases {
		for pos := range 8 {
			for c := range 256 {
				x := base&^(0xff<<(8*pos)) | uint64(c)<<(8*pos)
				if got, want := plainWord(x), byTable(x); got != want {
					t.Fatalf("plainWord(%#016x) = %v, the table says %v", x, got, want)
				}
			}
		}
	}
}
