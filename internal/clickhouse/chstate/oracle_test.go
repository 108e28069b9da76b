package chstate

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// engine is a ClickHouse server the oracle tests compare against: the real
// 18.16 over HTTP (oracle_server_test.go) or the current engine in-process
// (oracle_chdb_test.go). Both return a query's result in RowBinary, where an
// AggregateFunction value is the state's bytes with no length prefix.
type engine interface {
	Exec(t *testing.T, sql string)
	// Insert appends rows, given in RowBinary for the columns of structure
	// ("name Type, …"), to table.
	Insert(t *testing.T, table, structure string, rowBinary []byte)
	Query(t *testing.T, sql string) []byte
}

// valueSet is one oracle case: the keys a distinct measure hashes and the
// numbers a quantiles measure adds, in event order.
type valueSet struct {
	name   string
	keys   []string
	floats []float64
}

// distinctKey is the text tandem's distinct measure hashes for a number
// field (schemas.appendDistinctKey): strconv of the int or the float, and ""
// for zero.
func intKey(v int64) string {
	if v == 0 {
		return ""
	}
	return strconv.FormatInt(v, 10)
}

func floatKey(v float64) string {
	if v == 0 {
		return ""
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func oracleSets() []valueSet {
	rng := rand.New(rand.NewSource(15))
	strs := func(n, distinct int, prefix string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s%d", prefix, rng.Intn(distinct))
		}
		return out
	}
	seq := func(n int, prefix string) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = fmt.Sprintf("%s%d", prefix, i)
		}
		return out
	}
	floats := func(n int, gen func() float64) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = gen()
		}
		return out
	}
	ints := make([]int64, 5000)
	intKeys := make([]string, len(ints))
	for i := range ints {
		ints[i] = rng.Int63n(4000) - 2000
		intKeys[i] = intKey(ints[i])
	}
	fl := floats(3000, func() float64 { return rng.NormFloat64() * 1e3 })
	flKeys := make([]string, len(fl))
	for i, f := range fl {
		flKeys[i] = floatKey(f)
	}
	// Every key length up to 300 bytes, so each of CityHash's length
	// branches (0–16, 17–32, 33–64, longer) is compared; arbitrary bytes.
	anyLen := make([]string, 301)
	for i := range anyLen {
		b := make([]byte, i)
		rng.Read(b)
		anyLen[i] = string(b)
	}
	// 16 keys of 17 to 92 bytes stay a small set: their hashes are
	// compared one by one.
	mid := make([]string, 16)
	for i := range mid {
		mid[i] = strings.Repeat("k", 17+5*i)
	}
	lat := floats(100000, func() float64 { return math.Exp(rng.NormFloat64()*1.5 + 4) })
	return []valueSet{
		{name: "empty"},
		{name: "one", keys: []string{"alice"}, floats: []float64{42.5}},
		{name: "one-empty-key", keys: []string{""}, floats: []float64{0}},
		{name: "16-distinct", keys: seq(16, "u"), floats: floats(16, rng.Float64)},
		{name: "17-distinct", keys: seq(17, "u"), floats: floats(17, rng.Float64)},
		{name: "16-distinct-repeated", keys: strs(200, 16, "v"), floats: floats(200, func() float64 { return float64(rng.Intn(16)) })},
		{name: "199-values", keys: seq(199, "w"), floats: floats(199, rng.NormFloat64)},
		{name: "ints", keys: intKeys, floats: func() []float64 {
			out := make([]float64, len(ints))
			for i, v := range ints {
				out[i] = float64(v)
			}
			return out
		}()},
		{name: "floats", keys: flKeys, floats: fl},
		{name: "specials", keys: []string{"", "a", "\x00", "ünïcode", strings.Repeat("x", 100)},
			floats: []float64{math.Inf(1), math.Inf(-1), -0.0, 0, 1e39, -1e39, math.SmallestNonzeroFloat64, 1, 1, 1}},
		{name: "key-lengths-0-300", keys: anyLen, floats: floats(301, func() float64 { return rng.ExpFloat64() * 100 })},
		{name: "16-keys-17-to-92-bytes", keys: mid},
		{name: "1e5", keys: strs(100000, 60000, "user-"), floats: lat},
	}
}

