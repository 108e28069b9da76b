package chstate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand"
	"sort"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestDistinctSmallToLarge(t *testing.T) {
	var d Distinct
	for i := 0; i < 16; i++ {
		d.AddString(fmt.Sprint(i))
		d.AddString(fmt.Sprint(i)) // a repeat changes nothing
		require.True(t, d.Exact())
		require.Equal(t, i+1, d.Len())
	}
	b, _ := d.MarshalBinary()
	require.Len(t, b, 2+16*8)
	d.AddString("16")
	require.False(t, d.Exact())
	require.Equal(t, -1, d.Len())
	b, _ = d.MarshalBinary()
	require.Len(t, b, MaxDistinctStateBytes)
}

// TestDistinctMergeOrderFree: once large, merging is register-wise max, so
// the order of merges does not change the bytes (the speed layer and the
// batch layer may merge rows in any order).
func TestDistinctMergeOrderFree(t *testing.T) {
	parts := make([]Distinct, 4)
	for i := 0; i < 4000; i++ {
		parts[i%4].AddString(fmt.Sprint("k", i*7%3000))
	}
	var ab, ba Distinct
	for i := range parts {
		ab.Merge(&parts[i])
		ba.Merge(&parts[len(parts)-1-i])
	}
	x, _ := ab.MarshalBinary()
	y, _ := ba.MarshalBinary()
	require.Equal(t, x, y)
}

func TestDistinctDecodeRefuses(t *testing.T) {
	var d Distinct
	for i := 0; i < 100; i++ {
		d.AddString(fmt.Sprint(i))
	}
	good, _ := d.MarshalBinary()
	corrupt := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	cases := map[string][]byte{
		"empty":          {},
		"not a bool":     {2, 0},
		"small too big":  {0, 17},
		"small short":    {0, 2, 1, 2, 3},
		"small repeated": append(append([]byte{0, 2}, make([]byte, 8)...), make([]byte, 8)...),
		"small trailing": {0, 0, 0},
		"large short":    good[:len(good)-1],
		"large trailing": append(append([]byte(nil), good...), 0),
		"rank too high": corrupt(func(b []byte) []byte {
			b[1] |= 0x1f // register 0 = 31
			return b
		}),
		"denominator off": corrupt(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[1+rankBytes:], 7)
			return b
		}),
		"zeros off": corrupt(func(b []byte) []byte {
			b[len(b)-1]++
			return b
		}),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			err := new(Distinct).UnmarshalBinary(b)
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrBadState), "%v", err)
		})
	}
}

func TestQuantilesDecodeRefuses(t *testing.T) {
	cent := func(mean, count float32) []byte {
		b := binary.LittleEndian.AppendUint32(nil, math.Float32bits(mean))
		return binary.LittleEndian.AppendUint32(b, math.Float32bits(count))
	}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	cases := map[string][]byte{
		"empty input":  {},
		"too many":     binary.AppendUvarint(nil, MaxQuantilesCentroids+1),
		"huge count":   {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"short":        cat([]byte{2}, cent(1, 1)),
		"trailing":     cat([]byte{1}, cent(1, 1), []byte{0}),
		"zero count":   cat([]byte{1}, cent(1, 0)),
		"negative":     cat([]byte{1}, cent(1, -1)),
		"inf count":    cat([]byte{1}, cent(1, float32(math.Inf(1)))),
		"nan mean":     cat([]byte{1}, cent(float32(math.NaN()), 1)),
		"out of order": cat([]byte{2}, cent(2, 1), cent(1, 1)),
		"bad varint":   {0x80},
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			err := new(Quantiles).UnmarshalBinary(b)
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrBadState), "%v", err)
		})
	}
	var q Quantiles
	require.NoError(t, q.UnmarshalBinary([]byte{0}))
	require.Zero(t, q.Count())
}

// TestQuantilesBounded: however many values, the state stays within what
// 18.16 reads.
func TestQuantilesBounded(t *testing.T) {
	var q Quantiles
	for i := 0; i < 300000; i++ {
		q.Add(float64(i%7919) * 1.5)
	}
	b, _ := q.MarshalBinary()
	require.LessOrEqual(t, len(b), MaxQuantilesStateBytes)
	require.Equal(t, float64(300000), q.Count())
	var back Quantiles
	require.NoError(t, back.UnmarshalBinary(b))
	again, _ := back.MarshalBinary()
	require.Equal(t, b, again)
}

