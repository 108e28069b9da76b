package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/DataDog/sketches-go/ddsketch"
	"github.com/DataDog/sketches-go/ddsketch/mapping"
	"github.com/DataDog/sketches-go/ddsketch/store"
	"github.com/axiomhq/hyperloglog"
	"github.com/stretchr/testify/require"
)

// Run a fuzzer with, for example:
//
//	go test ./schemas/ -run '^$' -fuzz '^FuzzDecode$' -fuzztime 60s
//
// New failures land in testdata/fuzz/<Fuzzer>/ and are kept there as
// regression cases; plain `go test` runs every file of that folder.

// watchdog crashes the test binary when one input takes longer than any
// legitimate one could, even on a loaded machine. The fuzzer then records
// the input as a failure: without it a hang shows only as a stall in the
// execs counter.
func watchdog(input any) (stop func() bool) {
	return time.AfterFunc(20*time.Second, func() {
		panic(fmt.Sprintf("input took over 20s: %q", input))
	}).Stop
}

// FuzzDecode: the decoder never panics, and every event it accepts satisfies
// the contract the layers rely on.
func FuzzDecode(f *testing.F) {
	seeds := []string{
		withFields(""),
		withFields(`"s":"a","i":-3,"f":2.5e-3,"b":true,"at":1000`),
		withFields(`"s":null,"i":null,"f":null,"b":null,"at":null,"x":{"y":[1,2,{"z":null}]}`),
		withFields(`"s":"a\u0000b"`),
		`{"id":"e1","ts":1795608000123,"kind":"k"}`,
		`{"id":"e1","ts":"2026-11-25T12:30:00.123456+02:30","kind":"k"}`,
		`{"id":"e1","ts":"2099-12-31T23:59:59.999Z","kind":"k"}`,
		withFields(`"deep":` + nested(MaxNesting-1)),
	}
	for _, tc := range rejectCases() {
		if len(tc.json) <= 4096 {
			seeds = append(seeds, tc.json)
		}
	}
	for i, s := range seeds {
		f.Add([]byte(s), t0.UnixMilli()+int64(i%3-1)*3_600_000)
	}
	f.Add([]byte(withFields("")), int64(0))

	cfg := allTypesConfig(f)
	s := cfg.Stream("ev")
	v := cfg.View("every")
	const skew = time.Hour
	f.Fuzz(func(t *testing.T, data []byte, ingestMs int64) {
		defer watchdog(data)()
		var ingest time.Time
		if ingestMs != 0 {
			ingest = time.UnixMilli(ingestMs)
		}
		dec := NewDecoder(s, skew)
		ev, err := dec.Decode(data, ingest)

		// Same bytes, same ingest time, another decoder: same verdict.
		ev2, err2 := NewDecoder(s, skew).Decode(bytes.Clone(data), ingest)
		require.Equal(t, ev, ev2)
		require.Equal(t, fmt.Sprint(err), fmt.Sprint(err2))

		if err != nil {
			var fe *FieldError
			require.ErrorAs(t, err, &fe)
			require.NotEmpty(t, fe.Detail)
			require.Contains(t, Reasons, fe.Reason)
			require.Equal(t, Event{}, ev)
			if fe.Field != "" {
				require.GreaterOrEqual(t, s.FieldIndex(fe.Field), 0, "error names an undeclared field: %v", err)
			}
			if strings.HasPrefix(fe.Detail, "event is not valid JSON") {
				require.False(t, json.Valid(data), "valid JSON refused as invalid: %v", err)
			}
			if errors.Is(err, ErrFutureEvent) {
				require.False(t, ingest.IsZero())
			}
			return
		}

		// Accepted: the bytes are one valid JSON object within the limits.
		require.LessOrEqual(t, len(data), MaxEventBytes)
		require.True(t, utf8.Valid(data))
		require.True(t, json.Valid(data))
		// Undeclared numbers may be anything JSON allows (1e400 too), so
		// read numbers as text.
		var obj map[string]any
		jd := json.NewDecoder(bytes.NewReader(data))
		jd.UseNumber()
		require.NoError(t, jd.Decode(&obj), "accepted event is not a JSON object")

		require.NotEmpty(t, ev.ID)
		requireEventTime(t, ev.Time)
		if !ingest.IsZero() {
			require.False(t, ev.Time.After(ingest.Add(skew)), "future event accepted")
		}
		require.Len(t, ev.Values, len(s.Fields))
		require.Equal(t, ev.ID, ev.Values[s.FieldIndex(s.IDField)].Str)
		require.Equal(t, ev.Time, ev.Values[s.FieldIndex(s.TimeField)].Time)
		for i, fd := range s.Fields {
			val := ev.Values[i]
			if fd.Required {
				require.True(t, val.Set, "required field %q unset", fd.Name)
			}
			if !val.Set {
				require.Equal(t, Value{}, val)
				continue
			}
			// The value has the declared type and nothing else, and agrees
			// with an independent reading of the JSON.
			raw := obj[fd.Name]
			switch fd.Type {
			case TypeString:
				require.Equal(t, Value{Set: true, Str: val.Str}, val)
				require.LessOrEqual(t, len(val.Str), MaxStringBytes)
				require.True(t, utf8.ValidString(val.Str))
				require.Equal(t, raw, val.Str)
			case TypeInt64:
				require.Equal(t, Value{Set: true, Int: val.Int, Float: float64(val.Int)}, val)
				num, ok := raw.(json.Number)
				require.True(t, ok)
				want, err := strconv.ParseInt(string(num), 10, 64)
				require.NoError(t, err)
				require.Equal(t, want, val.Int)
			case TypeFloat64:
				require.Equal(t, Value{Set: true, Float: val.Float}, val)
				require.False(t, math.IsInf(val.Float, 0) || math.IsNaN(val.Float))
				num, ok := raw.(json.Number)
				require.True(t, ok)
				want, err := strconv.ParseFloat(string(num), 64)
				require.NoError(t, err)
				require.Equal(t, want, val.Float)
			case TypeBool:
				require.Equal(t, Value{Set: true, Bool: val.Bool}, val)
				require.Equal(t, raw, val.Bool)
			case TypeTimestamp:
				require.Equal(t, Value{Set: true, Time: val.Time}, val)
				requireEventTime(t, val.Time)
			}
		}

		// Every layer can fold, store and read back the event.
		a := v.NewAggregate()
		v.Add(a, &ev)
		k := v.Key(&ev)
		dims, err := SplitDims(k.Dims)
		require.NoError(t, err)
		require.Len(t, dims, len(v.Dimensions))
		require.Equal(t, v.Granularity.WindowStart(ev.Time), k.Window())
		for i := range v.Measures {
			m := &v.Measures[i]
			st, err := m.StateFromCell(m.Cell(&a[i]))
			require.NoError(t, err, m.Name)
			m.Merge(&st, &a[i])
			_ = m.Result(&st)
		}
	})
}