// rowBinaryValues encodes the rows (i UInt32, s String, f Float64) of set;
// the shorter of keys and floats is padded with NULL-free zero values that
// each query filters out by i.
func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func loadValues(t *testing.T, e engine, set valueSet) {
	e.Exec(t, "DROP TABLE IF EXISTS keys")
	e.Exec(t, "DROP TABLE IF EXISTS nums")
	e.Exec(t, "CREATE TABLE keys (i UInt32, s String) ENGINE = Memory")
	e.Exec(t, "CREATE TABLE nums (i UInt32, f Float64) ENGINE = Memory")
	var b []byte
	for i, k := range set.keys {
		b = binary.LittleEndian.AppendUint32(b, uint32(i))
		b = appendString(b, k)
	}
	if len(b) > 0 {
		e.Insert(t, "keys", "i UInt32, s String", b)
	}
	b = b[:0]
	for i, f := range set.floats {
		b = binary.LittleEndian.AppendUint32(b, uint32(i))
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
	}
	if len(b) > 0 {
		e.Insert(t, "nums", "i UInt32, f Float64", b)
	}
}

// loadStates stores states as rows (k UInt32, s <typ>) of table.
func loadStates(t *testing.T, e engine, table, typ string, states [][]byte) {
	e.Exec(t, "DROP TABLE IF EXISTS "+table)
	e.Exec(t, fmt.Sprintf("CREATE TABLE %s (k UInt32, s %s) ENGINE = Memory", table, typ))
	var b []byte
	for k, st := range states {
		b = binary.LittleEndian.AppendUint32(b, uint32(k))
		b = append(b, st...)
	}
	e.Insert(t, table, "k UInt32, s "+typ, b)
}

