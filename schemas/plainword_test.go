package schemas

import (
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"testing"
	"time"
)

// TestSpecialBytesAgreesWithTable checks the eight-byte test of
// scanString against the byte table: every byte value at every position of
// words otherwise plain or random. The mask must be 0 exactly when every
// byte is plain, and its lowest bit must mark the first byte that is not.
func TestSpecialBytesAgreesWithTable(t *testing.T) {
	firstSpecial := func(x uint64) int {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], x)
		for i, c := range b {
			if !plainASCII[c] {
				return i
			}
		}
		return 8
	}
	got := func(x uint64) int {
		if m := specialBytes(x); m != 0 {
			return bits.TrailingZeros64(m) >> 3
		}
		return 8
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
				if got, want := got(x), firstSpecial(x); got != want {
					t.Fatalf("specialBytes(%#016x) finds byte %d first, the table says %d", x, got, want)
				}
			}
		}
	}
}

// TestParseRFC3339SecondsAgreesWithTimeParse checks the fast timestamp
// path against time.Parse on valid and invalid dates of its shape and on
// texts of other shapes (which it must leave to time.Parse).
func TestParseRFC3339SecondsAgreesWithTimeParse(t *testing.T) {
	texts := []string{
		"2026-11-25T10:00:00Z", "1970-01-01T00:00:00Z", "2099-12-31T23:59:59Z", "0000-01-01T00:00:00Z",
		"2024-02-29T12:00:00Z", "2023-02-29T12:00:00Z", "2100-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
		"2026-04-31T00:00:00Z", "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-01-00T00:00:00Z",
		"2026-01-01T24:00:00Z", "2026-01-01T23:60:00Z", "2026-01-01T23:59:60Z", "2026-01-01t00:00:00Z",
		"2026-01-01T00:00:00z", "2026-01-01T00:00:00.123Z", "2026-01-01T00:00:00+02:00", "2026-1-01T00:00:00Z",
		"2026-01-01T00:00:0aZ", "+026-01-01T00:00:00Z", "2026-01-01 00:00:00Z", "yesterday",
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 20000 {
		b := []byte("2026-11-25T10:00:00Z")
		for _, i := range []int{0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18} {
			b[i] = byte('0' + rng.IntN(10))
		}
		texts = append(texts, string(b))
	}
	for _, s := range texts {
		got, ok := parseRFC3339Seconds(s)
		want, err := time.Parse(time.RFC3339Nano, s)
		if ok {
			if err != nil || !got.Equal(want) || got.Location() != time.UTC {
				t.Fatalf("%q: fast path says %v, time.Parse says %v, %v", s, got, want, err)
			}
		} else if err == nil && len(s) == 20 && s[10] == 'T' && s[19] == 'Z' {
			t.Fatalf("%q: fast path refuses what time.Parse takes (%v)", s, want)
		}
	}
}