func FuzzDistinctUnmarshal(f *testing.F) {
	var d Distinct
	f.Add([]byte{0, 0})
	for i := 0; i < 20; i++ {
		d.AddString(fmt.Sprint(i))
		b, _ := d.MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var d Distinct
		if d.UnmarshalBinary(b) != nil {
			return
		}
		// What decodes encodes to the same bytes.
		again, _ := d.MarshalBinary()
		require.Equal(t, b, again)
	})
}

func FuzzQuantilesUnmarshal(f *testing.F) {
	var q Quantiles
	f.Add([]byte{0})
	for i := 0; i < 500; i++ {
		q.Add(float64(i * i))
		if i%100 == 0 {
			b, _ := q.MarshalBinary()
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var q Quantiles
		if q.UnmarshalBinary(b) != nil {
			return
		}
		// A decoded state can be merged and written again.
		var m Quantiles
		m.Merge(&q)
		m.Add(1)
		out, _ := m.MarshalBinary()
		require.LessOrEqual(t, len(out), MaxQuantilesStateBytes)
	})
}

// TestAddDoesNotAllocate: the speed layer adds every event's key; hashing a
// string must not copy it.
func TestAddDoesNotAllocate(t *testing.T) {
	var d Distinct
	for i := 0; i < 100; i++ {
		d.AddString(fmt.Sprint(i))
	}
	key := "some-user-id"
	require.Zero(t, testing.AllocsPerRun(100, func() { d.AddString(key) }))
	var q Quantiles
	q.Add(1)
	require.LessOrEqual(t, testing.AllocsPerRun(1000, func() { q.Add(2) }), 1.0, "amortized append only")
}

// Per-event cost of the states, for the speed layer's budget:
// go test ./internal/clickhouse/chstate -run XXX -bench . -benchtime 200000x
func BenchmarkDistinctAdd(b *testing.B) {
	keys := make([]string, 4096)
	for i := range keys {
		keys[i] = fmt.Sprint("user-", i)
	}
	var d Distinct
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		d.AddString(keys[i%len(keys)])
	}
}

func BenchmarkQuantilesAdd(b *testing.B) {
	var q Quantiles
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		q.Add(float64(i%10007) * 0.37)
	}
}

// TestQuantilesSelfMerge: merging a digest into itself doubles every weight,
// as merging an equal copy does.
func TestQuantilesSelfMerge(t *testing.T) {
	var a, b Quantiles
	for i := 0; i < 5000; i++ {
		a.Add(float64(i % 977))
		b.Add(float64(i % 977))
	}
	c := Quantiles{centroids: append([]centroid(nil), a.centroids...), count: a.count, unmerged: a.unmerged}
	a.Merge(&a)
	c.Merge(&b)
	x, _ := a.MarshalBinary()
	y, _ := c.MarshalBinary()
	require.Equal(t, y, x)
	require.Equal(t, float64(10000), a.Count())
}

// BenchmarkQuantilesAddRandom adds values in no order, so that every
// compression sorts (BenchmarkQuantilesAdd's values repeat in order).
func BenchmarkQuantilesAddRandom(b *testing.B) {
	rng := rand.New(rand.NewSource(1))
	vals := make([]float64, 1<<16)
	for i := range vals {
		vals[i] = rng.ExpFloat64() * 100
	}
	var q Quantiles
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		q.Add(vals[i&(len(vals)-1)])
	}
}

// TestRadixSortIsStableSort: radixSort orders as a stable comparison sort
// by radixKey, for keys sharing bytes and not, -0 and +0, and Inf, short
// inputs and long.
func TestRadixSortIsStableSort(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	for _, gen := range []func(i int) float32{
		func(i int) float32 { return float32(rng.NormFloat64() * 1e3) },
		func(i int) float32 { return float32(i % 7) },
		func(i int) float32 {
			return []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), 1, -1}[i%6]
		},
		func(i int) float32 { return 1000 + float32(i%300)/64 },
	} {
		// Both ways radixSort sorts: by insertion up to insertionMax, by
		// radix above.
		for _, n := range []int{2, 3, 17, insertionMax, insertionMax + 1, 300, 5000} {
			cs := make([]centroid, n)
			for i := range cs {
				cs[i] = centroid{mean: gen(i), count: float32(i)}
			}
			want := append([]centroid(nil), cs...)
			sort.SliceStable(want, func(i, j int) bool { return radixKey(want[i].mean) < radixKey(want[j].mean) })
			radixSort(cs)
			require.Equal(t, want, cs, "%d centroids", n)
		}
	}
}