// readFloats decodes a RowBinary Array(Float64).
func readFloats(t *testing.T, b []byte) []float64 {
	n, k := binary.Uvarint(b)
	require.Positive(t, k)
	b = b[k:]
	require.Len(t, b, int(8*n))
	out := make([]float64, n)
	for i := range out {
		out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out
}

func readUint64(t *testing.T, b []byte) uint64 {
	require.Len(t, b, 8)
	return binary.LittleEndian.Uint64(b)
}

// split cuts n items into parts of pseudo-random sizes.
func split(n, parts int) [][2]int {
	var out [][2]int
	start := 0
	for p := 0; p < parts; p++ {
		end := n * (p + 1) / parts
		if p%2 == 0 && end > start+1 {
			end-- // uneven parts
		}
		if p == parts-1 {
			end = n
		}
		out = append(out, [2]int{start, end})
		start = end
	}
	return out
}

const levels = "0.5, 0.9, 0.99"

// runOracle checks Go's states against e's own. current says e is the
// current engine, whose TDigest compression Go follows exactly; on 18.16 the
// TDigest bytes are compared only where no centroids are glued (fewer than
// 200 values) and otherwise the finalized quantiles are checked against the
// exact ranks.
func runOracle(t *testing.T, e engine, current bool) {
	for _, set := range oracleSets() {
		t.Run(set.name, func(t *testing.T) {
			loadValues(t, e, set)

			// Distinct: the same bytes as uniqHLL12State over the keys.
			var d Distinct
			for _, k := range set.keys {
				d.AddString(k)
			}
			goD, _ := d.MarshalBinary()
			chD := e.Query(t, "SELECT uniqHLL12State(s) FROM (SELECT s FROM keys ORDER BY i) FORMAT RowBinary")
			require.Equal(t, chD, goD, "uniqHLL12 state of %d keys", len(set.keys))
			var back Distinct
			require.NoError(t, back.UnmarshalBinary(goD))
			again, _ := back.MarshalBinary()
			require.Equal(t, goD, again, "decode and encode again")

			// Several Go states, merged by ClickHouse, answer as ClickHouse
			// does over the union; Go's own merge has ClickHouse's bytes.
			parts := split(len(set.keys), 5)
			var states [][]byte
			var merged Distinct
			for _, p := range parts {
				var pd Distinct
				for _, k := range set.keys[p[0]:p[1]] {
					pd.AddString(k)
				}
				b, _ := pd.MarshalBinary()
				states = append(states, b)
				merged.Merge(&pd)
			}
			loadStates(t, e, "dstates", UniqHLL12Type, states)
			want := readUint64(t, e.Query(t, "SELECT uniqHLL12(s) FROM keys FORMAT RowBinary"))
			got := readUint64(t, e.Query(t, "SELECT uniqHLL12Merge(s) FROM dstates FORMAT RowBinary"))
			require.Equal(t, want, got, "uniqHLL12Merge of Go states vs uniqHLL12 of the keys")
			exact := map[string]bool{}
			for _, k := range set.keys {
				exact[k] = true
			}
			n := float64(len(exact))
			if len(exact) <= smallSetSize {
				require.Equal(t, uint64(len(exact)), got, "up to 16 distinct keys the answer is exact")
			}
			require.LessOrEqual(t, math.Abs(float64(got)-n), math.Max(DistinctSQLRelativeError*n, 1), "uniqHLL12Merge %d of %d distinct keys", got, len(exact))
			t.Logf("distinct: %d keys, %d distinct, uniqHLL12Merge %d (%+.2f%%), state %d bytes", len(set.keys), len(exact), got, 100*(float64(got)-n)/math.Max(n, 1), len(goD))
			fin := e.Query(t, "SELECT finalizeAggregation(s) FROM dstates ORDER BY k FORMAT RowBinary")
			require.Len(t, fin, 8*len(parts))
			// Go's estimate has ClickHouse's digits, per part and merged.
			for i, st := range states {
				var pd Distinct
				require.NoError(t, pd.UnmarshalBinary(st))
				require.Equal(t, binary.LittleEndian.Uint64(fin[8*i:]), pd.Estimate(), "part %d", i)
			}
			require.Equal(t, got, merged.Estimate(), "merged")
			require.Equal(t, want, d.Estimate(), "whole")
			mergedBytes, _ := merged.MarshalBinary()
			chMerged := e.Query(t, "SELECT uniqHLL12MergeState(s) FROM (SELECT s FROM dstates ORDER BY k) FORMAT RowBinary")
			require.Equal(t, chMerged, mergedBytes, "Go's merge vs uniqHLL12MergeState")

			// The keys rebuild each state on the server (arrayReduce over
			// UInt64, which is how the SQL view reads stored states), byte
			// for byte: the whole, a part and the merge.
			for name, st := range map[string]*Distinct{"whole": &d, "merged": &merged} {
				want, _ := st.MarshalBinary()
				keys := st.AppendKeys(nil)
				e.Exec(t, "DROP TABLE IF EXISTS dkeys")
				e.Exec(t, "CREATE TABLE dkeys (a Array(UInt64)) ENGINE = Memory")
				e.Insert(t, "dkeys", "a Array(UInt64)", appendUint64s(nil, keys))
				require.Equal(t, want, e.Query(t, "SELECT arrayReduce('uniqHLL12State', a) FROM dkeys FORMAT RowBinary"), "%s: state rebuilt from %d keys", name, len(keys))
			}

			// Quantiles.
			var q Quantiles
			for _, f := range set.floats {
				q.Add(f)
			}
			goQ, _ := q.MarshalBinary()
			chQ := e.Query(t, "SELECT quantilesTDigestState("+levels+")(f) FROM (SELECT f FROM nums ORDER BY i) FORMAT RowBinary")
			var qBack Quantiles
			require.NoError(t, qBack.UnmarshalBinary(goQ))
			// The decoder accepts ClickHouse's own state too (on 18.16 it
			// may differ from Go's) and writes it back unchanged.
			require.NoError(t, qBack.UnmarshalBinary(chQ), "ClickHouse's own TDigest state")
			again, _ = qBack.MarshalBinary()
			require.Equal(t, chQ, again)
			if current || len(set.floats) < 200 {
				require.Equal(t, chQ, goQ, "quantilesTDigest state of %d values", len(set.floats))
			}
			qparts := split(len(set.floats), 5)
			var qstates [][]byte
			var qmerged Quantiles
			for _, p := range qparts {
				var pq Quantiles
				for _, f := range set.floats[p[0]:p[1]] {
					pq.Add(f)
				}
				b, _ := pq.MarshalBinary()
				qstates = append(qstates, b)
				qmerged.Merge(&pq)
			}
			loadStates(t, e, "qstates", QuantilesTDigestType, qstates)
			if current {
				mb, _ := qmerged.MarshalBinary()
				chMB := e.Query(t, "SELECT quantilesTDigestMergeState("+levels+")(s) FROM (SELECT s FROM qstates ORDER BY k) FORMAT RowBinary")
				require.Equal(t, chMB, mb, "Go's merge vs quantilesTDigestMergeState")
			}
			single := readFloats(t, e.Query(t, "SELECT CAST(quantilesTDigestMerge("+levels+")(s) AS Array(Float64)) FROM (SELECT s FROM qstates ORDER BY k) FORMAT RowBinary"))
			// The parts' centroids, rebuilt into weighted states on the
			// server and merged (what the SQL view does with stored
			// centroids), answer as Go's rebuild of the same centroids.
			var rebuilt Quantiles
			var rows []byte
			for i, st := range qstates {
				var pq Quantiles
				require.NoError(t, pq.UnmarshalBinary(st))
				means, counts := pq.AppendCentroids(nil, nil)
				var r Quantiles
				r.AddCentroids(means, counts)
				rebuilt.Merge(&r)
				rows = binary.LittleEndian.AppendUint32(rows, uint32(i))
				rows = binary.AppendUvarint(rows, uint64(len(means)))
				for _, m := range means {
					rows = binary.LittleEndian.AppendUint32(rows, math.Float32bits(m))
				}
				rows = appendUint64s(rows, counts)
			}
			e.Exec(t, "DROP TABLE IF EXISTS qcentroids")
			e.Exec(t, "CREATE TABLE qcentroids (k UInt32, m Array(Float32), c Array(UInt64)) ENGINE = Memory")
			e.Insert(t, "qcentroids", "k UInt32, m Array(Float32), c Array(UInt64)", rows)
			fromCentroids := readFloats(t, e.Query(t, "SELECT CAST(quantilesTDigestWeightedMerge("+levels+")(s) AS Array(Float64)) FROM (SELECT arrayReduce('quantilesTDigestWeightedState("+levels+")', m, c) AS s FROM qcentroids ORDER BY k) FORMAT RowBinary"))
			if current {
				sameBits(t, fromCentroids, rebuilt.Quantiles(0.5, 0.9, 0.99), "Go's quantiles of the rebuilt centroids")
			}
			if len(set.floats) > 0 && !beyondFloat32(set.floats) {
				checkRanks(t, set.floats, fromCentroids, "quantilesTDigestWeightedMerge of stored centroids")
			}
			own := readFloats(t, e.Query(t, "SELECT CAST(quantilesTDigest("+levels+")(f) AS Array(Float64)) FROM (SELECT f FROM nums ORDER BY i) FORMAT RowBinary"))
			if current {
				// Go finalizes as the current engine does, digit for digit:
				// the merged parts and the whole.
				sameBits(t, single, qmerged.Quantiles(0.5, 0.9, 0.99), "Go's quantiles of the merged parts")
				r := q.Quantiles(0.99, 0.5, 0.9) // levels in any order
				sameBits(t, own, []float64{r[1], r[2], r[0]}, "Go's quantiles of the whole")
			}
			if len(set.floats) == 0 {
				return
			}
			if beyondFloat32(set.floats) {
				// ±Inf centroids make the interpolation NaN on 18.16; there
				// is no rank to check, only that Go's states answer as
				// ClickHouse's own do.
				for i := range own {
					require.Equal(t, math.Float64bits(own[i]), math.Float64bits(single[i]), "level %d: Go states %g, ClickHouse %g", i, single[i], own[i])
				}
				return
			}
			t.Logf("quantiles: %d values, state %d bytes, merged Go states %v, ClickHouse's own %v", len(set.floats), len(goQ), single, own)
			checkRanks(t, set.floats, single, "quantilesTDigestMerge of Go states")
			checkRanks(t, set.floats, own, "ClickHouse's own quantilesTDigest")
		})
	}
}

// quantileRankError is the stated bound of a SQL quantiles answer: the
// fraction of values at or below the answer is within this of the level
// (or the answer lies between the values at those ranks). ε = 0.01 is
// ClickHouse's TDigest accuracy at the median, where centroids are widest.
const quantileRankError = 0.01

// checkRanks checks each answer against the exact distribution: some value
// within quantileRankError of the level's rank is at most the answer, and
// some is at least it.
func checkRanks(t *testing.T, vals []float64, got []float64, what string) {
	t.Helper()
	sorted := make([]float64, 0, len(vals))
	for _, v := range vals {
		sorted = append(sorted, float64(float32(v))) // ClickHouse keeps Float32
	}
	sort.Float64s(sorted)
	n := len(sorted)
	for i, lv := range []float64{0.5, 0.9, 0.99} {
		lo := int(math.Floor((lv - quantileRankError) * float64(n-1)))
		hi := int(math.Ceil((lv + quantileRankError) * float64(n-1)))
		lo, hi = max(lo, 0), min(hi, n-1)
		a := got[i]
		ok := sorted[lo] <= a && a <= sorted[hi] || math.IsInf(a, 0) && (a == sorted[lo] || a == sorted[hi])
		require.True(t, ok, "%s: p%g = %g outside [%g, %g] (ranks %d..%d of %d)", what, lv*100, a, sorted[lo], sorted[hi], lo, hi, n)
	}
}

func sameBits(t *testing.T, want, got []float64, what string) {
	t.Helper()
	require.Len(t, got, len(want), what)
	for i := range want {
		require.Equal(t, math.Float64bits(want[i]), math.Float64bits(got[i]), "%s: level %d: want %g, got %g", what, i, want[i], got[i])
	}
}

// beyondFloat32 reports whether a value becomes ±Inf as a Float32 centroid.
func beyondFloat32(vals []float64) bool {
	for _, v := range vals {
		if math.IsInf(float64(float32(v)), 0) {
			return true
		}
	}
	return false
}

// appendUint64s appends a RowBinary Array(UInt64).
func appendUint64s(b []byte, vs []uint64) []byte {
	b = binary.AppendUvarint(b, uint64(len(vs)))
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}