func requireEventTime(t *testing.T, ts time.Time) {
	t.Helper()
	require.Equal(t, time.UTC, ts.Location())
	require.False(t, ts.Before(MinEventTime), ts)
	require.True(t, ts.Before(MaxEventTime), ts)
	require.Zero(t, ts.Nanosecond()%int(time.Millisecond), "time %v is not whole milliseconds", ts)
}

// FuzzParseConfig: schemas.Parse never panics on arbitrary bytes, and a
// configuration it accepts is wired up.
func FuzzParseConfig(f *testing.F) {
	example, err := os.ReadFile("../tandem.example.yaml")
	require.NoError(f, err)
	for _, s := range []string{string(example), allTypes, base, "", "{}", "[]", "chunk_size: [", "a: &x [*x]",
		"streams: [~]\nviews: [~]", "views: [{name: v, stream: nope}]", "chunk_size: ${X:-5}",
		"streams:\n  - name: s\n    fields: [{name: id, type: string}]\n    id_field: id\n    time_field: id\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer watchdog(data)()
		cfg, err := Parse("f.yaml", data, func(string) (string, bool) { return "", false })
		if err != nil {
			require.Nil(t, cfg)
			require.NotEmpty(t, err.Error())
			return
		}
		require.Positive(t, cfg.ChunkSize)
		for _, s := range cfg.Streams {
			require.NotNil(t, s)
			require.GreaterOrEqual(t, s.FieldIndex(s.IDField), 0)
			require.GreaterOrEqual(t, s.FieldIndex(s.TimeField), 0)
		}
		for _, v := range cfg.Views {
			require.NotNil(t, v.StreamDef())
			require.True(t, v.Granularity.IsViewGranularity())
			require.NotEmpty(t, v.Measures)
			// An accepted view can aggregate an event of its stream.
			s := v.StreamDef()
			ev := Event{ID: "x", Time: t0, Values: make([]Value, len(s.Fields))}
			a := v.NewAggregate()
			v.Add(a, &ev)
			_ = v.Key(&ev)
			_ = v.RowColumns()
		}
	})
}

// FuzzDecodeManifest: DecodeManifest never panics, and a manifest it accepts
// keeps the chunk contract and names only files of its own run.
func FuzzDecodeManifest(f *testing.F) {
	good, err := json.Marshal(validManifest())
	require.NoError(f, err)
	for _, s := range []string{string(good), `{"view":"v","run_id":"r","chunk_size":10}`,
		`{"view":"v","run_id":"r","chunk_size":10,"absorbed_offsets":{"0":15}}`,
		`{"view":"v","run_id":"..","chunk_size":10,"files":[{"key":"views/v/runs/../x"}]}`,
		`{"view":"v","run_id":"r","chunk_size":10,"files":[{"key":"views/v/runs/r/../../w/x"}]}`,
		`null`, `[]`, `{}`, `{"absorbed_offsets":{"-1":0}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		defer watchdog(data)()
		m, err := DecodeManifest(data)
		if err != nil {
			require.ErrorIs(t, err, ErrBadManifest)
			require.Nil(t, m)
			return
		}
		require.NotEmpty(t, m.View)
		require.NotEmpty(t, m.RunID)
		require.NotContains(t, m.RunID, "/")
		require.Positive(t, m.ChunkSize)
		for p, off := range m.Absorbed {
			require.GreaterOrEqual(t, p, int32(0))
			require.GreaterOrEqual(t, off, int64(0))
			require.Zero(t, off%m.ChunkSize)
			require.Equal(t, off/m.ChunkSize, m.AbsorbedChunks(p))
		}
		prefix := ViewRunPrefix(m.View, m.RunID)
		for _, file := range m.Files {
			require.True(t, strings.HasPrefix(file.Key, prefix))
			require.NotContains(t, "/"+file.Key+"/", "/../")
		}
	})
}

// sketchSeeds returns real stored sketches of several sizes and both HLL
// representations, plus sketches the library can write but tandem must
// refuse.
func sketchSeeds(tb testing.TB) (hll, dd [][]byte) {
	v := allTypesConfig(tb).View("every")
	ds, qs := &v.Measures[v.MeasureIndex("d_i")], &v.Measures[v.MeasureIndex("q_f")]
	for _, n := range []int{1, 10, 3000} {
		var a, b State
		for i := range n {
			ev := Event{Values: make([]Value, len(v.StreamDef().Fields))}
			ev.Values[v.StreamDef().FieldIndex("i")] = Value{Set: true, Int: int64(i * 7919), Float: float64(i * 7919)}
			ev.Values[v.StreamDef().FieldIndex("f")] = Value{Set: true, Float: float64(i) - float64(n)/3}
			ds.Add(&a, &ev)
			qs.Add(&b, &ev)
		}
		hll = append(hll, ds.Cell(&a).([]byte))
		dd = append(dd, qs.Cell(&b).([]byte))
	}
	dense := hyperloglog.NewNoSparse()
	dense.Insert([]byte("x"))
	b, err := dense.MarshalBinary()
	require.NoError(tb, err)
	hll = append(hll, b)
	p16 := hyperloglog.New16()
	p16.Insert([]byte("x"))
	b, err = p16.MarshalBinary()
	require.NoError(tb, err)
	hll = append(hll, b)

	other, err := ddsketch.LogCollapsingLowestDenseDDSketch(0.02, 100)
	require.NoError(tb, err)
	_ = other.Add(5)
	var ob []byte
	other.Encode(&ob, false)
	dd = append(dd, ob)
	cubic, err := mapping.NewCubicallyInterpolatedMapping(QuantileRelativeAccuracy)
	require.NoError(tb, err)
	cs := ddsketch.NewDDSketch(cubic, store.NewDenseStore(), store.NewDenseStore())
	_ = cs.Add(5)
	var cb []byte
	cs.Encode(&cb, false)
	dd = append(dd, cb)
	return hll, dd
}

// TestStateFromCellRefusesForeignSketches: sketches another configuration
// of the libraries wrote decode, but could not merge with ours, so
// StateFromCell refuses them.
func TestStateFromCellRefusesForeignSketches(t *testing.T) {
	v := allTypesConfig(t).View("every")
	hll, dd := sketchSeeds(t)
	d, q := &v.Measures[v.MeasureIndex("d_s")], &v.Measures[v.MeasureIndex("q_f")]
	for i, b := range hll {
		_, err := d.StateFromCell(b)
		if i < len(hll)-1 {
			require.NoError(t, err, "seed %d", i) // ours, and precision 14 dense
		} else {
			require.ErrorIs(t, err, ErrBadCell, "precision 16")
		}
	}
	for i, b := range dd {
		_, err := q.StateFromCell(b)
		if i < len(dd)-2 {
			require.NoError(t, err, "seed %d", i)
		} else {
			require.ErrorIs(t, err, ErrBadCell, "seed %d", i)
		}
	}

	// Our mapping, but bins no value can reach: decoding these into the
	// library's paged store would ask for terabytes (found by the fuzzer).
	for _, index := range []int{1 << 40, -(1 << 40), 1 << 20} {
		pos := store.NewSparseStore()
		pos.Add(0)
		pos.Add(index)
		hostile := ddsketch.NewDDSketch(newDD().IndexMapping, pos, store.NewSparseStore())
		var hb []byte
		hostile.Encode(&hb, false)
		_, err := q.StateFromCell(hb)
		require.ErrorIs(t, err, ErrBadCell)
		require.Contains(t, err.Error(), "outside what the mapping writes")
	}
}

// FuzzStateFromCell: hostile bytes in a sketch column give an error, never a
// panic, and a sketch that decodes can be merged, answered and stored again.
func FuzzStateFromCell(f *testing.F) {
	hll, dd := sketchSeeds(f)
	for _, b := range hll {
		f.Add(true, b)
		f.Add(true, b[:len(b)/2])
	}
	for _, b := range dd {
		f.Add(false, b)
		f.Add(false, b[:len(b)/2])
	}
	f.Add(true, []byte{})
	f.Add(false, []byte{0xff, 0xff, 0xff, 0xff})
	v := allTypesConfig(f).View("every")
	good := v.NewAggregate()
	for i, s := range []string{`"i":1,"f":1.5`, `"i":-2,"f":-2.5`, `"i":0,"f":0`} {
		ev, err := NewDecoder(v.StreamDef(), 0).Decode([]byte(strings.Replace(withFields(s), `"e1"`, fmt.Sprintf(`"e%d"`, i), 1)), time.Time{})
		require.NoError(f, err)
		v.Add(good, &ev)
	}
	f.Fuzz(func(t *testing.T, distinct bool, data []byte) {
		defer watchdog(data)()
		name := "q_f"
		if distinct {
			name = "d_i"
		}
		i := v.MeasureIndex(name)
		m := &v.Measures[i]
		st, err := m.StateFromCell(data)
		if err != nil {
			require.ErrorIs(t, err, ErrBadCell)
			return
		}
		_ = m.Result(&st)
		// Merge both ways with a real sketch, answer, store, read back.
		a := m.Cell(&good[i])
		g, err := m.StateFromCell(a)
		require.NoError(t, err)
		m.Merge(&g, &st)
		m.Merge(&st, &good[i])
		for _, x := range []*State{&g, &st} {
			_ = m.Result(x)
			back, err := m.StateFromCell(m.Cell(x))
			require.NoError(t, err)
			_ = m.Result(&back)
		}
	})
}

// FuzzSplitDims: SplitDims never panics and accepts only what JoinDims
// writes.
func FuzzSplitDims(f *testing.F) {
	for _, s := range []string{"", "0:", "2:US3:ios", "3:a:b0:", "01:a", "+1:a", "-0:", "9:abc"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		defer watchdog(s)()
		vals, err := SplitDims(s)
		if err != nil {
			return
		}
		require.Equal(t, s, JoinDims(vals))
	})
}
